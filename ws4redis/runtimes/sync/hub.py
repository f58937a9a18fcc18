"""Redis subscriptions per process, shared by the websockets of a blocking runtime.

The twin of :mod:`ws4redis.runtimes.asyncio.hub` for threads: under ``runserver`` a real
thread reads each connection (the server's, or one per cluster master); under uWSGI with
gevent the same code runs as greenlets (gevent's monkey-patching makes ``threading`` and
sockets cooperative). The core decides what to send, on which connection, and when a
websocket may count on its channels; this module only sends, reads and wakes."""

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
from ws4redis.core.shards import Address, Shards, SlotMap
from ws4redis.core.stats import STATS
from ws4redis.core.subscriptions import (
    RECONNECT_MAX,
    RECONNECT_MIN,
    SLOT_POLL,
    Commands,
    Reconnection,
    Wait,
)
from ws4redis.redis_pool import (
    ConnectionKey,
    cluster_seeds,
    connection_key,
    connection_kwargs,
    make_client,
    node_kwargs,
)
from ws4redis.runtimes.hubs import (
    CONFIRM_WAIT,
    LOST,
    SharedSubscription,
    caught_up,
    hold,
    positioned,
    restarted,
    skipped,
)
from ws4redis.runtimes.hubs import missed as channels_missed

logger = logging.getLogger("ws4redis.hub")


class Sink(Protocol):
    """A local websocket as the hub sees it."""

    def push(self, delivery: Delivery) -> bool:
        """Take a message, from the hub's thread."""
        ...


class Hub:
    """The process's Redis subscription connections and the websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        # A subscription read blocks until something is published, and a lost connection
        # must surface at once: the hub reconnects with its own backoff and says so.
        self._kwargs = {**connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
        self._seeds = cluster_seeds(self._kwargs)
        self._shards: Shards[Sink] = Shards(None if self._seeds else SlotMap.single())
        self._links: dict[Address, Link] = {}
        self._lock = threading.Lock()
        self._stale = threading.Event()  # the cluster's slot map must be read again
        self._refresher: threading.Thread | None = None

    def add(self, sink: Sink, channels: list[str]) -> None:
        """Deliver ``channels`` to ``sink``; returns once Redis confirmed them (TimeoutError
        after ``CONFIRM_WAIT`` seconds)."""
        with self._lock:
            done = self._send(*self._shards.join(sink, channels))
        if not done.wait(CONFIRM_WAIT):
            raise TimeoutError("Redis did not confirm the subscription")

    def remove(self, sink: Sink, channels: list[str]) -> None:
        """Stop delivering ``channels`` to ``sink``; returns once Redis confirmed the
        unsubscribe of channels nobody wants any more (or after ``CONFIRM_WAIT``)."""
        with self._lock:
            done = self._send(*self._shards.leave(sink, channels))
        done.wait(CONFIRM_WAIT)

    def _send(self, commands: dict[Address | None, Commands], wait: Wait) -> threading.Event:
        """Under the lock: send ``commands``; an event set once ``wait`` is done."""
        wait.handle = threading.Event()
        if wait.done:
            wait.handle.set()
        self._dispatch(commands)
        return wait.handle

    def _dispatch(self, commands: dict[Address | None, Commands]) -> None:
        """Under the lock: send each node's commands on its link; start the links the books
        need and stop those of nodes that serve nothing any more."""
        start, stop, unmapped = self._shards.reconcile(self._links.keys())
        if unmapped:
            self.refresh()  # channels no known node serves: read the map
        lost_at = Reconnection.earliest(self._links[node].reconnection for node in stop)
        for node in stop:
            self._links.pop(node).close()
        for node in start:
            self._links[node] = Link(self, node, lost_at)
        for node, each in commands.items():
            if node is not None:
                self._links[node].write(each)

    @staticmethod
    def _wake(waits: list[Wait]) -> None:
        for wait in waits:
            wait.handle.set()

    # -- the cluster's slot map ------------------------------------------------------------

    def refresh(self) -> None:
        """Have the cluster's slot map read again; nothing on a single server."""
        if self._seeds is None:
            return
        self._stale.set()
        if self._refresher is None:
            self._refresher = threading.Thread(
                target=self._refresh_forever, name="ws4redis-slots", daemon=True
            )
            self._refresher.start()

    def _refresh_forever(self) -> None:
        """Whenever the map is stale, read it (retrying with backoff) and move the channels
        whose master changed."""
        while True:
            self._stale.wait()
            self._stale.clear()
            delay = RECONNECT_MIN
            while (slots := self._read_slots()) is None:
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            with self._lock:
                commands, done = self._shards.remap(slots)
                self._wake(done)
                self._dispatch(commands)
                away = any(not link.book.online for link in self._links.values())
            if away and not self._stale.is_set():
                time.sleep(SLOT_POLL)  # a master is away: watch for its successor
                self._stale.set()

    def _read_slots(self) -> SlotMap | None:
        """The slot map from the first node that gives one (known masters, then seeds)."""
        for node in [*self._shards.slots.nodes, *self._seeds]:
            client = make_client(node_kwargs(self._kwargs, node))
            try:
                reply = client.execute_command("CLUSTER", "SLOTS")
            except (*LOST, redis.exceptions.ResponseError):
                continue
            finally:
                client.close()
            if reply:
                return SlotMap.from_reply(reply, node)
        return None


