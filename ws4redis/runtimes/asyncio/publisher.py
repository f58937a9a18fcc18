"""What clients send, published off the event loop: one thread, so messages keep their
order, and a count of what waits (messages and bytes), so that a stalled Redis cannot queue
them without bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ws4redis import settings
from ws4redis.core.relay import PendingLimits, Relay
from ws4redis.core.stats import STATS
from ws4redis.runtimes.redis_side import publish
from ws4redis.subscriber import RedisSubscriber


class Publisher:
    """The publishing thread of an event loop's websockets."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ws4redis-publish")
        self.pending = PendingLimits(pending_bound())
        """Client messages (and their bytes) handed over and not yet published or dropped."""

    @property
    def waiting(self) -> int:
        return self.pending.waiting

    def offer(
        self,
        relay: Relay,
        subscriber: RedisSubscriber,
        messages: list[bytes],
        failed: Callable[[], None],
    ) -> asyncio.Future[int | None] | None:
        """Publish what one client sent, after everything handed over before, as far as it
        fits the bounds: past them ``relay`` is failed with 1013, and None returned when
        nothing fitted. When Redis does not take them, ``relay`` is failed (1013, "message
        not published") and ``failed`` called on the loop, for the runtime to send the
        close."""
        self.pending.max_bytes = pending_bound()
        admitted = relay.admit(messages, self.pending)
        if not admitted:
            return None
        if admitted < len(messages):  # the relay failed: the rest is not published
            messages = messages[:admitted]
        size = sum(map(len, messages))
        future = self.publish(subscriber, messages, size)

        def done(future: asyncio.Future[int | None]) -> None:
            failure = None if future.cancelled() else future.result()
            relay.published(size, failure)
            if failure is not None:
                failed()

        future.add_done_callback(done)
        return future

    def publish(
        self, subscriber: RedisSubscriber, messages: list[bytes], size: int
    ) -> asyncio.Future[int | None]:
        """Publish ``messages`` (``size`` bytes) of one client, after everything handed
        over before; the result is :func:`~ws4redis.runtimes.redis_side.publish`'s."""
        self._count(len(messages), size)
        future = asyncio.wrap_future(self._executor.submit(publish, subscriber, messages))
        future.add_done_callback(lambda _: self._count(-len(messages), -size))
        return future

    def _count(self, count: int, size: int) -> None:
        self.pending.waiting += count
        self.pending.waiting_bytes += size
        STATS.publish_waiting += count
        STATS.publish_waiting_bytes += size

    async def drain(self, deadline: float) -> bool:
        """Wait until what was handed over is published, at the latest until ``deadline``
        (loop time); False when Redis still holds messages up then, and the thread with them
        (the process must not wait for it to exit)."""
        loop = asyncio.get_running_loop()
        while self.waiting and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.waiting:
            return False
        self._executor.shutdown(wait=True)  # idle: returns at once
        return True


def pending_bound() -> int:
    """``WS4REDIS_MAX_PENDING_BYTES``, but at least one message of the largest size a client
    may send (``WS4REDIS_MAX_MESSAGE_SIZE``), which must always be able to go out."""
    return max(settings.WS4REDIS_MAX_PENDING_BYTES, settings.WS4REDIS_MAX_MESSAGE_SIZE)
