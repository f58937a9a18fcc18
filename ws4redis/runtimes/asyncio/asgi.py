"""Websockets under any ASGI server (uvicorn, daphne, hypercorn), next to Django's pages.

The ASGI server owns the socket, the handshake and the framing; this adapter only turns its
events into the core's decisions. Websockets of one event loop share a
:class:`~ws4redis.runtimes.asyncio.hub.Hub`, as under ``runwebsocket``; the difference is a small
send task per websocket while it has messages queued, since ASGI offers no transport to
write to directly.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from django.core.handlers.asgi import ASGIHandler, ASGIRequest

from ws4redis import settings
from ws4redis.core.events import closing_event, headers, wants_events
from ws4redis.core.handshake import SUBPROTOCOL, Rejection
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Delivery, Failure, Relay
from ws4redis.core.websocket import is_text
from ws4redis.runtimes.asyncio.facilities import Facilities
from ws4redis.runtimes.asyncio.hooks import Hooked, act
from ws4redis.runtimes.asyncio.hub import Hub, HubSubscription, Queueing, close_hubs, get_hub
from ws4redis.runtimes.asyncio.opening import open_in_thread
from ws4redis.runtimes.asyncio.publisher import Publisher
from ws4redis.runtimes.hooks import Verdict, text_of
from ws4redis.runtimes.opening import refusal, upgrade_of
from ws4redis.runtimes.posting import answered, publish_request, too_big
from ws4redis.subscriber import RedisSubscriber

logger = logging.getLogger("ws4redis.asgi")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ASGISink(Queueing):
    """A websocket as the hub sees it: messages wait in the relay's outbox until sent.

    ASGI offers no transport to write to, so a small task sends while there is something
    queued; what queues while a send waits for the server's flow control counts against
    ``WS4REDIS_MAX_BUFFER_SIZE`` (see :meth:`~ws4redis.core.relay.Relay.stall`).
    """

    def __init__(self, send: Send, hub: Hub, publisher: Publisher) -> None:
        self.send = send
        self.hub = hub
        self.publisher = publisher
        self.facilities: Facilities | None = None
        self.hooked: Hooked | None = None
        self.relay: Relay | None = None  # made by the opening, before it subscribes
        self.subscriber: RedisSubscriber | None = None
        self.open = False
        self.ended = asyncio.Event()
        self._sending: asyncio.Task[None] | None = None

    def gone(self) -> bool:
        """The server tells a departure only through ``receive``, read once it is open."""
        return False

    def new_subscription(self) -> HubSubscription:
        return HubSubscription(self.hub, self)

    def multiplexed(self, accepted: Accepted) -> None:
        self.facilities = Facilities(self, accepted, self.publisher, None, self.flush)

    def push(self, delivery: Delivery) -> bool:
        return self.relay.deliver(delivery) and self.open  # type: ignore[union-attr]

    def wanted(self) -> bool:
        return self.open

    def wake(self) -> None:
        self.flush()

    def flush(self, now: float | None = None) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.get_running_loop().create_task(self._send_outbox())

    async def _send_outbox(self) -> None:
        relay = self.relay
        assert relay is not None
        try:
            while messages := relay.take_outbox():  # the hub may queue more while we send
                # The server's send returns at once unless its flow control holds it: the
                # hub runs (and queues) only while a send waits for the client.
                relay.stall()
                for message in messages:
                    await self.send(self.message(message))
                relay.written(time.monotonic())
            if relay.failure is not None and not self.ended.is_set():
                self.ended.set()
                await self.send(self.closing(relay.failure))
        except OSError:  # the client went away; the receiving side ends the websocket
            self.ended.set()

    @staticmethod
    def message(message: bytes) -> dict[str, Any]:
        """The ASGI event that sends one message of the outbox."""
        if is_text(message):
            return {"type": "websocket.send", "text": message.decode()}
        return {"type": "websocket.send", "bytes": message}

    @staticmethod
    def closing(failure: Failure) -> dict[str, Any]:
        """The ASGI event that ends the connection with ``failure``."""
        return {"type": "websocket.close", "code": failure.code, "reason": failure.reason}


class EventSink(ASGISink):
    """An event stream as the hub sees it: its events go out as parts of the response body."""

    @staticmethod
    def message(message: bytes) -> dict[str, Any]:
        return {"type": "http.response.body", "body": message, "more_body": True}

    @staticmethod
    def closing(failure: Failure) -> dict[str, Any]:
        body = closing_event(failure.code, failure.reason)
        return {"type": "http.response.body", "body": body, "more_body": False}


class ASGIApplication:
    """``ws4redis.asgi.application``: websockets under ``WEBSOCKET_URL``, Django for the rest."""

    def __init__(self) -> None:
        self._django: ASGIHandler | None = None
        self._publisher = Publisher()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http" and scope["path"].startswith(settings.WEBSOCKET_URL):
            request = ASGIRequest({**scope, "method": scope["method"]}, io.BytesIO())
            if scope["method"] == "POST":
                await _post(scope, receive, send)
            elif wants_events(request.method or "", upgrade_of(request).headers):
                await self._events(request, receive, send)
            else:  # a websocket URL asked for without an upgrade
                await _refuse_http(request, send)
        else:
            if self._django is None:
                self._django = ASGIHandler()
            await self._django(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await close_hubs()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        request = ASGIRequest({**scope, "method": "GET"}, io.BytesIO())
        sink = ASGISink(send, get_hub(), self._publisher)
        start = await open_in_thread(request, sink, framing=False)
        if isinstance(start, Rejection):
            await _reject(scope, send, start)
            return
        subscriber, relay = sink.subscriber, sink.relay
        assert subscriber is not None and relay is not None
        try:
            offered = scope.get("subprotocols") or []
            chosen = SUBPROTOCOL if sink.facilities else offered[0] if offered else None
            await send({"type": "websocket.accept", "subprotocol": chosen})
            relay.opened(start)
            sink.open = True
            sink.flush()  # the persisted messages, and whatever the hub delivered meanwhile
            await self._relay(receive, sink, subscriber)
        finally:
            subscriber.release()
            if sink.facilities is not None:
                sink.facilities.release()

    async def _events(self, request: ASGIRequest, receive: Receive, send: Send) -> None:
        """An event stream (:mod:`ws4redis.core.events`): opened as a websocket is, its
        events sent as the parts of one response."""
        sink = EventSink(send, get_hub(), self._publisher)
        start = await open_in_thread(request, sink, framing=False)
        if isinstance(start, Rejection):
            await _answer(send, start)
            return
        subscriber, relay = sink.subscriber, sink.relay
        assert subscriber is not None and relay is not None
        try:
            origin = upgrade_of(request).headers.get("Origin")
            fields = [(name.lower().encode(), value.encode()) for name, value in headers(origin)]
            await send({"type": "http.response.start", "status": 200, "headers": fields})
            relay.opened(start)
            sink.open = True
            sink.flush()
            await self._relay(receive, sink, subscriber)
        finally:
            subscriber.release()

    async def _relay(self, receive: Receive, sink: ASGISink, subscriber: RedisSubscriber) -> None:
        loop = asyncio.get_running_loop()
        relay = sink.relay
        assert relay is not None
        receiving: asyncio.Future[dict[str, Any]] | None = None
        ended = loop.create_task(sink.ended.wait())
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(receive())
                due = relay.next_tick()
                timeout = None if due is None else max(due - time.monotonic(), 0)
                await asyncio.wait((receiving, ended), timeout=timeout,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if ended.done():
                    return
                if not receiving.done():
                    if relay.tick(time.monotonic()):
                        sink.flush()
                    continue
                message, receiving = receiving.result(), None
                if message["type"] in ("websocket.disconnect", "http.disconnect"):
                    return
                if message["type"] != "websocket.receive":
                    continue
                text = message.get("text")
                data = text.encode() if text is not None else message.get("bytes") or b""
                publishing = relay.receive_message(data)
                if publishing is not None and sink.facilities is not None:
                    sink.facilities.receive([publishing])
                elif publishing is not None and sink.hooked is not None:
                    judged = partial(self._judged, sink, subscriber)
                    sink.hooked.offer(text_of(publishing), None, None, relay, judged)
                elif publishing is not None:
                    self._publisher.offer(relay, subscriber, [publishing], sink.flush)
                if relay.failure is not None or relay.outbox:
                    sink.flush()  # sends the close, or answers
        finally:
            ended.cancel()
            if receiving is not None:
                receiving.cancel()

    def _judged(self, sink: ASGISink, subscriber: RedisSubscriber, verdict: Verdict) -> None:
        """The hook of its facility judged a message of the client."""
        assert sink.relay is not None
        act(verdict, sink.relay, subscriber, self._publisher, sink.flush)
        sink.flush()


async def _refuse_http(request: ASGIRequest, send: Send) -> None:
    """The core's answer to a plain HTTP request for a websocket URL (400, 426…), where
    Django would only have a 404 page."""
    rejection = refusal(request)
    if rejection is None:  # an upgrade the server did not treat as one
        rejection = Rejection(400, "The server did not accept this upgrade request.\n")
    await _answer(send, rejection)


async def _post(scope: Scope, receive: Receive, send: Send) -> None:
    """A message of an event stream's client (:mod:`ws4redis.runtimes.posting`): its body
    read up to the size limit, published in a thread."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left
        body += message.get("body", b"")
        if (rejection := too_big(len(body))) is not None:
            await _answer(send, rejection)
            return
        if not message.get("more_body"):
            break
    request = ASGIRequest({**scope}, io.BytesIO(body))
    status, answer = await asyncio.to_thread(publish_request, request)
    _line, headers = answered(status, answer)
    raw = [(name.lower().encode(), value.encode()) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": answer})


async def _answer(send: Send, rejection: Rejection) -> None:
    """``rejection`` as a plain HTTP response."""
    await send(
        {
            "type": "http.response.start",
            "status": rejection.status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(rejection.body)).encode()),
                *((name.encode(), value.encode()) for name, value in rejection.headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": rejection.body})


async def _reject(scope: Scope, send: Send, rejection: Rejection) -> None:
    """An HTTP answer where the server supports it (the websocket.http.response extension),
    else a close before accepting, which servers answer with 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": rejection.status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    *((name.encode(), value.encode()) for name, value in rejection.headers),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": rejection.body})
    else:
        await send({"type": "websocket.close", "code": 1008})
