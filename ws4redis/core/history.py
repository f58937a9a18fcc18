"""Positions in a channel's history, without I/O (see ``docs/reference.md#history``).

Redis pub/sub forgets: a browser that reconnects misses what was published meanwhile. A
facility with history (``WS4REDIS_HISTORY``) keeps its recent messages per channel, each
with an *offset* (1, 2, 3… in its channel) and the channel's *epoch* (a name that changes
when the history is lost: flushed, expired, evicted). Its messages travel through pub/sub in
an envelope that carries that position; the relay takes it off again, so clients that do
not ask for positions see plain payloads as always.

Here: which facilities keep history, the envelope, and whether a client's last position can
be continued from what Redis still holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ws4redis.core.presence import tracked

ENVELOPE = b"\x00ws4redis\x01"
"""Start of every message ws4redis publishes on a facility with history or presence:
``ENVELOPE origin epoch ':' offset ':' data`` (epoch and offset empty without a position).
A NUL byte opens it, which no text payload and no JSON begins with; but a client may send
anything, so the envelope is only ever read where ws4redis wraps *every* message (see
:func:`enveloped_facility`): there a client's bytes are always inside an envelope, as data."""

SERVER = b"s"
"""Origin of a message Django published (``RedisPublisher``)."""
CLIENT = b"c"
"""Origin of a message a websocket client sent."""
PRESENCE = b"p"
"""Origin of a presence announcement (made by a websocket process, never by a client)."""
ORIGINS = frozenset((SERVER, CLIENT, PRESENCE))

_EPOCH_BYTES = frozenset(b"0123456789abcdef")
_MAX_OFFSET_DIGITS = 18


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How much history a facility keeps: the last ``size`` messages, for ``ttl`` seconds
    after the last publish."""

    size: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message sits in its channel: ``offset`` within ``epoch``."""

    epoch: str
    offset: int


def options(configured: Mapping[str, Mapping[str, int]], facility: str) -> HistoryOptions | None:
    """The history a facility keeps (its own entry in ``configured``, the value of
    ``WS4REDIS_HISTORY``, else ``"*"``'s), or None without history."""
    entry = configured.get(facility, configured.get("*"))
    return None if entry is None else HistoryOptions(entry["size"], entry["ttl"])


def enveloped_facility(
    facility: str,
    history: Mapping[str, Mapping[str, int]],
    presence: Mapping[str, Mapping[str, bool]],
) -> bool:
    """Whether ws4redis wraps every message of ``facility`` in the envelope: where it keeps
    history (positions) or presence (announcements travel with the other messages), so
    that what a client sent can be told from what the server made. ``history`` and
    ``presence`` are the values of ``WS4REDIS_HISTORY`` and ``WS4REDIS_PRESENCE``."""
    return options(history, facility) is not None or tracked(presence, facility) is not None


def envelope(origin: bytes, position: Position | None, data: bytes) -> bytes:
    """``data`` as pub/sub carries it on a facility with history or presence: who made it
    and, with history, its position (what :func:`open_envelope` reads back)."""
    if position is None:
        return b"%s%s::%s" % (ENVELOPE, origin, data)
    return b"%s%s%s:%d:%s" % (ENVELOPE, origin, position.epoch.encode(), position.offset, data)


class Opened:
    """A message out of its envelope: who made it, its position (None without history)
    and the payload. ``encoded`` is the payload as one transport sends it (``encoder``),
    built by the relay when the first client needs it and then shared by all of them."""

    __slots__ = ("data", "encoded", "encoder", "origin", "other", "position")

    def __init__(self, origin: bytes, position: Position | None, data: bytes) -> None:
        self.origin = origin
        self.position = position
        self.data = data
        self.encoder: Callable[[bytes], bytes] | None = None
        self.encoded = b""
        self.other: tuple[Callable[[bytes], bytes], bytes] | None = None


def open_envelope(raw: bytes) -> Opened | None:
    """Read a message that arrived on a facility whose messages are enveloped; never
    raises. A message without the envelope was published by something with access to Redis
    but not through ws4redis (``redis-cli``, another program): it counts as the server's,
    without a position. A damaged envelope gives None: the message cannot be read."""
    if not raw.startswith(ENVELOPE):
        return Opened(SERVER, None, raw)
    start = len(ENVELOPE)
    origin = raw[start : start + 1]
    first = raw.find(b":", start + 1)
    second = raw.find(b":", first + 1) if first >= 0 else -1
    if origin not in ORIGINS or second < 0:
        return None
    epoch, offset = raw[start + 1 : first], raw[first + 1 : second]
    data = raw[second + 1 :]
    if not epoch and not offset:
        return Opened(origin, None, data)
    if (
        not epoch
        or len(epoch) > 16
        or not _EPOCH_BYTES.issuperset(epoch)
        or not offset.isdigit()
        or len(offset) > _MAX_OFFSET_DIGITS
    ):
        return None
    return Opened(origin, Position(epoch.decode(), int(offset)), data)


