"""History in Redis: publish with a position in one round trip, read what a client missed.

Each channel of a facility with history has a stream of its recent messages (entry ids
``0-<offset>``) and a hash with its epoch and last offset. Publishing runs one script:
append, trim, expire, and publish the message in its envelope (who made it, and its
position), so the offset a subscriber sees is always the one stored, and concurrent
publishers never share an offset. A client's entry is marked as such, and keeps the history
alive no longer than client messages are stored. The rules
(which facilities, the envelope, when a position continues) are in
:mod:`ws4redis.core.history`.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

from ws4redis.core.history import CLIENT, ENVELOPE, SERVER, HistoryOptions, Window
from ws4redis.core.names import history_keys
from ws4redis.core.shards import key_slot
from ws4redis.settings import key_prefix

_PUBLISH = """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
    epoch = ARGV[5]
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local client_ttl = tonumber(ARGV[8])
if client_ttl == 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'd', ARGV[2])
    redis.call('EXPIRE', KEYS[1], ARGV[4])
    redis.call('EXPIRE', KEYS[2], ARGV[4])
else
    -- a client's message: marked, and it keeps the history alive for client_ttl at most
    redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '0-' .. offset, 'd', ARGV[2], 'o', 'c')
    for i = 1, 2 do
        if redis.call('TTL', KEYS[i]) < client_ttl then
            redis.call('EXPIRE', KEYS[i], client_ttl)
        end
    end
end
local envelope = ARGV[6] .. epoch .. ':' .. offset .. ':' .. ARGV[2]
return {redis.call(ARGV[7], ARGV[1], envelope), offset, epoch}
"""

_READ = """
local meta = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
if not meta[1] then
    return {false, 0, 1, {}}
end
local last = tonumber(meta[2])
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = last + 1
if oldest[1] then
    first = tonumber(string.match(oldest[1][1], '-(%d+)$'))
end
local start = math.max(tonumber(ARGV[1]) + 1, first)
if tonumber(ARGV[1]) < 0 then
    start = last
end
return {meta[1], last, first, redis.call('XRANGE', KEYS[1], '0-' .. start, '+')}
"""


def publish_command(
    channel: str,
    data: bytes,
    options: HistoryOptions,
    *,
    cluster: bool,
    origin: bytes = SERVER,
    client_ttl: int = 0,
) -> tuple[Any, ...]:
    """The command that appends ``data`` to the channel's history and publishes it with its
    position (its reply: receivers, offset, epoch). ``client_ttl`` (seconds, for a client's
    message) bounds how long it keeps the history alive.

    ``EVAL`` with the script's text, not ``EVALSHA``: a pipeline then needs no extra round
    trip to make sure the server knows the script (Redis caches it by its digest anyway).
    """
    keys = history_keys(key_prefix(), channel)
    if cluster and key_slot(keys[0].encode()) != key_slot(channel.encode()):
        raise ValueError(
            f"history of {channel!r}: a name with '}}' and no hash tag cannot share its hash "
            "slot under Redis Cluster; leave '}' out of facility and group names"
        )
    verb = "SPUBLISH" if cluster else "PUBLISH"
    args = [
        *(channel, data, options.size, options.ttl, secrets.token_hex(4)),
        *(ENVELOPE + origin, verb, client_ttl),
    ]
    return ("EVAL", _PUBLISH, 2, *keys, *args)


def read(client: redis.Redis, channel: str, since: int = 0) -> Window:
    """The channel's history after offset ``since`` (all of it with 0, the last message only
    with -1), in one atomic read."""
    epoch, last, first, entries = client.eval(_READ, 2, *history_keys(key_prefix(), channel), since)
    messages, clients = [], set()
    for entry_id, fields in entries:
        offset = int(entry_id.split(b"-")[1])
        messages.append((offset, fields[1]))
        if fields[2:] == [b"o", CLIENT]:
            clients.add(offset)
    epoch_name = epoch.decode() if epoch else ""
    return Window(epoch_name, int(first), int(last), messages, frozenset(clients))
