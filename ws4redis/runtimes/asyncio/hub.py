"""One Redis subscription per event loop, shared by every websocket on it.

The core's :class:`~ws4redis.core.subscriptions.Subscriptions` decides when a channel is
subscribed or unsubscribed and when a websocket may count on it; this hub only sends those
commands on one Redis connection, reads the replies and hands messages to the websockets. A
message is framed once and the same bytes go to every local listener; all the frames one
websocket gets from one read of Redis go out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

import redis.asyncio
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
        """Take a message; True when the sink needs a :meth:`flush`."""
        ...

    def flush(self, now: float) -> None:
        """Write what was pushed since the last flush (``now``: monotonic seconds)."""
        ...


class Hub:
    """The loop's Redis subscription connection and the local websockets on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        # A subscription read blocks until something is published, and a lost connection
        # must surface at once: the hub reconnects with its own backoff and says so.
        kwargs = {**connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
        # The client stays referenced: a Sentinel connection asks its pool for the master.
        self._client = make_client(kwargs, asyncio=True)
        self._connection = self._client.connection_pool.make_connection()
        self._book: Subscriptions[Sink] = Subscriptions()
        self._outgoing: asyncio.Queue[Commands] = asyncio.Queue()
        self._dirty: list[Sink] = []
        self._flush_scheduled = False
        self._runner: asyncio.Task[None] | None = None

    # -- membership ------------------------------------------------------------------------

    def add(self, sink: Sink, channels: list[str]) -> Awaitable[None]:
        """Deliver ``channels`` to ``sink``; the result is done once Redis confirmed them."""
        if self._runner is None:
            self._runner = self.loop.create_task(self._run())
        commands, wait = self._book.join(sink, channels)
        return self._send(commands, wait)

    def remove(self, sink: Sink, channels: list[str]) -> Awaitable[None]:
        """Stop delivering ``channels`` to ``sink``; the result is done once Redis confirmed
        the unsubscribe of channels nobody wants any more."""
        commands, wait = self._book.leave(sink, channels)
        return self._send(commands, wait)

    def _send(self, commands: Commands, wait: Wait) -> asyncio.Future[None]:
        if commands:
            self._outgoing.put_nowait(commands)
        wait.handle = self.loop.create_future()
        if wait.done:
            wait.handle.set_result(None)
        return wait.handle

    @staticmethod
    def _wake(waits: list[Wait]) -> None:
        for wait in waits:
            if wait.handle is not None and not wait.handle.done():
                wait.handle.set_result(None)

    # -- the connection --------------------------------------------------------------------

    async def _run(self) -> None:
        """Connect, subscribe what is wanted, read; after a loss, again with backoff."""
        reconnection = Reconnection(logger)
        while True:
            writer = None
            try:
                await self._connection.connect()
                self._outgoing = asyncio.Queue()  # commands decided offline are void
                resubscribe = self._book.connected()
                await self._write(resubscribe)
                reconnection.back(len(resubscribe.subscribe), time.monotonic())
                writer = self.loop.create_task(self._write_forever())
                await self._read_forever()
            except LOST:
                pass
            finally:
                if writer is not None:
                    writer.cancel()
            self._wake(self._book.lost())
            await self._connection.disconnect()
            await asyncio.sleep(reconnection.lost(time.monotonic()))

    async def _write(self, commands: Commands) -> None:
        if commands.unsubscribe:
            await self._connection.send_command("UNSUBSCRIBE", *commands.unsubscribe)
        if commands.subscribe:
            await self._connection.send_command("SUBSCRIBE", *commands.subscribe)

    async def _write_forever(self) -> None:
        while True:
            commands = await self._outgoing.get()
            try:
                await self._write(commands)
            except LOST:  # the reader sees the closed connection and starts over
                await self._connection.disconnect(nowait=True)
                return

    async def _read_forever(self) -> None:
        read = self._connection.read_response
        while True:
            reply = await read(push_request=True)  # with RESP3, messages are pushes
            kind = reply[0]
            if kind == b"message":
                self._fan_out(reply[1], reply[2])
            else:
                self._wake(self._book.confirmed(kind, reply[1]))

    # -- delivery --------------------------------------------------------------------------

    def _fan_out(self, channel: bytes, data: bytes) -> None:
        sinks = self._book.listeners(channel)
        if not sinks:
            return
        delivery = Delivery(channel, data)
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
        """Drop the Redis connection (the process is shutting down)."""
        if self._runner is not None:
            self._runner.cancel()
        await self._connection.disconnect()


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
