"""The loop's Redis subscription connections, shared by every websocket on it.

The core decides: :class:`~ws4redis.core.subscriptions.Subscriptions` when a channel is
subscribed or unsubscribed and when a websocket may count on it, and
:class:`~ws4redis.core.shards.Shards` which connection carries which channel (one server:
one connection; a Redis Cluster: one per master, each channel on the master of its slot).
This hub only sends those commands, reads the replies, re-reads the cluster's slot map when
a node says the map changed, and hands messages to the websockets. A message is framed once
and the same bytes go to every local listener; all the frames one websocket gets from one
read of Redis go out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from ws4redis.core.relay import Delivery, Relay
from ws4redis.core.shards import Address, Shards, SlotMap
from ws4redis.core.stats import STATS
from ws4redis.core.subscriptions import (
    RECONNECT_MAX,
    RECONNECT_MIN,
    SLOT_POLL,
    Commands,
    Reconnection,
    Subscriptions,
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

    relay: Relay | None

    def push(self, delivery: Delivery) -> bool:
        """Take a message; True when the sink needs a :meth:`flush`."""
        ...

    def flush(self, now: float) -> None:
        """Write what was pushed since the last flush (``now``: monotonic seconds)."""
        ...


class Hub:
    """The loop's Redis subscription connections and the local websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        # A subscription read blocks until something is published, and a lost connection
        # must surface at once: the hub reconnects with its own backoff and says so.
        self._kwargs = {**connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
        self._seeds = cluster_seeds(self._kwargs)
        self._shards: Shards[Sink] = Shards(None if self._seeds else SlotMap.single())
        self._links: dict[Address, Link] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._stale = False
        self._dirty: list[Sink] = []
        self._flush_scheduled = False
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._ready.set_result(None)

    # -- membership ------------------------------------------------------------------------

    def add(self, sink: Sink, channels: list[str]) -> Awaitable[None]:
        """Deliver ``channels`` to ``sink``; the result is done once Redis confirmed them."""
        return self._send(*self._shards.join(sink, channels))

    def remove(self, sink: Sink, channels: list[str]) -> Awaitable[None]:
        """Stop delivering ``channels`` to ``sink``; the result is done once Redis confirmed
        the unsubscribe of channels nobody wants any more."""
        return self._send(*self._shards.leave(sink, channels))

    def _send(self, commands: dict[Address | None, Commands], wait: Wait) -> asyncio.Future[None]:
        self._dispatch(commands)
        if wait.done:  # e.g. joining a channel the loop listens to already
            return self._ready
        wait.handle = self.loop.create_future()
        return wait.handle

    def _dispatch(self, commands: dict[Address | None, Commands]) -> None:
        """Hand each node's commands to its link; start the links the books need and stop
        those of nodes that serve nothing any more."""
        start, stop, unmapped = self._shards.reconcile(self._links.keys())
        if unmapped:
            self.refresh()  # channels no known node serves: read the map
        lost_at = Reconnection.earliest(self._links[node].reconnection for node in stop)
        for node in stop:
            self._links.pop(node).close()
        for node in start:
            self._links[node] = Link(self, node)
            self._links[node].reconnection.inherit(lost_at)
        for node, each in commands.items():
            if node is not None:
                self._links[node].outgoing.put_nowait(each)

    @staticmethod
    def _wake(waits: list[Wait]) -> None:
        for wait in waits:
            if wait.handle is not None and not wait.handle.done():
                wait.handle.set_result(None)

    # -- the cluster's slot map ------------------------------------------------------------

    def refresh(self) -> None:
        """Read the cluster's slot map again (once at a time) and move the channels whose
        master changed; nothing on a single server."""
        if self._seeds is None:
            return
        self._stale = True  # a read under way when this came may predate the change
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self.loop.create_task(self._refresh())

    async def _refresh(self) -> None:
        while self._stale:
            self._stale = False
            delay = RECONNECT_MIN
            while (slots := await self._read_slots()) is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            commands, done = self._shards.remap(slots)
            self._wake(done)
            self._dispatch(commands)
            if not self._stale and any(not link.book.online for link in self._links.values()):
                await asyncio.sleep(SLOT_POLL)  # a master is away: watch for its successor
                self._stale = True

    async def _read_slots(self) -> SlotMap | None:
        """The slot map from the first node that gives one (known masters, then seeds)."""
        for node in [*self._shards.slots.nodes, *self._seeds]:
            client = make_client(node_kwargs(self._kwargs, node), asyncio=True)
            try:
                reply = await client.execute_command("CLUSTER", "SLOTS")
            except (*LOST, redis.exceptions.ResponseError):
                continue
            finally:
                await client.aclose()
            if reply:
                return SlotMap.from_reply(reply, node)
        return None

    # -- delivery --------------------------------------------------------------------------

    def fan_out(self, book: Subscriptions[Sink], channel: bytes, data: bytes) -> None:
        sinks = book.listeners(channel)
        STATS.messages += 1
        if not sinks:
            return
        STATS.deliveries += len(sinks)
        self.hand(sinks, Delivery(channel, data))

    def hand(self, sinks: Iterable[Sink], delivery: Delivery) -> None:
        """Give ``delivery`` to ``sinks``; they write once this round of the loop is over."""
        dirty = self._dirty
        for sink in sinks:
            if sink.push(delivery):
                dirty.append(sink)
        if dirty and not self._flush_scheduled:
            # Runs once the reader has drained every reply hiredis already parsed.
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        now = time.monotonic()
        for sink in dirty:
            sink.flush(now)

    async def close(self) -> None:
        """Drop the Redis connections (the process is shutting down)."""
        if self._refreshing is not None:
            self._refreshing.cancel()
        for link in self._links.values():
            link.close()
        await asyncio.gather(*(link.connection.disconnect() for link in self._links.values()))


class Link:
    """The subscription connection to one node, and the book of what it carries."""

    def __init__(self, hub: Hub, node: Address) -> None:
        self.hub = hub
        self.book = hub._shards.books[node]
        self.sharded = hub._seeds is not None
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = make_client(node_kwargs(hub._kwargs, node), asyncio=True)
        self.connection = self._client.connection_pool.make_connection()
        self.outgoing: asyncio.Queue[Commands] = asyncio.Queue()
        self.reconnection = Reconnection(logger)
        self._catching_up: asyncio.Task[None] | None = None
        self._runner = hub.loop.create_task(self._run())

    def close(self) -> None:
        self._runner.cancel()
        if self._catching_up is not None:
            self._catching_up.cancel()

    async def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        try:
            await self._connect_forever()
        finally:
            await self.connection.disconnect()

    async def _connect_forever(self) -> None:
        reconnection = self.reconnection
        while True:
            writer = None
            try:
                await self.connection.connect()
                self.outgoing = asyncio.Queue()  # commands decided offline are void
                confirmed = Wait(handle=self.hub.loop.create_future())
                resubscribe = self.book.connected(confirmed)
                if resubscribe.subscribe:
                    if self._catching_up is not None:  # a connection lost before it could
                        self._catching_up.cancel()  # this one's catch-up covers it
                    catch_up = self._catch_up(confirmed.handle, resubscribe.subscribe)
                    self._catching_up = self.hub.loop.create_task(catch_up)
                await self._write(resubscribe)
                reconnection.back(len(resubscribe.subscribe), time.monotonic())
                writer = self.hub.loop.create_task(self._write_forever())
                await self._read_forever()
            except LOST:
                pass
            except Exception:  # a fault of ours: log it, and the websockets keep a reader
                restarted()
            finally:
                if writer is not None:
                    writer.cancel()
            if not self.sharded:  # a cluster's channels may move on to another connection
                hold(self.book.sinks())
            self.hub._wake(self.book.lost())
            await self.connection.disconnect()
            self.hub.refresh()  # a cluster node that went away may have a successor
            await asyncio.sleep(reconnection.lost(time.monotonic()))

    async def _catch_up(self, confirmed: asyncio.Future[None], channels: list[bytes]) -> None:
        """Once Redis confirmed the channels of a new connection: hand each websocket that
        asked for positions what the channel's history kept since its position, so that
        what was published while this connection was down is not lost to it."""
        await confirmed
        read = self.hub.loop.run_in_executor
        missed = {}
        for channel in channels:
            offsets = positioned(self.book.listeners(channel), channel)
            if offsets:
                try:
                    found = await read(None, channels_missed, channel, offsets.values())
                    missed[channel] = offsets, found
                except redis.exceptions.RedisError as exc:  # what is kept is all there is
                    logger.warning("Cannot read what %r missed: %s", channel, exc)
        for sink, deliveries in caught_up(self.book.sinks(), missed):
            for delivery in deliveries:
                self.hub.hand((sink,), delivery)

    async def _write(self, commands: Commands) -> None:
        if commands:
            wire = self.connection.pack_commands(commands.wire(self.sharded))
            await self.connection.send_packed_command(wire)

    async def _write_forever(self) -> None:
        while True:
            commands = await self.outgoing.get()
            try:
                await self._write(commands)
            except LOST:  # the reader sees the closed connection and starts over
                await self.connection.disconnect(nowait=True)
                return

    async def _read_forever(self) -> None:
        read = self.connection.read_response
        book, fan_out = self.book, self.hub.fan_out
        message = b"smessage" if self.sharded else b"message"
        while True:
            try:
                reply = await read(push_request=True)  # with RESP3, messages are pushes
            except redis.exceptions.ResponseError as exc:  # MOVED: this node lost a slot
                # Start this connection over: the refused command's waits are parked, and
                # the map read again sends each channel where it lives now.
                raise redis.exceptions.ConnectionError(f"the slot map changed: {exc}") from exc
            try:
                kind = reply[0]
                if kind == message:
                    fan_out(book, reply[1], reply[2])
                else:
                    self.hub._wake(book.confirmed(kind, reply[1]))
                    if book.deaf(reply[1]):  # an unasked unsubscribe: the slot moved
                        self.hub.refresh()
            except Exception:  # no single reply may stop the reader of every websocket
                skipped(reply)


_hubs: dict[tuple[asyncio.AbstractEventLoop, ConnectionKey], Hub] = {}


def get_hub() -> Hub:
    """The hub of the running loop for the configured Redis (``override_settings`` in tests
    gets a hub of its own, as it gets a client of its own)."""
    kwargs = connection_kwargs()
    key = (asyncio.get_running_loop(), connection_key(kwargs))
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = Hub(kwargs)
    return hub


async def close_hubs() -> None:
    """Close every hub of the running loop (it is shutting down)."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _hubs if key[0] is loop]:
        await _hubs.pop(key).close()


class HubSubscription(SharedSubscription):
    """The subscription of one websocket's subscriber when a :class:`Hub` serves the loop.

    ``subscribe`` runs in the thread that opens the websocket and waits for the hub;
    ``unsubscribe`` runs on the loop and leaves in ``released`` what ends when Redis
    confirmed it.
    """

    __slots__ = ("hub", "released", "sink")

    def __init__(self, hub: Hub, sink: Sink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink
        self.released: Awaitable[None] | None = None

    def _add(self, names: list[str]) -> None:
        async def add() -> None:
            await asyncio.wait_for(self.hub.add(self.sink, names), CONFIRM_WAIT)

        asyncio.run_coroutine_threadsafe(add(), self.hub.loop).result()

    def _remove(self, names: list[str]) -> None:
        if _on_loop(self.hub.loop):
            self.released = self.hub.remove(self.sink, names)
        else:
            self.hub.loop.call_soon_threadsafe(self.hub.remove, self.sink, names)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
