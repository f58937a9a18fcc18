"""What the hubs of every I/O model share, apart from the decisions the core makes.

A hub (:mod:`ws4redis.runtimes.asyncio.hub`, :mod:`ws4redis.runtimes.sync.hub`) keeps a
process's Redis subscription connections; a websocket's subscriber subscribes through it
with a :class:`SharedSubscription`. Here: that base, what a lost connection raises, how
long a websocket waits for its subscriptions, the history a resubscription may have missed,
and the log lines of a reader's faults.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar

import redis.exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ws4redis.bus import history
from ws4redis.bus.pool import REDIS_FAILED, get_redis, make_client, node_kwargs
from ws4redis.core.history import CLIENT, SERVER, Position, Window, envelope
from ws4redis.core.links import LinkState, Missed, Plan
from ws4redis.core.relay import Delivery
from ws4redis.core.shards import Address
from ws4redis.core.stats import STATS

logger = logging.getLogger("ws4redis.hub")
faults = logging.getLogger("ws4redis")
"""Where a reader's own faults go (as a websocket's do)."""

LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
"""What a Redis connection raises once it is gone (redis-py's, and the socket's)."""


def subscription_kwargs(kwargs: dict[str, Any], *, asyncio: bool = False) -> dict[str, Any]:
    """The settings of a hub's connections, from the configured ones: a subscription read
    blocks until something is published, and a lost connection must surface at once (the
    hub reconnects with its own backoff and says so). An ``asyncio`` hub's retry is
    redis-py's asyncio one: given the blocking one, redis-py converts it and warns on every
    connection it makes."""
    retry = AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0)
    return {**kwargs, "socket_timeout": None, "retry": retry}


def node_client(kwargs: dict[str, Any], node: Address, asyncio: bool = False) -> Any:
    """A client of ``node`` (a cluster master, or the server) with the hub's ``kwargs``."""
    return make_client(node_kwargs(kwargs, node), asyncio=asyncio)


CONFIRM_WAIT = 5.0
"""Seconds to wait at most for Redis to confirm the subscriptions of a new websocket."""


class SharedSubscription:
    """Base of the subscriptions a runtime puts behind a subscriber when one Redis connection
    serves all its websockets: keeps the names, and tells the runtime's hub. Slots: one per
    websocket."""

    __slots__ = ("channels",)

    def __init__(self) -> None:
        # A tuple, not a dict: a websocket has a channel or two, and a dict costs ~200 bytes.
        self.channels: tuple[str, ...] = ()

    def subscribe(self, *channels: str | bytes) -> None:
        names = _names(channels)
        self.channels = tuple(dict.fromkeys((*self.channels, *names)))
        self._add(names)

    def unsubscribe(self, *channels: str | bytes) -> None:
        names = _names(channels) or list(self.channels)
        self.channels = tuple(name for name in self.channels if name not in names)
        self._remove(names)

    def close(self) -> None:
        self.unsubscribe()

    def _add(self, names: list[str]) -> None:
        raise NotImplementedError

    def _remove(self, names: list[str]) -> None:
        raise NotImplementedError


def _names(channels: tuple[str | bytes, ...]) -> list[str]:
    return [c.decode() if isinstance(c, bytes) else c for c in channels]


Sink = TypeVar("Sink")


def read_missed(positions: dict[bytes, dict[Sink, Position]]) -> Missed[Sink]:
    """What the history of each channel of a catch-up kept since the positions of its
    websockets (:meth:`~ws4redis.core.links.LinkState.positions`); a channel whose history
    cannot be read is left out (what its websockets have is all there is). Blocking."""
    found: Missed[Sink] = {}
    for channel, offsets in positions.items():
        try:
            found[channel] = offsets, _missed(channel, offsets.values())
        except REDIS_FAILED as exc:
            logger.warning("Cannot read what %r missed: %s", channel, exc)
    return found


def _missed(channel: bytes, positions: Iterable[Position]) -> list[Delivery]:
    """What ``channel``'s history keeps after the earliest of ``positions``, as Redis would
    have delivered it: for websockets that stayed open while their process subscribed the
    channel again (an outage, a failover), which may have missed some of it. When the
    history is in another epoch than one of them (Redis lost it meanwhile), all it keeps:
    that websocket gets the new epoch from its start, or is told what it lacks. Each
    websocket drops what it already has (:meth:`~ws4redis.core.relay.Relay.position_of`)."""
    positions = list(positions)
    connection = get_redis()
    window = history.read(connection, channel.decode(), min(p.offset for p in positions))
    if window.epoch and any(p.epoch != window.epoch for p in positions):
        window = history.read(connection, channel.decode(), 0)
    if not window.epoch:
        return []
    return [
        Delivery(channel, envelope(_origin(window, offset), Position(window.epoch, offset), data))
        for offset, data in window.messages
    ]


def _origin(window: Window, offset: int) -> bytes:
    return CLIENT if offset in window.clients else SERVER


def received(
    reply: Sequence[Any],
    state: LinkState[Sink],
    hand: Callable[[Collection[Sink], Delivery], None],
    apply: Callable[[Plan[Sink]], None],
) -> None:
    """Have ``state`` take one reply its connection read: a message goes to its listeners
    (``hand``), a confirmation's plan to the hub (``apply``). A reply that cannot be handled
    is :func:`skipped`: no single reply may stop the reader of every websocket."""
    try:
        if reply[0] == state.message:
            hand(*state.delivered(reply))
        else:
            apply(state.confirmed(reply))
    except Exception:
        skipped(reply)


def skipped(reply: object) -> None:
    """A hub's reader could not handle one reply from Redis: logged with its traceback and
    counted, and the reader goes on with the next."""
    STATS.reader_errors += 1
    faults.exception("Skipped a reply from Redis that could not be handled: %.200r", reply)


def restarted() -> None:
    """A hub's reader stopped on an unexpected error: logged and counted; it connects
    again, as after a lost connection."""
    STATS.reader_errors += 1
    faults.exception("The Redis reader failed; it starts over")