class Link:
    """The subscription connection to one node, read by a thread of its own."""

    def __init__(self, hub: Hub, node: Address, lost_at: float | None = None) -> None:
        self.hub = hub
        self.reconnection = Reconnection(logger)
        self.reconnection.inherit(lost_at)  # set before its thread starts
        self.book = hub._shards.books[node]
        self.sharded = hub._seeds is not None
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = make_client(node_kwargs(hub._kwargs, node))
        self.connection = self._client.connection_pool.make_connection()
        self.closed = False
        self.generation = 0  # connections made so far: a catch-up belongs to one of them
        threading.Thread(target=self._run, name="ws4redis-hub", daemon=True).start()

    def close(self) -> None:
        """Under the hub's lock: stop (the node serves nothing of ours any more)."""
        self.closed = True
        self.connection.disconnect()

    def write(self, commands: Commands) -> None:
        """Under the hub's lock: send ``commands``."""
        if not commands:
            return
        try:
            wire = self.connection.pack_commands(commands.wire(self.sharded))
            self.connection.send_packed_command(wire)
        except LOST:  # the reader sees the closed connection and starts over
            self.connection.disconnect()

    def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        reconnection = self.reconnection
        lock = self.hub._lock
        while not self.closed:
            try:
                self.connection.connect()
                confirmed = Wait(handle=threading.Event())
                self.generation += 1
                with lock:
                    if self.closed:  # closed while connecting: its node serves us no more
                        self.connection.disconnect()
                        return
                    resubscribe = self.book.connected(confirmed)
                    self.write(resubscribe)
                if resubscribe.subscribe:
                    catch_up = (confirmed.handle, resubscribe.subscribe)
                    threading.Thread(target=self._catch_up, args=catch_up, daemon=True).start()
                reconnection.back(len(resubscribe.subscribe), time.monotonic())
                self._read_forever()
            except LOST:
                pass
            except Exception:  # a fault of ours: log it, and the websockets keep a reader
                restarted()
            with lock:
                if not self.sharded:  # a cluster's channels may move on to another connection
                    hold(self.book.sinks())
                self.hub._wake(self.book.lost())
                self.connection.disconnect()
            if not self.closed:
                self.hub.refresh()  # a cluster node that went away may have a successor
                time.sleep(reconnection.lost(time.monotonic()))

    def _catch_up(self, confirmed: threading.Event, channels: list[bytes]) -> None:
        """Once Redis confirmed the channels of a new connection: hand each websocket that
        asked for positions what the channel's history kept since its position, so that
        what was published while this connection was down is not lost to it."""
        generation = self.generation
        while not confirmed.wait(CONFIRM_WAIT):
            if self.closed or self.generation != generation:
                return  # lost again: the next connection catches up
        missed = {}
        for channel in channels:
            with self.hub._lock:
                offsets = positioned(list(self.book.listeners(channel)), channel)
            if offsets:
                try:
                    missed[channel] = offsets, channels_missed(channel, offsets.values())
                except redis.exceptions.RedisError as exc:  # what is kept is all there is
                    logger.warning("Cannot read what %r missed: %s", channel, exc)
        with self.hub._lock:  # see _read_forever: nothing live is pushed meanwhile
            for sink, deliveries in caught_up(self.book.sinks(), missed):
                for delivery in deliveries:
                    sink.push(delivery)

    def _read_forever(self) -> None:
        read = self.connection.read_response
        book, lock = self.book, self.hub._lock
        message = b"smessage" if self.sharded else b"message"
        while True:
            try:
                reply = read(push_request=True)  # with RESP3, messages are pushes
            except redis.exceptions.ResponseError as exc:  # MOVED: this node lost a slot
                # Start this connection over: the refused command's waits are parked, and
                # the map read again sends each channel where it lives now.
                raise redis.exceptions.ConnectionError(f"the slot map changed: {exc}") from exc
            try:
                kind = reply[0]
                if kind == message:
                    STATS.messages += 1
                    delivery = Delivery(reply[1], reply[2])
                    # under the lock: a catch-up hands over what its websockets missed, and
                    # stops holding what arrives live, in one step that this must not split
                    with lock:
                        sinks = book.listeners(reply[1])
                        STATS.deliveries += len(sinks)
                        for sink in sinks:
                            sink.push(delivery)
                else:
                    with lock:
                        self.hub._wake(book.confirmed(kind, reply[1]))
                        if book.deaf(reply[1]):  # an unasked unsubscribe: the slot moved
                            self.hub.refresh()
            except Exception:  # no single reply may stop the reader of every websocket
                skipped(reply)


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

    __slots__ = ("hub", "sink")

    def __init__(self, hub: Hub, sink: Sink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink

    def _add(self, names: list[str]) -> None:
        self.hub.add(self.sink, names)

    def _remove(self, names: list[str]) -> None:
        self.hub.remove(self.sink, names)
