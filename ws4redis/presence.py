"""Who is connected, kept in Redis; and the ``websocket_opened``/``websocket_closed`` signals.

Every runtime tells the process's :class:`Tracker` when a websocket opens and closes; that
costs no I/O on the websocket's path. One worker thread per process then sends the signals
(in order, where a receiver may query the database) and writes the presence of facilities
named in ``WS4REDIS_PRESENCE``: a sorted set of connection ids scored by their expiry, and
a hash of what each id is (user, session). The worker refreshes its entries every third of
``WS4REDIS_PRESENCE_TTL``; the entries of a process that died expire after at most that
long. Expiry uses Redis's clock, so hosts need not agree on the time. The rules are in
:mod:`ws4redis.core.presence`.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import redis
from django.http import HttpRequest

from ws4redis import settings
from ws4redis.bus.pool import REDIS_FAILED, get_redis
from ws4redis.bus.process import per_process, process_name
from ws4redis.core.history import PRESENCE
from ws4redis.core.names import presence_keys
from ws4redis.core.presence import Announcer, Book, Changes, Visitor, entry, tracked
from ws4redis.redis_store import is_authenticated, known_session_key
from ws4redis.settings import key_prefix
from ws4redis.signals import websocket_closed, websocket_opened

__all__ = ["Presence", "present"]

logger = logging.getLogger("ws4redis")

ROUND = 1.0
"""Seconds the worker waits at most between two rounds of writing."""

_WRITE = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local added = tonumber(ARGV[2])
for i = 0, added - 1 do
    redis.call('ZADD', KEYS[1], expiry, ARGV[3 + 2 * i])
    redis.call('HSET', KEYS[2], ARGV[3 + 2 * i], ARGV[4 + 2 * i])
end
for i = 3 + 2 * added, #ARGV do
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[2], 2 * tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
"""

