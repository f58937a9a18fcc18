"""The facilities of one ``ws4redis.v1`` connection on an event loop (``runwebsocket``, ASGI).

The core reads the requests and keeps their order (:mod:`ws4redis.core.facilities`); here
they are run: a subscription is checked and subscribed in a thread
(:func:`ws4redis.runtimes.facilities.open_facility`), its facility then is a sink of the
loop's hub of its own, and what it queues goes on to the connection's relay. The twin of
:mod:`ws4redis.runtimes.sync.facilities`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from functools import partial
from typing import Protocol

from ws4redis.core.facilities import (
    QUEUED,
    Multiplex,
    Request,
    RequestError,
    answer,
    forward,
    through_hook,
)
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Delivery, Relay
from ws4redis.core.stats import STATS
from ws4redis.runtimes.asyncio.hooks import Hooked
from ws4redis.runtimes.asyncio.hub import Hub, HubSubscription, Queueing
from ws4redis.runtimes.asyncio.publisher import Publisher
from ws4redis.runtimes.facilities import FacilitySink as BaseSink
from ws4redis.runtimes.facilities import new_multiplex, open_facility
from ws4redis.runtimes.hooks import Verdict
from ws4redis.runtimes.hubs import CONFIRM_WAIT

logger = logging.getLogger("ws4redis")


class Owner(Protocol):
    """The connection that carries the facilities, as they need it."""

    @property
    def relay(self) -> Relay | None: ...

    @property
    def hub(self) -> Hub | None: ...

    def wanted(self) -> bool:
        """Something was queued for the client: True when the hub must flush the owner."""
        ...

    def flush(self, now: float) -> None:
        """Write what is queued."""
        ...

    def wake(self) -> None:
        """Write what is queued now (an answer, outside of the hub's delivery)."""
        ...


class FacilitySink(Queueing, BaseSink):
    """A facility whose hub is the loop's: it queues on the loop, and its connection writes
    once the hub's round is over."""

    __slots__ = ("hooked", "subscription")

    def __init__(self, facilities: Facilities, name: str) -> None:
        super().__init__(facilities, name)
        self.hooked: Hooked | None = None
        self.subscription: HubSubscription | None = None

    def new_subscription(self) -> HubSubscription:
        owner = self.facilities.owner
        assert owner.hub is not None
        self.subscription = HubSubscription(owner.hub, self)
        return self.subscription

    def push(self, delivery: Delivery) -> bool:
        relay = self.relay
        if relay is None or not relay.deliver(delivery):
            return False
        return self.facilities.forwarded(self)

    def flush(self, now: float) -> None:
        self.facilities.owner.flush(now)


class Facilities:
    """The facilities of one connection and the requests of its client."""

    def __init__(
        self,
        owner: Owner,
        accepted: Accepted,
        publisher: Publisher,
        executor: Executor | None,
        not_published: Callable[[], None],
    ) -> None:
        self.owner = owner
        self.accepted = accepted
        self.publisher = publisher
        self.executor = executor
        self.not_published = not_published
        self.multiplex: Multiplex[FacilitySink] = new_multiplex(accepted)
        self.last_publish: asyncio.Future[int | None] | None = None
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribing: list[asyncio.Future[None]] = []

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` on the loop, kept referenced until done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def relay(self) -> Relay:
        relay = self.owner.relay
        assert relay is not None
        return relay

    # -- from the client -------------------------------------------------------------------

    def receive(self, messages: list[bytes]) -> None:
        """Requests of the client, in order; each is answered (or published)."""
        for message in messages:
            try:
                request = self.multiplex.read(message)
                if request.kind in QUEUED:
                    self.multiplex.take(request)
                else:
                    self._publish(self.multiplex.subscribed(request), request)
            except RequestError as error:
                self.relay.send(error.answer())
        self._next()

    def _publish(self, sink: FacilitySink, request: Request) -> None:
        """A publish, or a call, for ``sink``'s facility: through its hook if it has one."""
        assert sink.subscriber is not None
        if through_hook(request, sink.subscriber.publishes, sink.hooked is not None):
            assert sink.hooked is not None
            name = request.name if request.kind == "call" else None
            verdict = partial(self._verdict, sink)
            if not sink.hooked.offer(request.data, name, request.id, self.relay, verdict):
                self.owner.wake()  # failed: too many wait for the hooks
        else:
            self._offer(sink, request.data.encode())

    def _offer(self, sink: FacilitySink, data: bytes) -> None:
        relay, subscriber = sink.relay, sink.subscriber
        assert relay is not None and subscriber is not None
        if relay.accept(data):  # the facility's echo rule
            publishing = self.publisher.offer(self.relay, subscriber, [data], self.not_published)
            self.last_publish = publishing or self.last_publish

    def _verdict(self, sink: FacilitySink, verdict: Verdict) -> None:
        """What ``sink``'s hook decided about a message of the client."""
        if self.closed:
            return
        if verdict.publish is not None and self.multiplex.facilities.get(sink.name) is sink:
            self._offer(sink, verdict.publish)
        if verdict.told is not None:
            self._answer(verdict.told)

    # -- subscribing, in order -------------------------------------------------------------

    def _next(self) -> None:
        if self.closed:
            return
        request = self.multiplex.next()
        if request is not None:
            self._spawn(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            if request.kind == "subscribe":
                await self._subscribe(request)
            else:
                await self._unsubscribe(request)
        except RequestError as error:
            self._answer(error.answer())
        except Exception:
            logger.exception("Cannot %s facility %r", request.kind, request.facility)
            self._answer(RequestError(500, "server error", request.id, request.facility).answer())
        finally:
            self.multiplex.done()
            self._next()

    async def _subscribe(self, request: Request) -> None:
        self.multiplex.check_subscribe(request)
        sink = FacilitySink(self, request.facility)
        loop = asyncio.get_running_loop()
        subscriber, start = await loop.run_in_executor(
            self.executor,
            open_facility,
            self.accepted,
            request,
            sink,
            sink.new_subscription,
            STATS,
            self.relay.encode,
        )
        if self.closed:
            subscriber.release()
            return
        sink.subscriber = subscriber
        sink.hooked = Hooked(sink.hook) if sink.hook is not None else None
        self.multiplex.facilities[request.facility] = sink
        self.relay.send(answer("subscribed", request.id, request.facility))
        assert sink.relay is not None
        sink.relay.opened(start)
        forward(self.relay, sink.relay, lambda: self._end(sink))
        self.owner.wake()

    async def _unsubscribe(self, request: Request) -> None:
        await self._released(self._forget(self.multiplex.subscribed(request)))
        self._answer(answer("unsubscribed", request.id, request.facility))

    def _forget(self, sink: FacilitySink) -> asyncio.Future[None] | None:
        """Forget ``sink`` and release its subscriptions; what ends once Redis confirmed
        that nothing of it comes any more."""
        del self.multiplex.facilities[sink.name]
        return self._unsubscribe_sink(sink)

    @staticmethod
    def _unsubscribe_sink(sink: FacilitySink) -> asyncio.Future[None] | None:
        if sink.subscriber is not None:
            sink.subscriber.release()
        return sink.subscription.released if sink.subscription else None

    @staticmethod
    async def _released(released: asyncio.Future[None] | None) -> None:
        if released is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(released), CONFIRM_WAIT)

    def _answer(self, message: bytes) -> None:
        if not self.closed:
            self.relay.send(message)
            self.owner.wake()

    # -- from the hub ------------------------------------------------------------------------

    def forwarded(self, sink: FacilitySink) -> bool:
        """``sink`` queued something: on to the connection's relay."""
        assert sink.relay is not None
        if forward(self.relay, sink.relay, lambda: self._end(sink)):
            return self.owner.wanted()
        return False

    def _end(self, sink: FacilitySink) -> None:
        """Django ended ``sink``'s facility: unsubscribe it, and tell the client why. (Called
        while the hub delivers: the subscriptions are released once it is done.)"""
        if self.multiplex.facilities.get(sink.name) is not sink:
            return  # ended already
        del self.multiplex.facilities[sink.name]
        failure = sink.relay.failure if sink.relay is not None else None
        code, reason = (failure.code, failure.reason) if failure else (None, None)

        async def end() -> None:
            await self._released(self._unsubscribe_sink(sink))
            self._answer(answer("unsubscribed", None, sink.name, code=code, reason=reason))

        self._spawn(end())

    # -- ending ------------------------------------------------------------------------------

    def release(self) -> list[asyncio.Future[None]]:
        """The connection ends: every facility's subscriptions go (once); what to wait for
        until Redis confirmed that."""
        if not self.closed:
            self.closed = True
            sinks = list(self.multiplex.facilities.values())
            self._unsubscribing = [f for sink in sinks if (f := self._forget(sink)) is not None]
        return self._unsubscribing
