"""One Redis subscription per process, shared by the websockets of a blocking runtime.

The twin of :mod:`ws4redis.runtimes.asyncio.hub` for threads: under ``runserver`` a real
thread reads the connection, under uWSGI with gevent the same code runs as a greenlet
(gevent's monkey-patching makes ``threading`` and sockets cooperative). The core's
:class:`~ws4redis.core.subscriptions.Subscriptions` decides what to send and when a
websocket may count on its channels; this module only sends, reads and wakes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from ws4redis.core.relay import Delivery
from ws4redis.core.subscriptions import Commands, Reconnection, Subscriptions, Wait
from ws4redis.redis_pool import ConnectionKey, connection_key, connection_kwargs, make_client
from ws4redis.subscriber import CONFIRM_WAIT, SharedSubscription

logger = logging.getLogger("ws4redis.hub")

LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Sink(Protocol):
    """A local websocket as the hub sees it."""

    def push(self, delivery: Delivery) -> bool:
        """Take a message, from the hub's thread."""
        ...


class Hub:
    """The process's Redis subscription connection and the websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        # A subscription read blocks until something is published, and a lost connection
        # must surface at once: the hub reconnects with its own backoff and says so.
        kwargs = {**connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = make_client(kwargs)
        self._connection = self._client.connection_pool.make_connection()
        self._book: Subscriptions[Sink] = Subscriptions()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def add(self, sink: Sink, channels: list[str]) -> None:
        """Deliver ``channels`` to ``sink``; returns once Redis confirmed them (TimeoutError
        after ``CONFIRM_WAIT`` seconds)."""
        with self._lock:
            if self._reader is None:
                self._reader = threading.Thread(target=self._run, name="ws4redis-hub", daemon=True)
                self._reader.start()
            done = self._send(*self._book.join(sink, channels))
        if not done.wait(CONFIRM_WAIT):
            raise TimeoutError("Redis did not confirm the subscription")

    def remove(self, sink: Sink, channels: list[str]) -> None:
        """Stop delivering ``channels`` to ``sink``; returns once Redis confirmed the
        unsubscribe of channels nobody wants any more (or after ``CONFIRM_WAIT``)."""
        with self._lock:
            done = self._send(*self._book.leave(sink, channels))
        done.wait(CONFIRM_WAIT)

    def _send(self, commands: Commands, wait: Wait) -> threading.Event:
        """Under the lock: send ``commands``; an event set once ``wait`` is done."""
        wait.handle = threading.Event()
        if wait.done:
            wait.handle.set()
        try:
            self._write(commands)
        except LOST:  # the reader sees the closed connection and starts over
            self._connection.disconnect()
        return wait.handle

    def _write(self, commands: Commands) -> None:
        if commands.unsubscribe:
            self._connection.send_command("UNSUBSCRIBE", *commands.unsubscribe)
        if commands.subscribe:
            self._connection.send_command("SUBSCRIBE", *commands.subscribe)

    @staticmethod
    def _wake(waits: list[Wait]) -> None:
        for wait in waits:
            wait.handle.set()

    def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        reconnection = Reconnection(logger)
        while True:
            try:
                self._connection.connect()
                with self._lock:
                    resubscribe = self._book.connected()
                    self._write(resubscribe)
                reconnection.back(len(resubscribe.subscribe), time.monotonic())
                self._read_forever()
            except LOST:
                pass
            with self._lock:
                self._wake(self._book.lost())
                self._connection.disconnect()
            time.sleep(reconnection.lost(time.monotonic()))

    def _read_forever(self) -> None:
        read = self._connection.read_response
        while True:
            reply = read(push_request=True)  # with RESP3, messages are pushes
            kind = reply[0]
            if kind == b"message":
                with self._lock:
                    sinks = list(self._book.listeners(reply[1]))
                if sinks:
                    delivery = Delivery(reply[1], reply[2])
                    for sink in sinks:
                        sink.push(delivery)
            else:
                with self._lock:
                    self._wake(self._book.confirmed(kind, reply[1]))


_hubs: dict[tuple[int, ConnectionKey], Hub] = {}
_hubs_lock = threading.Lock()


def get_hub() -> Hub:
    """The hub of this process for the configured Redis (uWSGI forks its workers after
    loading the application, so the process id is part of the key)."""
    kwargs = connection_kwargs()
    key = (os.getpid(), connection_key(kwargs))
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = Hub(kwargs)
        return hub


class HubSubscription(SharedSubscription):
    """A websocket's subscription, served by the process's :class:`Hub`."""

    def __init__(self, hub: Hub, sink: Sink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink

    def _add(self, names: list[str]) -> None:
        self.hub.add(self.sink, names)

    def _remove(self, names: list[str]) -> None:
        self.hub.remove(self.sink, names)
