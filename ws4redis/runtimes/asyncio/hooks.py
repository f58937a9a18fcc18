"""A facility's hook on an event loop: what one client sends goes through it in order, each
message in a thread of the hook pool (:mod:`ws4redis.runtimes.hooks`), and its verdict is
acted on back on the loop. The twin of the blocking runtimes'
:func:`~ws4redis.runtimes.hooks.judged`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ws4redis import settings
from ws4redis.core.facilities import Id
from ws4redis.core.relay import Failure, Relay
from ws4redis.runtimes.asyncio.publisher import Publisher
from ws4redis.runtimes.hooks import Hook, Verdict, submit, timed_out
from ws4redis.subscriber import RedisSubscriber


class Hooked:
    """The hook of one facility of one connection, and the last of its verdicts to come."""

    __slots__ = ("hook", "last")

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        self.last: asyncio.Task[None] | None = None

    def offer(
        self,
        data: Any,
        call: str | None,
        request_id: Id,
        relay: Relay,
        then: Callable[[Verdict], None],
    ) -> bool:
        """Judge what the client sent; ``then`` gets the verdict, after those of everything
        the client sent before. False when too many calls wait for the pool: ``relay`` (the
        connection's) is failed with 1013, as when Redis is behind."""
        judging = submit(self.hook, data, call, request_id)
        if judging is None:
            relay.fail(Failure.BACKED_UP)
            return False
        verdict = self._verdict(self.last, asyncio.wrap_future(judging), request_id, then)
        self.last = asyncio.get_running_loop().create_task(verdict)
        return True

    async def _verdict(
        self,
        previous: asyncio.Task[None] | None,
        judging: asyncio.Future[Verdict],
        request_id: Id,
        then: Callable[[Verdict], None],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            verdict = await asyncio.wait_for(
                asyncio.shield(judging), settings.WS4REDIS_HOOK_TIMEOUT
            )
        except TimeoutError:
            verdict = timed_out(self.hook, request_id)
        then(verdict)


def act(
    verdict: Verdict,
    relay: Relay,
    subscriber: RedisSubscriber,
    publisher: Publisher,
    not_published: Callable[[], None],
) -> asyncio.Future[int | None] | None:
    """For a one-facility websocket: publish what its hook let through (the publishing, if
    any, as :meth:`Publisher.offer` returns it) and queue what the sender is told."""
    publishing = None
    if verdict.publish is not None and relay.accept(verdict.publish):
        publishing = publisher.offer(relay, subscriber, [verdict.publish], not_published)
    if verdict.told is not None:
        relay.send(verdict.told)
    return publishing
