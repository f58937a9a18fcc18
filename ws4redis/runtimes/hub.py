"""One Redis subscription per process, shared by every websocket of an asyncio runtime.

The original opened a Redis connection per websocket. Here a process has one: a channel is
subscribed when its first local websocket needs it and unsubscribed when the last one
leaves. A message is framed once and the same bytes are handed to every local subscriber;
all the frames a websocket gets from one read of Redis go out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import redis.asyncio
import redis.asyncio.retry
import redis.exceptions
from redis.backoff import NoBackoff

from ws4redis.core.membership import Membership, Reconnection
from ws4redis.core.relay import Relay, frame_message
from ws4redis.subscriber import CONFIRM_WAIT, SharedSubscription

logger = logging.getLogger("ws4redis.hub")


class Sink(Protocol):
    """A local websocket as the hub sees it."""

    relay: Relay

    def push(self, data: bytes, frame: bytes) -> bool:
        """Take a message (raw and framed); True when the sink needs a :meth:`flush`."""
        ...

    def flush(self, now: float) -> None:
        """Write what was pushed since the last flush (``now``: monotonic seconds)."""
        ...


class Hub:
    """The process's Redis subscription and the local websockets listening on each channel."""

    def __init__(self, connection_kwargs: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        # No retries inside redis-py: a lost connection surfaces at once, and the reader
        # below reconnects with its own backoff and says so in the log.
        no_retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
        self._pubsub = redis.asyncio.Redis(**connection_kwargs, retry=no_retry).pubsub()
        self._tasks: set[asyncio.Task[None]] = set()
        self._members: Membership[Sink] = Membership()
        self._confirmations: dict[tuple[bytes, bytes], asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._dirty: list[Sink] = []
        self._flush_scheduled = False
        self._reader: asyncio.Task[None] | None = None

    # -- membership ------------------------------------------------------------------------

    async def add(self, sink: Sink, channels: list[str]) -> None:
        """Deliver ``channels`` to ``sink``; returns once Redis confirmed new subscriptions."""
        new = self._members.join(sink, channels)
        if new:
            await self._subscribe(new)

    def remove(self, sink: Sink, channels: list[str]) -> asyncio.Future[None] | None:
        """Stop delivering ``channels`` to ``sink``. Channels nobody wants any more are
        unsubscribed; the returned future ends when Redis confirmed that."""
        gone = self._members.leave(sink, channels)
        if not gone:
            return None
        task = self.loop.create_task(self._unsubscribe(gone))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _expect(self, kind: bytes, keys: list[bytes]) -> list[asyncio.Future[None]]:
        """Futures resolved by the reader when Redis confirms ``kind`` for each key."""
        return [self._confirmations.setdefault((kind, k), self.loop.create_future()) for k in keys]

    async def _subscribe(self, keys: list[bytes]) -> None:
        # The lock orders SUBSCRIBE and UNSUBSCRIBE as the sinks came and went.
        async with self._lock:
            keys = [k for k in keys if self._members.wanted(k) and k not in self._pubsub.channels]
            if not keys:
                return
            confirmed = self._expect(b"subscribe", keys)
            await self._pubsub.subscribe(*keys)
            if self._reader is None:
                self._reader = self.loop.create_task(self._read_forever())
        await asyncio.wait_for(asyncio.gather(*confirmed), CONFIRM_WAIT)

    async def _unsubscribe(self, keys: list[bytes]) -> None:
        try:
            async with self._lock:
                keys = [
                    k for k in keys if not self._members.wanted(k) and k in self._pubsub.channels
                ]
                if not keys:
                    return
                confirmed = self._expect(b"unsubscribe", keys)
                await self._pubsub.unsubscribe(*keys)
            await asyncio.wait_for(asyncio.gather(*confirmed), CONFIRM_WAIT)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            logger.warning("UNSUBSCRIBE failed (%s); dropped locally", exc)
            for key in keys:  # so that a reconnect does not subscribe them again
                self._pubsub.channels.pop(key, None)

    # -- delivery --------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        """Read Redis forever; after a lost connection, reconnect with backoff.

        redis-py resubscribes every channel when the connection comes back.
        """
        reconnection = Reconnection(logger)
        while True:
            try:
                reply = await self._pubsub.parse_response(block=True)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                await asyncio.sleep(reconnection.lost())
                continue
            reconnection.working(self._members)
            if reply[0] == b"message":
                self._fan_out(reply[1], reply[2])
            else:
                await self._pubsub.handle_message(reply)
                future = self._confirmations.pop((reply[0], reply[1]), None)
                if future is not None and not future.done():
                    future.set_result(None)

    def _fan_out(self, channel: bytes, data: bytes) -> None:
        sinks = self._members.listeners(channel)
        if not sinks:
            return
        frame = frame_message(data)
        dirty = self._dirty
        for sink in sinks:
            if sink.push(data, frame):
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
        """Give pending unsubscribes a moment, then drop the Redis connection."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CONFIRM_WAIT)
        if self._reader is not None:
            self._reader.cancel()
        await self._pubsub.aclose()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class HubSubscription(SharedSubscription):
    """The subscription of one websocket's subscriber when a :class:`Hub` serves the process.

    ``subscribe`` runs in the thread that opens the websocket and waits for the hub;
    ``unsubscribe`` runs on the loop and leaves in ``released`` when Redis confirmed it.
    """

    def __init__(self, hub: Hub, sink: Sink) -> None:
        super().__init__()
        self.hub = hub
        self.sink = sink
        self.released: asyncio.Future[None] | None = None

    def _add(self, names: list[str]) -> None:
        adding = self.hub.add(self.sink, names)
        if _on_loop(self.hub.loop):
            self.hub.loop.create_task(adding)
        else:
            asyncio.run_coroutine_threadsafe(adding, self.hub.loop).result(CONFIRM_WAIT * 2)

    def _remove(self, names: list[str]) -> None:
        if _on_loop(self.hub.loop):
            self.released = self.hub.remove(self.sink, names)
        else:
            self.hub.loop.call_soon_threadsafe(self.hub.remove, self.sink, names)