_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
end
local present = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    present[#present + 1] = redis.call('HGET', KEYS[2], id) or '{}'
end
return present
"""


@dataclass(frozen=True)
class Presence:
    """Who is on a facility: user names, session keys, and open websockets (anonymous ones
    and several tabs of one user included)."""

    users: set[str]
    sessions: set[str]
    connections: int


def present(facility: str, connection: redis.Redis | None = None) -> Presence:
    """Who is connected on ``facility`` now, across every websocket process; expired
    entries (of processes that died) are removed on the way."""
    client = connection if connection is not None else get_redis()
    entries = [
        json.loads(raw) for raw in client.eval(_READ, 2, *presence_keys(key_prefix(), facility))
    ]
    return Presence(
        users={e["user"] for e in entries if e.get("user")},
        sessions={e["session"] for e in entries if e.get("session")},
        connections=len(entries),
    )


class Tracker:
    """The process's open websockets, told to the worker thread."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.events: deque[tuple[str, str, Any]] = deque()
        self.ids = itertools.count(1)
        self.name = process_name()
        self.worker: threading.Thread | None = None

    def opened(self, subscriber: Any, request: HttpRequest) -> None:
        """A websocket opened (its subscriptions are confirmed). Without presence on its
        facility and without signal receivers there is nothing to do: its user and session
        are not even looked up."""
        listened = websocket_opened.has_listeners() or websocket_closed.has_listeners()
        if not listened and tracked(settings.WS4REDIS_PRESENCE, subscriber.facility or "") is None:
            return
        subscriber.presence_id = visitor_id = f"{self.name}:{next(self.ids)}"
        self._post(("opened", visitor_id, (request, subscriber.facility or "")))

    def closed(self, subscriber: Any) -> None:
        """A websocket that :meth:`opened` closed (told once, however often it is called)."""
        visitor_id, subscriber.presence_id = getattr(subscriber, "presence_id", None), None
        if visitor_id is not None:
            self._post(("closed", visitor_id, None))

    def _post(self, event: tuple[str, str, Any]) -> None:
        with self.changed:
            self.events.append(event)
            if self.worker is None:
                self.worker = threading.Thread(
                    target=self._work, name="ws4redis-presence", daemon=True
                )
                self.worker.start()
            self.changed.notify()

    def _work(self) -> None:
        book = Book(settings.WS4REDIS_PRESENCE_TTL)
        announcer = Announcer(
            settings.WS4REDIS_PRESENCE_INTERVAL, settings.WS4REDIS_PRESENCE_MAX_NAMES
        )
        open_now: dict[str, tuple[Visitor, HttpRequest]] = {}
        failing = False
        while True:
            announcer.interval = settings.WS4REDIS_PRESENCE_INTERVAL  # read as it is now
            announcer.max_names = settings.WS4REDIS_PRESENCE_MAX_NAMES
            with self.changed:
                if not self.events:
                    due = announcer.next_due()
                    wait = ROUND if due is None else min(ROUND, due - time.monotonic())
                    self.changed.wait(max(wait, 0.0))
                events, self.events = self.events, deque()
            for kind, visitor_id, details in events:
                if kind == "opened":
                    request, facility = details
                    visitor = Visitor(visitor_id, facility, _user(request), _session(request))
                    open_now[visitor_id] = (visitor, request)
                    _send(websocket_opened, visitor, request)
                    if tracked(settings.WS4REDIS_PRESENCE, facility) is not None:
                        book.join(visitor)
                elif visitor_id in open_now:
                    visitor, request = open_now.pop(visitor_id)
                    _send(websocket_closed, visitor, request)
                    book.leave(visitor_id)
            changes = book.changes(time.monotonic())
            try:
                _write(changes, book.ttl)
            except REDIS_FAILED as exc:
                if not failing:
                    logger.warning("Cannot write presence, will retry: %s", exc)
                failing = True
                book.put_back(changes)
                continue
            failing = False
            announcer.add(changes, _announced)
            _announce(announcer.due(time.monotonic()))


def _user(request: HttpRequest) -> str | None:
    return request.user.get_username() if is_authenticated(request) else None


def _session(request: HttpRequest) -> str | None:
    return known_session_key(request)  # a made-up cookie is no visitor's session


def _send(signal: Any, visitor: Visitor, request: HttpRequest) -> None:
    """Send a signal; a receiver that fails is logged, and the worker goes on."""
    for receiver, result in signal.send_robust(
        sender=None,
        request=request,
        user=visitor.user,
        session=visitor.session,
        facility=visitor.facility,
    ):
        if isinstance(result, Exception):
            logger.error("%s receiver %r failed", signal, receiver, exc_info=result)


def _write(changes: Changes, ttl: float) -> None:
    """One round trip for every facility that changed."""
    adds: dict[str, dict[str, Visitor]] = defaultdict(dict)
    removes: dict[str, list[str]] = defaultdict(list)
    for visitor in changes.refresh + changes.joined:
        adds[visitor.facility][visitor.id] = visitor
    for visitor in changes.left:
        adds[visitor.facility].pop(visitor.id, None)
        removes[visitor.facility].append(visitor.id)
    facilities = set(adds) | set(removes)
    if not facilities:
        return
    client = get_redis()
    with client.pipeline(transaction=False) as pipe:
        for facility in facilities:
            added = adds.get(facility, {})
            args: list[Any] = [ttl, len(added)]
            for visitor in added.values():
                args += [visitor.id, entry(visitor)]
            args += removes.get(facility, [])
            # EVAL by name: a cluster pipeline has no eval() but routes EVAL by its first key
            pipe.execute_command("EVAL", _WRITE, 2, *presence_keys(key_prefix(), facility), *args)
        pipe.execute()


def _announced(facility: str) -> bool:
    return bool((tracked(settings.WS4REDIS_PRESENCE, facility) or {}).get("announce"))


def _announce(announcements: list[tuple[str, bytes]]) -> None:
    """Publish each facility's announcement; one Redis cannot take now is dropped (logged):
    who is there stays readable with :func:`present`, and the next change is announced."""
    from ws4redis.publisher import RedisPublisher

    for facility, message in announcements:
        publisher = RedisPublisher(facility=facility, broadcast=True)
        try:
            # enveloped as the presence's own: no client can send one, and clients that
            # get JSON messages can tell it from any chat line
            publisher._publish(message, 0, PRESENCE)
        except REDIS_FAILED as exc:
            logger.warning("Cannot announce presence on %r: %s", facility, exc)


tracker = per_process(Tracker)
"""This process's tracker (a forked worker gets its own)."""
