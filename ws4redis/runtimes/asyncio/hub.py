"""The loop's Redis subscription connections, shared by every websocket on it.

The twin of :mod:`ws4redis.runtimes.sync.hub` for an event loop, method for method.
:mod:`ws4redis.core.links` decides what to send, on which connection (one server: one
connection; a Redis Cluster: one per master, each channel on the master of its slot), when
to reconnect, catch up or read the slot map, and when a websocket may count on its channels;
this hub only sends those commands, reads the replies and hands messages to the websockets.
A message is framed once and the same bytes go to every local listener; all the frames one
websocket gets from one read of Redis go out in one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Collection
from typing import Any, Protocol

import redis.asyncio
import redis.exceptions

from ws4redis.bus.pool import ConnectionKey, cluster_seeds, configured_connection
from ws4redis.core.links import CatchUp, HubState, LinkState, Plan, Wire
from ws4redis.core.relay import Delivery, Relay
from ws4redis.core.shards import SlotMap
from ws4redis.core.stats import STATS
from ws4redis.core.subscriptions import Wait
from ws4redis.runtimes import hubs


class Sink(Protocol):
    """A local websocket as the hub sees it."""

    @property
    def relay(self) -> Relay | None:
        """Its relay, once it has one (a catch-up reads its positions)."""
        ...

    def push(self, delivery: Delivery) -> bool:
        """Take a message; True when the sink needs a :meth:`flush`."""
        ...

    def flush(self, now: float) -> None:
        """Write what was pushed since the last flush (``now``: monotonic seconds)."""
        ...

    def deliver(self, delivery: Delivery, now: float) -> None:
        """Take a message that came alone in its round of the loop, and write it at
        ``now`` (a websocket that owns its socket writes its frame at once)."""
        ...


class Queueing:
    """For a sink that writes a message alone in its round as it writes the others:
    queued, then flushed (it has no socket of its own to write to at once)."""

    __slots__ = ()

    def deliver(self: Sink, delivery: Delivery, now: float) -> None:
        if self.push(delivery):
            self.flush(now)


class Hub:
    """The loop's Redis subscription connections and the local websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self._kwargs = hubs.subscription_kwargs(connection_kwargs, asyncio=True)
        self._state: HubState[Sink] = HubState(cluster_seeds(self._kwargs), STATS, hubs.logger)
        self._refresher: asyncio.Task[None] | None = None
        self._dirty: list[Sink] = []
        self._flush_scheduled = False
        self._alone: tuple[tuple[Sink, ...], Delivery] | None = None
        self._ready: asyncio.Future[None] = self.loop.create_future()
        self._ready.set_result(None)

    # -- membership ------------------------------------------------------------------------

    def add(self, sink: Sink, channels: list[str]) -> Awaitable[None]:
        """Deliver ``channels`` to ``sink``; the result is done once Redis confirmed them."""
        return self._send(*self._state.join(sink, channels))

    def remove(self, sink: Sink, channels: list[str]) -> asyncio.Future[None]:
        """Stop delivering ``channels`` to ``sink``; the result is done once Redis confirmed
        the unsubscribe of channels nobody wants any more."""
        return self._send(*self._state.leave(sink, channels))

    def _send(self, plan: Plan[Sink], wait: Wait) -> asyncio.Future[None]:
        """Carry out ``plan``; a future done once ``wait`` is."""
        self._apply(plan)
        if wait.done:  # e.g. joining a channel the loop listens to already
            return self._ready
        wait.handle = self.loop.create_future()
        return wait.handle

    def _apply(self, plan: Plan[Sink]) -> None:
        """Do what the core decided."""
        for wait in plan.done:
            if wait.handle is not None and not wait.handle.done():
                wait.handle.set_result(None)
        for state in plan.stop:
            state.handle.close()
        for state in plan.start:
            state.handle = Link(self, state)
        for state, wire in plan.send:
            state.handle.outgoing.put_nowait(wire)
        if plan.read_slots and (self._refresher is None or self._refresher.done()):
            self._refresher = self.loop.create_task(self._refresh())

    # -- the cluster's slot map ------------------------------------------------------------

    async def _refresh(self) -> None:
        """Read the cluster's slot map (retrying with backoff) as long as the core wants it
        read, and move the channels whose master changed."""
        state = self._state
        while (pause := state.next_read()) is not None:
            await asyncio.sleep(pause)
            while (slots := await self._read_slots()) is None:
                await asyncio.sleep(state.unread())
            self._apply(state.remap(slots))

    async def _read_slots(self) -> SlotMap | None:
        """The slot map from the first node that gives one."""
        for node in self._state.sources():
            client = hubs.node_client(self._kwargs, node, asyncio=True)
            try:
                reply = await client.execute_command("CLUSTER", "SLOTS")
            except (*hubs.LOST, redis.exceptions.ResponseError):
                continue
            finally:
                await client.aclose()
            if reply:
                return SlotMap.from_reply(reply, node)
        return None

    # -- delivery --------------------------------------------------------------------------

    def hand(self, sinks: Collection[Sink], delivery: Delivery) -> None:
        """Give ``delivery`` to ``sinks``; they write once this round of the loop is over.

        The first message of a round waits, with the sinks it has now: if it stays alone
        (a steady stream), each sink writes it at once (:meth:`Sink.deliver`), one call per
        websocket; when more follow (a burst), it is queued like them, and every sink
        writes all of the round's frames in one write (:meth:`Sink.flush`).
        """
        if not self._flush_scheduled:
            # Runs once the reader has drained every reply hiredis already parsed.
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
            self._alone = (tuple(sinks), delivery)  # what a sink's write may unsubscribe
            return
        alone, self._alone = self._alone, None
        if alone is not None:  # the round's second message: the first is queued too
            self._queue(*alone)
        self._queue(sinks, delivery)

    def _queue(self, sinks: Collection[Sink], delivery: Delivery) -> None:
        dirty = self._dirty
        for sink in sinks:
            if sink.push(delivery):
                dirty.append(sink)

    def _flush(self) -> None:
        self._flush_scheduled = False
        now = time.monotonic()
        alone, self._alone = self._alone, None
        if alone is not None:
            sinks, delivery = alone
            for sink in sinks:
                sink.deliver(delivery, now)
        dirty, self._dirty = self._dirty, []
        for sink in dirty:
            sink.flush(now)

    async def close(self) -> None:
        """Drop the Redis connections (the process is shutting down)."""
        if self._refresher is not None:
            self._refresher.cancel()
        links = [state.handle for state in self._state.links.values()]
        for link in links:
            link.close()
        await asyncio.gather(*(link.connection.disconnect() for link in links))


