"""One Redis subscription per uWSGI worker, shared by its websocket greenlets.

The gevent twin of :mod:`ws4redis.runtimes.hub`: a greenlet reads the worker's single pub/sub
connection and hands each message to the websockets that want it; every websocket greenlet
sends what it was handed. Redis I/O here is redis-py over gevent's patched sockets.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from ws4redis.core.membership import Membership, Reconnection
from ws4redis.core.relay import Relay
from ws4redis.subscriber import CONFIRM_WAIT, SharedSubscription

logger = logging.getLogger("ws4redis.hub")


class GreenletSink(Protocol):
    """A websocket greenlet as the hub sees it."""

    relay: Relay
    wakeup: gevent.event.Event


class GeventHub:
    """The worker's Redis subscription and the websocket greenlets listening on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        # No retries inside redis-py: the reader reconnects with its own backoff and logs it.
        client = redis.Redis(**connection_kwargs, retry=Retry(NoBackoff(), 0))
        self._pubsub = client.pubsub()
        self._members: Membership[GreenletSink] = Membership()
        self._confirmations: dict[tuple[bytes, bytes], gevent.event.AsyncResult] = {}
        self._lock = gevent.lock.RLock()
        self._reader: gevent.Greenlet | None = None

    def add(self, sink: GreenletSink, channels: list[str]) -> None:
        """Deliver ``channels`` to ``sink``; returns once Redis confirmed new subscriptions."""
        new = self._members.join(sink, channels)
        if not new:
            return
        with self._lock:
            new = [k for k in new if self._members.wanted(k) and k not in self._pubsub.channels]
            if not new:
                return
            confirmed = self._expect(b"subscribe", new)
            self._pubsub.subscribe(*new)
            if self._reader is None:
                self._reader = gevent.spawn(self._read_forever)
        for result in confirmed:
            result.get(timeout=CONFIRM_WAIT)

    def remove(self, sink: GreenletSink, channels: list[str]) -> None:
        """Stop delivering ``channels`` to ``sink``; unsubscribe channels nobody wants."""
        gone = self._members.leave(sink, channels)
        if not gone:
            return
        try:
            with self._lock:
                gone = [
                    k for k in gone if not self._members.wanted(k) and k in self._pubsub.channels
                ]
                if not gone:
                    return
                confirmed = self._expect(b"unsubscribe", gone)
                self._pubsub.unsubscribe(*gone)
            for result in confirmed:
                result.get(timeout=CONFIRM_WAIT)
        except (redis.exceptions.RedisError, OSError, gevent.Timeout) as exc:
            logger.warning("UNSUBSCRIBE failed (%s); dropped locally", exc)
            for key in gone:
                self._pubsub.channels.pop(key, None)

    def _expect(self, kind: bytes, keys: list[bytes]) -> list[gevent.event.AsyncResult]:
        return [self._confirmations.setdefault((kind, k), gevent.event.AsyncResult()) for k in keys]

    def _read_forever(self) -> None:
        reconnection = Reconnection(logger)
        while True:
            try:
                reply = self._pubsub.parse_response(block=True)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                gevent.sleep(reconnection.lost())
                continue
            reconnection.working(self._members)
            if reply is None:
                continue
            if reply[0] == b"message":
                for sink in self._members.listeners(reply[1]):
                    relay = sink.relay
                    if relay is not None and relay.wants(reply[2]):
                        relay.outbox.append(reply[2])
                        sink.wakeup.set()
            else:
                self._pubsub.handle_message(reply)
                result = self._confirmations.pop((reply[0], reply[1]), None)
                if result is not None:
                    result.set(None)


_hub: tuple[int, GeventHub] | None = None


def worker_hub(connection_kwargs: dict[str, Any]) -> GeventHub:
    """The hub of this worker process (uWSGI forks workers after loading the app)."""
    global _hub
    if _hub is None or _hub[0] != os.getpid():
        _hub = (os.getpid(), GeventHub(connection_kwargs))
    return _hub[1]


class GeventSubscription(SharedSubscription):
    """A websocket greenlet's subscription, served by the worker's :class:`GeventHub`."""

    def __init__(self, hub: GeventHub, sink: GreenletSink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink

    def _add(self, names: list[str]) -> None:
        self.hub.add(self.sink, names)

    def _remove(self, names: list[str]) -> None:
        self.hub.remove(self.sink, names)
