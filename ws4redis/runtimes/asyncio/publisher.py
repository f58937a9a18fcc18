"""What clients send, published off the event loop: one thread, so messages keep their
order, and a count of what waits, so that a stalled Redis cannot queue them without bound."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from ws4redis.core.stats import STATS
from ws4redis.runtimes.channels import publish
from ws4redis.subscriber import RedisSubscriber


class Publisher:
    """The publishing thread of an event loop's websockets."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ws4redis-publish")
        self.waiting = 0
        """Client messages handed over and not yet published (or dropped)."""

    def publish(self, subscriber: RedisSubscriber, messages: list[bytes]) -> asyncio.Future[None]:
        """Publish ``messages`` of one client, after everything handed over before."""
        self.waiting += len(messages)
        STATS.publish_waiting += len(messages)
        future = asyncio.wrap_future(self._executor.submit(publish, subscriber, messages))
        future.add_done_callback(lambda _: self._published(len(messages)))
        return future

    def _published(self, count: int) -> None:
        self.waiting -= count
        STATS.publish_waiting -= count

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