class Link:
    """The subscription connection to one node, run by a task of its own."""

    def __init__(self, hub: Hub, state: LinkState[Sink]) -> None:
        self.hub = hub
        self.state = state
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = hubs.node_client(hub._kwargs, state.node, asyncio=True)
        self.connection = self._client.connection_pool.make_connection()
        self.outgoing: asyncio.Queue[Wire] = asyncio.Queue()
        self._catching_up: asyncio.Task[None] | None = None
        self._runner = hub.loop.create_task(self._run())

    def close(self) -> None:
        """Stop (the core closed the state already)."""
        self._runner.cancel()
        if self._catching_up is not None:
            self._catching_up.cancel()

    async def write(self, wire: Wire) -> None:
        """Send ``wire``."""
        if wire:
            await self.connection.send_packed_command(self.connection.pack_commands(wire))

    async def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        state = self.state
        try:
            while True:
                writer = None
                try:
                    await self.connection.connect()
                    self.outgoing = asyncio.Queue()  # commands decided offline are void
                    wire, catch_up = state.up(self.hub.loop.create_future(), time.monotonic())
                    if catch_up is not None:
                        if self._catching_up is not None:  # lost before it could: this
                            self._catching_up.cancel()  # one's catch-up covers it
                        self._catching_up = self.hub.loop.create_task(self._catch_up(catch_up))
                    await self.write(wire)
                    writer = self.hub.loop.create_task(self._write_forever())
                    await self._read_forever()
                except hubs.LOST:
                    pass
                except Exception:  # a fault of ours: log it, and the websockets keep a reader
                    hubs.restarted()
                finally:
                    if writer is not None:
                        writer.cancel()
                plan, pause = state.lost(time.monotonic())
                self.hub._apply(plan)
                await self.connection.disconnect()
                if pause is None:
                    return
                await asyncio.sleep(pause)
        finally:
            await self.connection.disconnect()

    async def _catch_up(self, catch_up: CatchUp) -> None:
        """Once Redis confirmed the channels of a new connection: hand each websocket that
        asked for positions what the history kept since its position."""
        state = self.state
        await catch_up.confirmed.handle
        if not state.current(catch_up):
            return  # lost again: the next connection catches up
        positions = state.positions(catch_up)
        read = self.hub.loop.run_in_executor
        missed = await read(None, hubs.read_missed, positions) if positions else {}
        for sink, deliveries in state.caught_up(missed):
            for delivery in deliveries:
                self.hub.hand((sink,), delivery)

    async def _write_forever(self) -> None:
        while True:
            wire = await self.outgoing.get()
            try:
                await self.write(wire)
            except hubs.LOST:  # the reader sees the closed connection and starts over
                await self.connection.disconnect(nowait=True)
                return

    async def _read_forever(self) -> None:
        read, state = self.connection.read_response, self.state
        hand, apply = self.hub.hand, self.hub._apply
        while True:
            try:
                reply = await read(push_request=True)  # with RESP3, messages are pushes
            except redis.exceptions.ResponseError as exc:  # MOVED: this node lost a slot
                # Start this connection over: the refused command's waits are parked, and
                # the map read again sends each channel where it lives now.
                raise redis.exceptions.ConnectionError(f"the slot map changed: {exc}") from exc
            hubs.received(reply, state, hand, apply)


_hubs: dict[tuple[asyncio.AbstractEventLoop, ConnectionKey], Hub] = {}


def get_hub() -> Hub:
    """The hub of the running loop for the configured Redis (``override_settings`` in tests
    gets a hub of its own, as it gets a client of its own)."""
    kwargs, connection = configured_connection()
    key = (asyncio.get_running_loop(), connection)
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = Hub(kwargs)
    return hub


async def close_hubs() -> None:
    """Close every hub of the running loop (it is shutting down)."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _hubs if key[0] is loop]:
        await _hubs.pop(key).close()


class HubSubscription(hubs.SharedSubscription):
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
        self.released: asyncio.Future[None] | None = None

    def _add(self, names: list[str]) -> None:
        async def add() -> None:
            await asyncio.wait_for(self.hub.add(self.sink, names), hubs.CONFIRM_WAIT)

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
