"""The facilities of one ``ws4redis.v1`` connection on a blocking socket (``runserver``,
uWSGI).

The twin of :mod:`ws4redis.runtimes.asyncio.facilities`: the connection's reading thread
runs each request in turn (subscribing blocks it, as publishing does), each facility is a
sink of the process's hub of its own, and what it queues goes on to the connection's relay
under the connection's lock. A facility Django ended is released by the reading thread:
the hub's thread, which finds it ended, must not wait for Redis.
"""

from __future__ import annotations

import logging
import threading

from ws4redis.core.facilities import (
    Multiplex,
    Request,
    RequestError,
    answer,
    forward,
    through_hook,
)
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Delivery, Failure, SocketRelay
from ws4redis.core.stats import STATS
from ws4redis.runtimes.facilities import FacilitySink as BaseSink
from ws4redis.runtimes.facilities import new_multiplex, open_facility
from ws4redis.runtimes.hooks import judged
from ws4redis.runtimes.redis_side import publish
from ws4redis.runtimes.sync.hub import Hub, HubSubscription

logger = logging.getLogger("ws4redis")


class FacilitySink(BaseSink):
    """A facility whose hub is the process's: it queues from the hub's thread."""

    __slots__ = ()

    def push(self, delivery: Delivery) -> bool:
        return self.facilities.delivered(self, delivery)


class Facilities:
    """The facilities of one connection and the requests of its client."""

    def __init__(
        self, relay: SocketRelay, changed: threading.Condition, accepted: Accepted, hub: Hub
    ) -> None:
        self.relay = relay
        self.changed = changed
        """The connection's lock, and how its writer is woken."""
        self.accepted = accepted
        self.hub = hub
        self.multiplex: Multiplex[FacilitySink] = new_multiplex(accepted)
        self.ended: list[tuple[FacilitySink, dict[str, object]]] = []
        """Facilities Django ended, to release and tell the client of."""
        self.closed = False

    # -- from the client (the reading thread) ------------------------------------------------

    def receive(self, messages: list[bytes]) -> None:
        """Requests of the client, in order, each answered (or published); blocks."""
        for message in messages:
            try:
                request = self.multiplex.read(message)
                if request.kind == "subscribe":
                    self._subscribe(request)
                elif request.kind == "unsubscribe":
                    with self.changed:
                        sink = self.multiplex.subscribed(request)
                        del self.multiplex.facilities[sink.name]
                    self._release(sink)
                    self._answer(answer("unsubscribed", request.id, request.facility))
                else:
                    with self.changed:
                        sink = self.multiplex.subscribed(request)
                    self._publish(sink, request)
            except RequestError as error:
                self._answer(error.answer())
            except Exception:
                logger.exception("A request of a ws4redis.v1 client failed")
                self._answer(RequestError(500, "server error").answer())

    def _subscribe(self, request: Request) -> None:
        with self.changed:
            self.multiplex.check_subscribe(request)
        sink = FacilitySink(self, request.facility)
        subscriber, start = open_facility(
            self.accepted,
            request,
            sink,
            lambda: HubSubscription(self.hub, sink),
            STATS,
            self.relay.encode,
        )
        with self.changed:
            if not self.closed:
                sink.subscriber = subscriber
                self.multiplex.facilities[request.facility] = sink
                self.relay.send(answer("subscribed", request.id, request.facility))
                assert sink.relay is not None
                sink.relay.opened(start)
                forward(self.relay, sink.relay, lambda: self._end(sink))
                self.changed.notify()
                return
        subscriber.release()

    def _publish(self, sink: FacilitySink, request: Request) -> None:
        """A publish, or a call, for ``sink``'s facility: through its hook if it has one."""
        assert sink.subscriber is not None
        if through_hook(request, sink.subscriber.publishes, sink.hook is not None):
            assert sink.hook is not None
            name = request.name if request.kind == "call" else None
            verdict = judged(sink.hook, request.data, name, request.id)
            if verdict is None:  # too many wait for the hooks: as when Redis is behind
                with self.changed:
                    self.relay.fail(Failure.BACKED_UP)
                    self.changed.notify()
                return
            if verdict.publish is not None:
                self._offer(sink, verdict.publish)
            if verdict.told is not None:
                self._answer(verdict.told)
        else:
            self._offer(sink, request.data.encode())

    def _offer(self, sink: FacilitySink, data: bytes) -> None:
        relay, subscriber = sink.relay, sink.subscriber
        assert relay is not None and subscriber is not None
        with self.changed:
            accepted = relay.accept(data)  # the facility's echo rule
        if accepted and (failure := publish(subscriber, [data])) is not None:
            with self.changed:
                self.relay.published(0, failure)  # the client is told: closed
                self.changed.notify()

    def _answer(self, message: bytes) -> None:
        with self.changed:
            self.relay.send(message)
            self.changed.notify()

    def release_ended(self) -> None:
        """Release the facilities Django ended, and tell the client."""
        with self.changed:
            ended, self.ended = self.ended, []
        for sink, told in ended:
            self._release(sink)
            self._answer(answer("unsubscribed", None, sink.name, **told))

    @staticmethod
    def _release(sink: FacilitySink) -> None:
        if sink.subscriber is not None:
            sink.subscriber.release()

    # -- from the hub's thread ---------------------------------------------------------------

    def delivered(self, sink: FacilitySink, delivery: Delivery) -> bool:
        with self.changed:
            relay = sink.relay
            delivered = relay is not None and relay.deliver(delivery)
            if delivered and forward(self.relay, relay, lambda: self._end(sink)):  # type: ignore[arg-type]
                self.changed.notify()
        return False

    def _end(self, sink: FacilitySink) -> None:
        """Under the lock: Django ended ``sink``'s facility; the reading thread releases it."""
        if self.multiplex.facilities.get(sink.name) is not sink:
            return
        del self.multiplex.facilities[sink.name]
        failure = sink.relay.failure if sink.relay is not None else None
        told = {"code": failure.code, "reason": failure.reason} if failure else {}
        self.ended.append((sink, told))

    # -- ending ------------------------------------------------------------------------------

    def release(self) -> None:
        """The connection ends: every facility's subscriptions go (once)."""
        with self.changed:
            if self.closed:
                return
            self.closed = True
            sinks = list(self.multiplex.facilities.values()) + [s for s, _ in self.ended]
            self.multiplex.facilities, self.ended = {}, []
        for sink in sinks:
            self._release(sink)
