"""What this process's websocket side has done, counted where it is decided.

Plain integers, no locks and no I/O: the core and the hubs add to them on their paths (an
addition per message or per write, not per lookup), and :mod:`ws4redis.metrics` reads them
when Prometheus scrapes. Under the asyncio and gevent runtimes nothing interleaves an
addition, except where websockets open in opener threads and close on the loop: the open
counts change only in :meth:`Stats.change`, which :mod:`ws4redis.bus.live`'s reporter calls
under its lock. Under ``runserver``'s threads another addition can very rarely be lost,
which a development server can live with.

The core never imports :data:`STATS`: the runtimes hand their relays the instance to count
into, so a test (or a second server in one process) can count apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """Counters (ever growing) and gauges (now) of one process."""

    connections: int = 0
    """Websockets open now."""
    handshakes: Counter[int] = field(default_factory=Counter)
    """Opening requests by the status they were answered with (101: opened)."""
    closes: Counter[int] = field(default_factory=Counter)
    """Websockets the server closed, by close code (1008 slow client or policy, 1009 too
    big, 1011 keepalive or error, 1001 going away, 1013 Redis not keeping up...)."""
    channels: int = 0
    """Channels subscribed in Redis now."""
    subscriptions: int = 0
    """(websocket, channel) pairs now."""
    messages: int = 0
    """Messages received from Redis."""
    deliveries: int = 0
    """Messages handed to websockets (a message to 1,000 websockets: 1,000)."""
    bytes_out: int = 0
    """Bytes of frames (or, under ASGI, of messages) handed to the sockets."""
    reconnects: int = 0
    """Times a lost Redis subscription connection was back."""
    outage_seconds: float = 0.0
    """Time the subscription connections were down, summed over the ended outages."""
    unreadable: int = 0
    """Messages from Redis that could not be read (a damaged envelope) and were skipped."""
    reader_errors: int = 0
    """Times a Redis reader met an unexpected error; it logged it and carried on."""
    publish_waiting: int = 0
    """Client messages waiting to be published to Redis now."""
    publish_waiting_bytes: int = 0
    """Their bytes."""
    facilities: Counter[str] = field(default_factory=Counter)
    """Websockets open now, per facility."""

    def change(self, facility: str, delta: int) -> None:
        """A websocket on ``facility`` opened (+1, also counted as a 101) or closed (-1):
        the one place the open counts change. Not thread-safe: callers that open and close
        on different threads hold a lock (:meth:`ws4redis.bus.live.Reporter.change`)."""
        self.connections += delta
        if delta > 0:
            self.handshakes[101] += 1
        count = self.facilities[facility] + delta
        if count > 0:
            self.facilities[facility] = count
        else:
            self.facilities.pop(facility, None)


STATS = Stats()
"""The process's counts: what the runtimes, hubs and metrics share by default."""
