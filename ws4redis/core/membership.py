"""Bookkeeping of the runtimes that share one Redis subscription among their websockets.

Which local websockets listen on which channel, and when the shared connection must
SUBSCRIBE or UNSUBSCRIBE; how long to wait before reconnecting after Redis went away. No
I/O: the asyncio hub and the gevent hub do theirs around it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sized
from typing import Generic, TypeVar

Sink = TypeVar("Sink")

RECONNECT_MIN = 0.1
RECONNECT_MAX = 10.0


class Membership(Generic[Sink]):
    """Channel name (bytes, as Redis replies name it) -> the local sinks listening on it."""

    def __init__(self) -> None:
        self._sinks: dict[bytes, set[Sink]] = {}

    def join(self, sink: Sink, channels: list[str]) -> list[bytes]:
        """Add ``sink`` to ``channels``; return those that had no listener (to subscribe)."""
        new = []
        for name in channels:
            key = name.encode()
            sinks = self._sinks.setdefault(key, set())
            if not sinks:
                new.append(key)
            sinks.add(sink)
        return new

    def leave(self, sink: Sink, channels: list[str]) -> list[bytes]:
        """Take ``sink`` off ``channels``; return those left without listener (to drop)."""
        gone = []
        for name in channels:
            key = name.encode()
            sinks = self._sinks.get(key)
            if sinks is not None:
                sinks.discard(sink)
                if not sinks:
                    del self._sinks[key]
                    gone.append(key)
        return gone

    def listeners(self, key: bytes) -> Collection[Sink]:
        return self._sinks.get(key, ())

    def wanted(self, key: bytes) -> bool:
        return key in self._sinks

    def __len__(self) -> int:
        return len(self._sinks)


class Reconnection:
    """Backoff (doubling, capped) and the log lines of a lost subscription connection."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.delay = RECONNECT_MIN
        self.failed = False

    def lost(self) -> float:
        """The connection failed: how long to wait before the next try."""
        if not self.failed:
            self.logger.warning("Lost the Redis subscription connection; reconnecting")
        self.failed = True
        delay, self.delay = self.delay, min(self.delay * 2, RECONNECT_MAX)
        return delay

    def working(self, channels: Sized) -> None:
        """A reply came in: say so if that ends an outage (called for every reply, so it
        does nothing else)."""
        if self.failed:
            self.logger.warning("Redis is back; %d channels resubscribed", len(channels))
            self.failed, self.delay = False, RECONNECT_MIN