@dataclass(frozen=True, slots=True)
class Window:
    """What Redis holds of one channel's history: its epoch, the first and last offsets kept
    (``first > last`` when nothing is kept) and the messages after a requested offset."""

    epoch: str
    first: int
    last: int
    messages: list[tuple[int, bytes]]
    clients: frozenset[int] = frozenset()
    """The offsets among ``messages`` that clients sent (the others are the server's)."""

    def continues(self, since: Position) -> bool:
        """Whether a client whose last message was ``since`` can be given exactly what it
        missed: the same epoch, and nothing between its offset and the first one kept."""
        if since.epoch == "" and since.offset == 0:  # it saw the channel before any history
            return self.first <= 1
        if since.epoch != self.epoch or since.offset > self.last:
            return False
        return since.offset >= self.first - 1


# -- positions on the wire (opt-in: the ``recover`` query key) ------------------------------
#
# A client that asks for positions receives every message as a JSON text frame
# ``{"channel": label, "data": text}`` (``"bytes"``: base64, for a payload that is not
# UTF-8), with ``"epoch"`` and ``"offset"`` when the message has a position and
# ``"from": "client"`` when a client sent it (on facilities with history or presence, where
# the envelope says so; a client cannot write that field: its bytes are ``data``). It resumes with
# ``since=label:epoch:offset,...`` and is told ``"recovered": false`` (with the current
# position) for a channel whose missed messages are no longer all kept.


def label(channel: str, facility: str, prefix: str) -> str:
    """The name a client knows a channel by: ``broadcast``, ``user``, ``session`` (a client
    only ever hears its own; the session key stays out of scripts) or ``group:<name>``."""
    kind_and_name = channel[len(prefix) : -len(facility) - 1]
    kind = kind_and_name.split(":", 1)[0]
    return kind_and_name if kind == "group" else kind


MAX_OFFSET = 10**13
"""The largest offset a client may name: ten trillion messages on one channel is beyond any
history, and Redis's Lua prints numbers from 10**14 on as ``1e+14``, which no stream id
reads back."""
MAX_EPOCH = 32
"""The longest epoch a client may name; epochs are short names of letters and digits."""


def parse_since(value: str) -> dict[str, Position]:
    """``label:epoch:offset`` items, comma-separated; ValueError names what is wrong.

    What an anonymous client writes here reaches a script in Redis: an offset that is not a
    plain decimal up to :data:`MAX_OFFSET`, or an epoch that is not a short name of ASCII
    letters and digits, is refused here (400) rather than failing in Redis (a 503 that says
    Redis is down when it is not)."""
    positions = {}
    for item in filter(None, value.split(",")):
        parts = item.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not (parts[2].isascii() and parts[2].isdigit()):
            raise ValueError(f"since: bad position {item!r}, expected channel:epoch:offset")
        label_, epoch, offset = parts
        if len(offset) > len(str(MAX_OFFSET)) or int(offset) > MAX_OFFSET:
            raise ValueError(f"since: offset {offset} of {label_!r} is over {MAX_OFFSET}")
        if len(epoch) > MAX_EPOCH or not (epoch.isascii() and (epoch.isalnum() or not epoch)):
            raise ValueError(
                f"since: epoch {epoch[: MAX_EPOCH + 1]!r} of {label_!r} is not an epoch "
                f"(at most {MAX_EPOCH} ASCII letters and digits)"
            )
        positions[label_] = Position(epoch, int(offset))
    return positions


def wire(
    name: str,
    data: bytes,
    position: Position | None = None,
    origin: bytes = SERVER,
    **extra: object,
) -> bytes:
    """The JSON text frame payload of one message for a client that asked for positions."""
    message: dict[str, object] = {"channel": name}
    if position is not None:
        message["epoch"], message["offset"] = position.epoch, position.offset
    if origin == CLIENT:
        message["from"] = "client"
    try:
        message["data"] = data.decode()
    except UnicodeDecodeError:
        message["bytes"] = base64.b64encode(data).decode()
    message.update(extra)
    return json.dumps(message, separators=(",", ":")).encode()


def first_messages(
    name: str, since: Position | None, window: Window
) -> tuple[list[bytes], Position]:
    """What a client that asked for positions gets first on a channel with history, and the
    position its live messages continue from.

    With ``since`` it can continue: exactly the messages after it. Without ``since``: the
    last message kept (the original's persisted message, with its position). Otherwise it
    is told it could not recover, with the current position, so the application can reload.
    """
    current = Position(window.epoch, window.last)

    def wired(offset: int, data: bytes) -> bytes:
        origin = CLIENT if offset in window.clients else SERVER
        return wire(name, data, Position(window.epoch, offset), origin)

    if since is not None and window.continues(since):
        return [wired(n, data) for n, data in window.messages], current
    if since is None and window.messages:
        return [wired(*window.messages[-1])], current
    return [marker(name, current, recovered=since is None)], current


def marker(name: str, position: Position, *, recovered: bool = False) -> bytes:
    """A position without a message: where a channel stands, and with ``recovered`` false
    that what came before it is no longer all there, so the application should reload."""
    message: dict[str, object] = {"channel": name, "epoch": position.epoch}
    message["offset"] = position.offset
    if not recovered:
        message["recovered"] = False
    return json.dumps(message, separators=(",", ":")).encode()
