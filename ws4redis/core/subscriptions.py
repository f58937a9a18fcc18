"""Bookkeeping of the one Redis connection that carries every subscription of a process.

A process (a ``runwebsocket`` worker, an ASGI event loop, a uWSGI worker, a ``runserver``)
subscribes each channel once, however many of its websockets listen on it. This module
decides, without doing any I/O, which commands that shared connection must send and when a
websocket may rely on its subscriptions:

* A channel gets ``SUBSCRIBE`` when its first local listener joins and ``UNSUBSCRIBE`` when
  its last one leaves. Commands on one channel may be in flight in both directions at once
  (a listener leaves and another arrives before Redis answered): Redis answers every
  command in order, so each confirmation settles the oldest command in flight on its
  channel, and a channel is never left deaf or subscribed for nobody.
* A :class:`Wait` counts the confirmations a caller needs: a websocket opens once its
  channels are subscribed (so a publish made after the client saw its handshake reaches
  it), and closes once its last channels are unsubscribed (so a publish made after the
  client saw its close no longer counts it as a receiver).
* When the connection is lost, nothing is in flight any more and nothing is subscribed;
  when it is back, every wanted channel is subscribed again and whoever was waiting for a
  subscription keeps waiting for the new one.

Each connection's state (:mod:`ws4redis.core.links`) feeds it every confirmation Redis
sends; the hub of each I/O model (:mod:`ws4redis.runtimes`) sends what it returns and wakes
the waits it hands back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ws4redis.core.stats import Stats

Sink = TypeVar("Sink")

RECONNECT_MIN = 0.1
RECONNECT_MAX = 10.0

SUBSCRIBE = (b"subscribe", b"ssubscribe")
"""Confirmations of a subscription: a channel, or a shard channel of a cluster."""


@dataclass(eq=False)
class Wait:
    """Confirmations one caller is waiting for; done when none is missing.

    ``handle`` is the I/O layer's own waiting object (a future, an event), set right after
    the call that returned this wait and woken when :attr:`done` becomes true.
    """

    missing: int = 0
    handle: Any = None

    @property
    def done(self) -> bool:
        return self.missing <= 0


@dataclass(eq=False)
class _Command:
    subscribe: bool
    waits: list[Wait] = field(default_factory=list)


@dataclass
class Commands:
    """What the shared connection must send now, in this order."""

    subscribe: list[bytes] = field(default_factory=list)
    unsubscribe: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe)

    def wire(self, sharded: bool) -> list[tuple[Any, ...]]:
        """The Redis commands, in order. Shard channels go one a command: a command may
        name only channels of one hash slot."""
        if sharded:
            return [("SUNSUBSCRIBE", key) for key in self.unsubscribe] + [
                ("SSUBSCRIBE", key) for key in self.subscribe
            ]
        wire: list[tuple[Any, ...]] = []
        if self.unsubscribe:
            wire.append(("UNSUBSCRIBE", *self.unsubscribe))
        if self.subscribe:
            wire.append(("SUBSCRIBE", *self.subscribe))
        return wire


class Subscriptions(Generic[Sink]):
    """Which local sinks listen on which channel, and what Redis was told about each."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        """Where its subscriptions and channels are counted (the process's, in a hub)."""
        self._sinks: dict[bytes, set[Sink]] = {}
        self._in_flight: dict[bytes, deque[_Command]] = {}
        self._subscribed: set[bytes] = set()
        # Waits for a subscription while the connection is down: they go with the
        # SUBSCRIBE sent once it is back.
        self._parked: dict[bytes, list[Wait]] = {}
        self.online = False

    # -- what the websockets want ----------------------------------------------------------

    def join(
        self, sink: Sink, channels: Iterable[str | bytes], wait: Wait | None = None
    ) -> tuple[Commands, Wait]:
        """Add ``sink`` to ``channels``; the wait (``wait``, or a new one) is done once all
        of them are subscribed."""
        commands, wait = Commands(), wait or Wait()
        for key in keys(channels):
            sinks = self._sinks.setdefault(key, set())
            if sink not in sinks:
                sinks.add(sink)
                self.stats.subscriptions += 1
            pending = self._in_flight.get(key)
            if not self.online:
                self._parked.setdefault(key, []).append(wait)
                wait.missing += 1
            elif pending and pending[-1].subscribe:
                pending[-1].waits.append(wait)
                wait.missing += 1
            elif not pending and key in self._subscribed:
                continue
            else:
                self._send(key, True, wait)
                commands.subscribe.append(key)
        return commands, wait

    def leave(
        self, sink: Sink, channels: Iterable[str | bytes], wait: Wait | None = None
    ) -> tuple[Commands, Wait]:
        """Take ``sink`` off ``channels``; the wait (``wait``, or a new one) is done once the
        channels nobody listens to any more are unsubscribed."""
        commands, wait = Commands(), wait or Wait()
        for key in keys(channels):
            sinks = self._sinks.get(key)
            if sinks is None or sink not in sinks:
                continue
            sinks.discard(sink)
            self.stats.subscriptions -= 1
            if sinks:
                continue
            del self._sinks[key]
            self._parked.pop(key, None)  # nobody opens on it any more
            pending = self._in_flight.get(key)
            wanted_by_redis = pending[-1].subscribe if pending else key in self._subscribed
            if self.online and wanted_by_redis:
                self._send(key, False, wait)
                commands.unsubscribe.append(key)
        return commands, wait

    def _send(self, key: bytes, subscribe: bool, wait: Wait) -> None:
        wait.missing += 1
        self._in_flight.setdefault(key, deque()).append(_Command(subscribe, [wait]))

    # -- what Redis says -------------------------------------------------------------------

    def confirmed(self, kind: bytes, key: bytes) -> list[Wait]:
        """Redis confirmed a SUBSCRIBE or UNSUBSCRIBE of ``key``; return the waits now done.

        A confirmation that matches no command in flight is ignored: this process did not
        ask for it.
        """
        pending = self._in_flight.get(key)
        subscribe = kind in SUBSCRIBE
        if not pending and not subscribe:
            # Unasked: a cluster node that lost the channel's slot dropped it; the map is
            # read again and the channel subscribed where it lives now (see resync).
            self._mark(key, False)
        if not pending or pending[0].subscribe is not subscribe:
            return []
        command = pending.popleft()
        if not pending:
            del self._in_flight[key]
        self._mark(key, subscribe)
        return _settle(command.waits)

    def _mark(self, key: bytes, subscribed: bool) -> None:
        """Note whether Redis has ``key`` subscribed on this connection."""
        if subscribed and key not in self._subscribed:
            self._subscribed.add(key)
            self.stats.channels += 1
        elif not subscribed and key in self._subscribed:
            self._subscribed.discard(key)
            self.stats.channels -= 1

    def lost(self) -> list[Wait]:
        """The connection is gone: nothing is subscribed or in flight any more.

        Waits for an unsubscribe are done (a closed connection listens to nothing); waits
        for a subscription are parked until the connection is back.
        """
        self.online = False
        self.stats.channels -= len(self._subscribed)
        self._subscribed.clear()
        done: list[Wait] = []
        for key, pending in self._in_flight.items():
            for command in pending:
                if command.subscribe and key in self._sinks:
                    self._parked.setdefault(key, []).extend(command.waits)
                else:
                    done.extend(_settle(command.waits))
        self._in_flight.clear()
        return done

    def connected(self, wait: Wait | None = None) -> Commands:
        """A new connection is up: subscribe every channel somebody listens to; ``wait``,
        if given, is done once all of them are confirmed."""
        self.online = True
        commands = Commands()
        parked, self._parked = self._parked, {}
        for key in self._sinks:
            waits = parked.get(key, [])
            if wait is not None:
                waits.append(wait)
                wait.missing += 1
            self._in_flight[key] = deque([_Command(True, waits)])
            commands.subscribe.append(key)
        return commands

    def deaf(self, key: bytes) -> bool:
        """Somebody listens on ``key``, yet Redis neither has it nor was asked for it."""
        return key in self._sinks and key not in self._subscribed and key not in self._in_flight

    def resync(self) -> Commands:
        """Subscribe, if the connection is up, every channel somebody listens to and Redis
        neither has nor was asked for."""
        commands = Commands()
        if self.online:
            for key in [key for key in self._sinks if self.deaf(key)]:
                self._in_flight[key] = deque([_Command(True)])
                commands.subscribe.append(key)
        return commands

    # -- moving a channel to another connection (its cluster slot moved) ----------------

    def channels(self) -> list[bytes]:
        """Every channel this connection carries or owes a command."""
        return list(self._sinks.keys() | self._in_flight.keys())

    def evict(self, key: bytes) -> tuple[set[Sink], list[Wait], list[Wait]]:
        """Forget ``key`` here: its listeners and the waits for its subscription, to go to
        another connection, and the waits now done (those for its unsubscribe)."""
        sinks = self._sinks.pop(key, set())
        self.stats.subscriptions -= len(sinks)
        carried = self._parked.pop(key, [])
        done: list[Wait] = []
        for command in self._in_flight.pop(key, ()):
            if command.subscribe:
                carried += command.waits
            else:
                done += _settle(command.waits)
        self._mark(key, False)
        return sinks, (carried if sinks else []), done + ([] if sinks else _settle(carried))

    def adopt(self, key: bytes, sinks: set[Sink], waits: list[Wait]) -> Commands:
        """Carry ``key`` for ``sinks`` from now on; ``waits`` are settled by its
        subscription here."""
        here = self._sinks.setdefault(key, set())
        self.stats.subscriptions += len(sinks - here)
        here.update(sinks)
        if not self.online:
            self._parked.setdefault(key, []).extend(waits)
            return Commands()
        self._in_flight.setdefault(key, deque()).append(_Command(True, list(waits)))
        return Commands(subscribe=[key])

    # -- delivery --------------------------------------------------------------------------

    def sinks(self) -> set[Sink]:
        """Every local sink of this connection's channels."""
        return set().union(*self._sinks.values())

    def listeners(self, key: bytes) -> Collection[Sink]:
        """The local sinks of a channel, as Redis names it in a message."""
        return self._sinks.get(key, ())


def keys(channels: Iterable[str | bytes]) -> list[bytes]:
    return [c.encode() if isinstance(c, str) else c for c in channels]


def _settle(waits: list[Wait]) -> list[Wait]:
    done = []
    for wait in waits:
        wait.missing -= 1
        if wait.done:
            done.append(wait)
    return done


class Backoff:
    """The pause before each new try of something that keeps failing: doubling from
    ``first`` up to ``most``, and from ``first`` again once it worked. The one backoff of
    the hubs: reconnecting, and reading a cluster's slot map."""

    def __init__(self, first: float = RECONNECT_MIN, most: float = RECONNECT_MAX) -> None:
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        """Another try failed: how long to wait before the next."""
        delay, self.delay = self.delay, min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        """It worked: the next failure waits ``first`` again."""
        self.delay = self.first


class Reconnection:
    """Backoff and the log lines of a lost subscription connection."""

    def __init__(self, logger: logging.Logger, stats: Stats | None = None) -> None:
        self.logger = logger
        self.stats = stats if stats is not None else Stats()
        """Where reconnections and the time without Redis are counted."""
        self.backoff = Backoff()
        self.lost_at: float | None = None

    def lost(self, now: float) -> float:
        """The connection failed at ``now``: how long to wait before the next try."""
        if self.lost_at is None:
            self.logger.warning("Lost the Redis subscription connection; reconnecting")
            self.lost_at = now
        return self.backoff.next()

    @staticmethod
    def earliest(reconnections: Iterable[Reconnection]) -> float | None:
        """When the first of ``reconnections`` that is down lost its connection."""
        return min((r.lost_at for r in reconnections if r.lost_at is not None), default=None)

    def inherit(self, lost_at: float | None) -> None:
        """This connection carries channels of one that was lost at ``lost_at`` (a cluster
        master that failed over): its coming up ends that outage, and says so."""
        if lost_at is not None and (self.lost_at is None or lost_at < self.lost_at):
            self.lost_at = lost_at

    def back(self, channels: int, now: float) -> None:
        """The connection is up again at ``now`` and ``channels`` were subscribed anew."""
        if self.lost_at is not None:
            self.logger.warning(
                "Redis is back after %.1f s; %d channels resubscribed", now - self.lost_at, channels
            )
            self.stats.reconnects += 1
            self.stats.outage_seconds += now - self.lost_at
            self.lost_at = None
            self.backoff.reset()
