"""The production websocket loop: one asyncio process holding thousands of websockets.

Each websocket is an ``asyncio.Protocol`` (no task, no queue per socket). Opening one runs the
core's checks that may block (sessions, users, groups) in a thread and subscribes on the
loop, which reads the persisted messages of all openings at once; afterwards the loop only
moves bytes: the client's through its :class:`~ws4redis.core.relay.SocketRelay`, Redis
messages from the loop's :class:`~ws4redis.runtimes.asyncio.hub.Hub` straight to the
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import io
import logging
import os
import resource
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from django.core.handlers.wsgi import WSGIRequest
from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from ws4redis import settings
from ws4redis.bus.pool import aget_redis, get_many
from ws4redis.core.drain import DrainSchedule
from ws4redis.core.handshake import Rejection, over_capacity
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Delivery, SocketRelay, Start
from ws4redis.runtimes.asyncio.facilities import Facilities
from ws4redis.runtimes.asyncio.hooks import Hooked, act
from ws4redis.runtimes.asyncio.hub import Hub, HubSubscription, close_hubs, get_hub
from ws4redis.runtimes.asyncio.opening import GONE, decide, open_in_thread, subscribed
from ws4redis.runtimes.asyncio.posting import PostReader
from ws4redis.runtimes.asyncio.publisher import Publisher
from ws4redis.runtimes.hooks import Verdict, text_of
from ws4redis.runtimes.hubs import CONFIRM_WAIT
from ws4redis.runtimes.opening import PARSED_HEADERS, may_block
from ws4redis.runtimes.posting import answered, publish_request
from ws4redis.runtimes.redis_side import control_of, failed, new_subscriber, opened
from ws4redis.subscriber import RedisSubscriber

logger = logging.getLogger("ws4redis.server")

SHUTDOWN_GRACE = 5.0
"""Seconds clients get to answer the 1001 close on shutdown before they are cut off."""
SLOW_CLIENT_GRACE = 1.0
"""Seconds a client closed for not reading keeps its buffer before the socket is aborted."""
TICK_SCAN = 1.0
"""Seconds between two looks for websockets due a heartbeat or a keepalive ping."""
YOUNG_OBJECTS = 10_000
"""Allocations (net of what is freed) between two passes of the garbage collector over the
youngest objects; Python's default is 700. Every websocket keeps some twenty objects for
as long as it is open, so with the default a pass came every few dozen handshakes, each
surviving object was scanned again by the older passes, and a full pass (every open
websocket's objects) came each time their number grew by a quarter: some 80 µs of each
handshake while 10,000 clients connect, against 30 µs now. Little is cyclic garbage here,
so waiting longer between passes leaves at most a few megabytes unreclaimed meanwhile."""
READ_SPACING = 0.01
"""Seconds between the starts of two reads of persisted messages (:class:`PersistedReads`):
at most what an opening under load waits for its batch beyond the read itself."""
DESCRIPTOR_RESERVE = 64
"""File descriptors kept free beyond the connection cap: Redis, the database, log files, and
the connections that are only told 503."""


def capacity() -> int:
    """``WS4REDIS_MAX_CONNECTIONS``, lowered to what the process's descriptor limit allows."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fit = soft - DESCRIPTOR_RESERVE if soft != resource.RLIM_INFINITY else soft
    return max(1, min(settings.WS4REDIS_MAX_CONNECTIONS, fit))


def wsgi_request(request: Request, transport: asyncio.Transport, body: bytes = b"") -> WSGIRequest:
    """A Django request for a parsed handshake (or ``POST``, with its ``body``), so the core
    sees what a WSGI server gives."""
    url = urlsplit(request.path)
    peer = transport.get_extra_info("peername") or ("", 0)
    local = transport.get_extra_info("sockname") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(url.path).decode("iso-8859-1"),
        "QUERY_STRING": url.query,
        "SERVER_NAME": str(local[0]),
        "SERVER_PORT": str(local[1]),
        "SERVER_PROTOCOL": request.protocol,
        "REMOTE_ADDR": str(peer[0]),
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
    }
    given = len(environ)
    for name, value in request.headers.raw_items():
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
        given += 1
    if len(environ) == given:  # no name given twice: the parsed headers need no merging
        environ[PARSED_HEADERS] = request.headers
    return WSGIRequest(environ)


class WebsocketServer:
    """Listens on one address; owns the open websockets and their threads."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.ticking: set[Connection] = set()
        # Opening a websocket may query sessions and users: threads keep that off the loop.
        self.openers = ThreadPoolExecutor(8, thread_name_prefix="ws4redis-open")
        self.persisted = PersistedReads()
        self.publisher = Publisher()
        self._server: asyncio.Server | None = None
        self._ticks: asyncio.Task[None] | None = None
        self.capacity = capacity()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Start listening; returns the port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, reuse_port=reuse_port or None, backlog=4096
        )
        self._ticks = loop.create_task(self._tick())
        return self._server.sockets[0].getsockname()[1]

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SCAN)
            now = time.monotonic()
            for connection in list(self.ticking):
                connection.tick(now)

    async def drain(self, window: float, hurry: asyncio.Event) -> None:
        """Stop accepting at once, then close the open websockets with 1001 spread evenly
        over ``window`` seconds (:class:`~ws4redis.core.drain.DrainSchedule`), so their
        clients come back to the other servers a few at a time; until its turn, a websocket
        keeps receiving. ``hurry`` being set ends the drain early (:meth:`shutdown` then
        closes the rest at once)."""
        if self._server is not None:
            # The listening socket goes now: the kernel refuses new clients, or hands them
            # to the other workers on the port, while these websockets drain.
            self._server.close()
        waiting = []
        for connection in list(self.connections):
            if connection.phase is OPEN:
                waiting.append(connection)
            else:  # not a websocket yet: its client retries elsewhere at once
                connection.going_away()
        loop = asyncio.get_running_loop()
        schedule = DrainSchedule(len(waiting), window, loop.time())
        while not hurry.is_set():
            for _ in range(schedule.due(loop.time())):
                connection = waiting.pop()
                if connection in self.connections:  # else its client left meanwhile
                    connection.going_away()
            at = schedule.next_at()
            if at is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), max(0.0, at - loop.time()))

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> bool:
        """Stop accepting, close every websocket with 1001, publish what clients sent; all
        within ``grace`` seconds. False when Redis still held client messages up then."""
        if self._server is not None:
            self._server.close()
        if self._ticks is not None:
            self._ticks.cancel()
        for connection in list(self.connections):
            connection.going_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        await close_hubs()
        self.openers.shutdown(wait=False, cancel_futures=True)
        if await self.publisher.drain(deadline):
            return True
        logger.warning("Redis did not take %d client message(s) in time; they are dropped",
                       self.publisher.waiting)  # fmt: skip
        return False


class RequestParser:
    """The HTTP request of a connection, parsed as it arrives by ``websockets``' own request
    parser, without a whole ``ServerProtocol`` per connection (its parser generators, ids,
    queues), which only a rejected or malformed request needs."""

    __slots__ = ("_parser", "_reader")

    def __init__(self) -> None:
        self._reader = StreamReader()
        self._parser = Request.parse(self._reader.read_line)

    def feed(self, data: bytes) -> Request | None:
        """The request once it is complete, else None; raises what the parser raises for a
        malformed one."""
        self._reader.feed_data(data)
        try:
            next(self._parser)
        except StopIteration as done:
            return done.value
        return None


class PersistedReads:
    """The persisted messages of the websockets that open on the loop, read with one MGET
    for all of them that ask while the previous read is in flight (or waits its turn).

    Thousands of clients connecting at once to the same channels then cost Redis one round
    trip per batch instead of one each. The read is the loop's own (its ``redis.asyncio``
    client): a thread would wait for the GIL while the loop is busy opening the others,
    up to the switch interval each time it needs it, and every opening of the batch would
    wait with it. A websocket asks once its subscriptions are confirmed, and the batch it
    joins starts no earlier: its persisted messages are read after it subscribed, as the
    blocking path reads them.

    Reads start at least ``spacing`` seconds apart (:data:`READ_SPACING`): while clients
    connect faster than one per read, each read then serves a window's worth of openings
    instead of the few that asked during the last round trip (a read costs the loop some
    100-250 µs of redis-py and its wakeups, which every opening of its batch shares).
    """

    def __init__(self, spacing: float = READ_SPACING) -> None:
        self._asked: list[tuple[list[str], asyncio.Future[list[bytes | None]]]] = []
        self._reading = False  # a read is in flight, or waits for its turn
        self._spacing = spacing
        self._started = -spacing

    def read(self, channels: list[str]) -> asyncio.Future[list[bytes | None]]:
        """The stored value of each of ``channels`` (None where nothing is stored)."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._asked.append((channels, answer))
        if not self._reading:
            self._reading = True
            self._when_spaced(loop)
        return answer

    def _when_spaced(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the next read now, or ``spacing`` after the last one started."""
        wait = self._started + self._spacing - loop.time()
        if wait > 0:
            loop.call_later(wait, self._next)
        else:
            self._next()

    def _next(self) -> None:
        asked, self._asked = self._asked, []
        keys = list(dict.fromkeys(key for channels, _ in asked for key in channels))
        self._started = asyncio.get_running_loop().time()
        reading = asyncio.ensure_future(_mget(keys))
        reading.add_done_callback(lambda done: self._answer(asked, keys, done))

    def _answer(
        self,
        asked: list[tuple[list[str], asyncio.Future[list[bytes | None]]]],
        keys: list[str],
        done: asyncio.Future[list[bytes | None]],
    ) -> None:
        if done.cancelled():  # the server is shutting down
            self._reading = False
            for _, answer in asked:
                answer.cancel()
            return
        error = done.exception()
        values = {} if error is not None else dict(zip(keys, done.result(), strict=True))
        for channels, answer in asked:
            if answer.done():
                continue
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result([values[channel] for channel in channels])
        self._reading = bool(self._asked)
        if self._reading:
            self._when_spaced(asyncio.get_running_loop())


async def _mget(keys: list[str]) -> list[bytes | None]:
    """``keys``' values (bytes: responses are not decoded), with the loop's client."""
    values: list[bytes | None] = await get_many(aget_redis(), keys)
    return values


class LoopSubscription(HubSubscription):
    """The subscription of a websocket that opens on the loop: subscribing only names the
    channels (which may happen in a thread, where a session's channels are looked up), and
    :meth:`joined`, on the loop, joins them to the hub: no thread blocks until the loop had
    its turn.

    It is its own factory for the subscriber (``pubsub_factory``): no closure per websocket.
    """

    __slots__ = ()

    def __call__(self) -> LoopSubscription:
        return self

    def _add(self, names: list[str]) -> None:
        """Nothing yet: the names are in ``channels`` until :meth:`joined`."""

    async def joined(self) -> None:
        """Join the hub to the channels named so far, until Redis confirmed them
        (TimeoutError after ``CONFIRM_WAIT``). A channel the loop already listens to is
        confirmed at once, and then nothing is scheduled."""
        if not self.channels:
            return
        joining = self.hub.add(self.sink, list(self.channels))
        if not joining.done():  # type: ignore[attr-defined]
            await asyncio.wait_for(joining, CONFIRM_WAIT)


class Phase(enum.Enum):
    """Where a :class:`Connection` is; what the client sends is handled by it."""

    REQUEST = enum.auto()
    """Its HTTP request is being read."""
    OPENING = enum.auto()
    """Being decided and subscribed; what the client sends waits for the relay."""
    OPEN = enum.auto()
    """A websocket."""
    ANSWERED = enum.auto()
    """Refused (or its request malformed) and answered over HTTP; the socket closes."""


REQUEST, OPENING, OPEN, ANSWERED = Phase
"""The phases by name: CPython 3.11 looks an enum member up through its class at each use
(some 50 ns), and the delivery paths compare a phase per websocket and message."""


class Connection(asyncio.Protocol):
    """One client: first an HTTP handshake, then a websocket fed by the hub.

    Slots: a process holds one per websocket, tens of thousands of them.
    """

    __slots__ = (
        "deadline",
        "dirty",
        "early",
        "facilities",
        "handshake",
        "hooked",
        "hub",
        "last_publish",
        "opening",
        "phase",
        "post",
        "relay",
        "server",
        "subscriber",
        "subscription",
        "transport",
    )  # fmt: skip

    def __init__(self, server: WebsocketServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.handshake: RequestParser | None = RequestParser()
        self.relay: SocketRelay | None = None
        self.subscriber: RedisSubscriber | None = None
        self.hub: Hub | None = None
        self.subscription: HubSubscription | None = None
        self.last_publish: asyncio.Future[int | None] | None = None
        self.phase = REQUEST
        self.opening: asyncio.Task[Rejection | Start] | None = None
        self.dirty = False
        self.early = b""  # what the client sent before its websocket was open
        self.deadline: asyncio.TimerHandle | None = None
        self.facilities: Facilities | None = None
        self.hooked: Hooked | None = None
        self.post: PostReader | None = None

    # -- asyncio callbacks ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.server.connections.add(self)
        # A request not complete in time (an idle socket, one header byte at a time) is cut.
        self.deadline = asyncio.get_running_loop().call_later(
            settings.WS4REDIS_HANDSHAKE_TIMEOUT, self._handshake_expired
        )

    def _handshake_expired(self) -> None:
        if self.phase is REQUEST and self.transport is not None:
            logger.info("Closing a connection whose request did not arrive in time")
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.phase is OPEN:
            assert self.relay is not None
            relay, publisher, subscriber = self.relay, self.server.publisher, self.subscriber
            messages = relay.receive_data(data)
            if self.facilities is not None:
                self.facilities.receive(messages)
            elif messages and subscriber is not None and self.hooked is not None:
                for message in messages:
                    if not self.hooked.offer(text_of(message), None, None, relay, self._judged):
                        break  # failed: too many wait for the hooks
            elif messages and subscriber is not None:
                publishing = publisher.offer(relay, subscriber, messages, self._not_published)
                self.last_publish = publishing or self.last_publish
            self._write_protocol_output()
        elif self.phase is REQUEST:
            self._receive_handshake(data)
        else:  # opening (or answered): kept for the relay, as much as a client may leave unread
            self.early += data
            if len(self.early) > settings.WS4REDIS_MAX_BUFFER_SIZE:
                self.abort()

    def _judged(self, verdict: Verdict) -> None:
        """The hook of its facility judged a message of the client."""
        relay, subscriber = self.relay, self.subscriber
        if relay is None or subscriber is None or self.gone():
            return
        publishing = act(verdict, relay, subscriber, self.server.publisher, self._not_published)
        self.last_publish = publishing or self.last_publish
        self._write_protocol_output()

    def _not_published(self) -> None:
        """Redis did not take what the client sent: its relay is failed, send the close."""
        if self.transport is not None and not self.transport.is_closing():
            self._write_protocol_output()

    def eof_received(self) -> bool | None:
        if self.phase is OPEN:
            assert self.relay is not None
            self.relay.receive_eof()
            self._write_protocol_output()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.server.connections.discard(self)
        self.server.ticking.discard(self)
        self._release()

    # -- opening -------------------------------------------------------------------------------

    def _receive_handshake(self, data: bytes) -> None:
        self.early += data
        if self.post is not None or self.early.startswith(b"POST "):
            self._receive_post(data if self.post is not None else self.early)
            return
        assert self.handshake is not None
        try:
            request = self.handshake.feed(data)
        except Exception:
            # Malformed: websockets' own protocol answers it as it would have (414, 431, or
            # just closing), from every byte received so far.
            answer = ServerProtocol()
            answer.receive_data(self.early)
            self.handshake, self.phase = None, ANSWERED
            self._write(answer.data_to_send())
            return
        if request is None:
            return
        # Frames may follow the request in the same packet: the relay's protocol gets their
        # bytes once the websocket is open (the handshake's parser is done with them).
        self.early = self.early[self.early.index(b"\r\n\r\n") + 4 :]
        self.handshake, self.phase = None, OPENING
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        full = over_capacity(len(self.server.connections), self.server.capacity)
        if full is not None:
            self.phase = ANSWERED
            self._reject(full)
            return
        django_request = wsgi_request(request, self.transport)  # type: ignore[arg-type]
        self.hub = get_hub()
        loop = asyncio.get_running_loop()
        opening: asyncio.Future[Rejection | Start]
        if settings.load_callable("WS4REDIS_SUBSCRIBER") is not RedisSubscriber:
            opening = open_in_thread(
                django_request, self, framing=True, executor=self.server.openers
            )
        else:
            opening = self.opening = loop.create_task(
                self._open_on_loop(django_request, may_block(django_request))
            )
        opening.add_done_callback(self._opened)

    def _receive_post(self, data: bytes) -> None:
        """A message of an event stream's client: read, then published in a thread."""
        if self.post is None:
            self.handshake, self.post = None, PostReader()
        outcome = self.post.feed(data)
        if outcome is None:
            return
        self.phase = ANSWERED
        if self.deadline is not None:
            self.deadline.cancel()
        if isinstance(outcome, Rejection):
            self._reject(outcome)
            return
        request = wsgi_request(outcome, self.transport, bytes(self.post.body))  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        answering = loop.run_in_executor(self.server.openers, publish_request, request)
        answering.add_done_callback(self._posted)

    def _posted(self, done: asyncio.Future[tuple[int, bytes]]) -> None:
        if done.cancelled():
            return
        status, body = done.result()
        line, headers = answered(status, body)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._write([f"HTTP/1.1 {line}\r\n{head}Connection: close\r\n\r\n".encode() + body, b""])

    def gone(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def _open_on_loop(self, request: WSGIRequest, blocking: bool) -> Rejection | Start:
        """The opening sequence (:mod:`ws4redis.runtimes.asyncio.opening`) for the default
        subscriber, subscribed on the loop: no thread waits for the hub, and the persisted
        messages come from a read shared with the other websockets opening meanwhile
        (:class:`PersistedReads`). Deciding and naming the channels goes to a thread when it
        may block (``blocking``: :func:`~ws4redis.runtimes.opening.may_block`; a session
        cookie's session, user and groups are looked up), else it is done here too. Only
        recovering what a client missed (``recover``) still reads in a thread."""
        loop = asyncio.get_running_loop()
        assert self.hub is not None
        subscription = self.subscription = LoopSubscription(self.hub, self)
        if blocking:
            named = await loop.run_in_executor(
                self.server.openers, self._named, request, subscription
            )
        else:
            named = self._named(request, subscription)
        if isinstance(named, Accepted):
            return await loop.run_in_executor(self.server.openers, subscribed, named, self)
        if not isinstance(named, tuple):
            return named
        outcome, subscriber = named
        try:
            await subscription.joined()
            channels = subscriber.subscribed_channels
            stored = await self.server.persisted.read(channels) if channels else []
            opened(subscriber, outcome.request)
        except Exception as exc:
            return failed(outcome, exc, subscriber)
        self.subscriber = subscriber
        return Start([message for message in stored if message], control=control_of(subscriber))

    def _named(
        self, request: WSGIRequest, subscription: LoopSubscription
    ) -> Rejection | Accepted | tuple[Accepted, RedisSubscriber]:
        """Decide ``request`` and have its subscriber name its channels in ``subscription``:
        the part of an opening that may block. An opening that recovers what its client
        missed comes back :class:`Accepted`, to be subscribed in a thread."""
        if self.gone():
            return GONE  # the client left while this waited for a thread: skip the work
        outcome = decide(request, self, framing=True)
        if not isinstance(outcome, Accepted) or outcome.since is not None:
            return outcome
        subscriber = None
        try:
            subscriber = new_subscriber(subscription)
            subscriber.set_pubsub_channels(outcome.request, outcome.channels)
        except Exception as exc:
            return failed(outcome, exc, subscriber)
        return outcome, subscriber

    def _opened(self, done: asyncio.Future[Any]) -> None:
        self.opening = None
        if done.cancelled():
            return
        outcome = done.result()
        if isinstance(outcome, Rejection):
            self.relay, self.phase = None, ANSWERED
            self._reject(outcome)
            return
        relay = self.relay
        assert relay is not None
        if self.transport is None or self.transport.is_closing():
            self._release()
            return
        relay.opened(outcome)
        self.phase = OPEN
        # From now on the transport tells (pause_writing) when the client falls behind.
        self.transport.set_write_buffer_limits(high=relay.max_buffer)
        if relay.next_tick() is not None:
            self.server.ticking.add(self)
        self._write_protocol_output()  # the 101 response, the persisted messages and the rest
        if self.early:
            early, self.early = self.early, b""
            self.data_received(early)

    def multiplexed(self, accepted: Accepted) -> None:
        server = self.server
        self.facilities = Facilities(
            self, accepted, server.publisher, server.openers, self._not_published
        )

    def _reject(self, rejection: Rejection) -> None:
        handshake = ServerProtocol()  # made for the answer: most connections never need one
        response = handshake.reject(rejection.status, rejection.text)
        for name, value in rejection.headers:
            response.headers[name] = value
        handshake.send_response(response)
        self._write(handshake.data_to_send())

    # -- writing -------------------------------------------------------------------------------

    def deliver(self, delivery: Delivery, now: float) -> None:
        """From the hub, a message alone in its round of the loop (a steady stream): its
        frame is written at once when the relay says nothing waits before it (one call per
        websocket, no queue), else it is queued and flushed as :meth:`push` and
        :meth:`flush` do. A client that stops reading is caught by :meth:`pause_writing`.

        The hot path of a steady stream: one call per websocket and message.
        """
        transport, relay = self.transport, self.relay
        frame = None
        if not self.dirty and self.phase is OPEN and not transport.is_closing():  # type: ignore[union-attr]
            frame = relay.direct(delivery, now)  # type: ignore[union-attr]
        if frame is not None:
            transport.write(frame)  # type: ignore[union-attr]
        elif self.push(delivery):
            self.flush(now)

    def push(self, delivery: Delivery) -> bool:
        """From the hub: queue a message; True when this connection needs a flush."""
        if self.relay.deliver(delivery) and not self.dirty and self.phase is OPEN:  # type: ignore[union-attr]
            self.dirty = True
            return True
        return False

    def wanted(self) -> bool:
        """One of its facilities queued a message: True when it needs a flush."""
        if not self.dirty and self.phase is OPEN:
            self.dirty = True
            return True
        return False

    def wake(self) -> None:
        """Write what its facilities queued outside of a delivery (their answers)."""
        if self.relay is not None and self.phase is OPEN:
            self._write_protocol_output()

    def flush(self, now: float) -> None:
        """Write every queued frame at once; close a client that stopped reading.

        Hot path: one call per websocket per batch of Redis messages.
        """
        self.dirty = False
        transport, relay = self.transport, self.relay
        if transport is None or relay is None or transport.is_closing():
            return
        frames = relay.frames_to_write(now)
        if frames is None:  # failed for its backlog, or closing anyway
            self._too_slow()
            return
        transport.write(frames)

    def pause_writing(self) -> None:
        """The transport holds more unsent bytes than its high-water mark, which is the
        relay's ``max_buffer`` once the websocket opened: a client that does not read is
        failed with 1008 (then closed, once this write is over), and what it had not read
        is dropped. The transport says so itself after each write, so the hot paths need
        not ask it."""
        relay, transport = self.relay, self.transport
        if self.phase is not OPEN or relay is None or transport is None:
            return
        if relay.failure is None and relay.backlogged(transport.get_write_buffer_size()):
            asyncio.get_running_loop().call_soon(self._too_slow)

    def _too_slow(self) -> None:
        relay, transport = self.relay, self.transport
        assert relay is not None and transport is not None
        if relay.behind:
            logger.warning("Closing a websocket that does not read (more than %d bytes waiting)",
                           relay.max_buffer)  # fmt: skip
            asyncio.get_running_loop().call_later(SLOW_CLIENT_GRACE, transport.abort)
        self._write_protocol_output()

    def _write_protocol_output(self) -> None:
        relay = self.relay
        assert relay is not None
        if relay.closing:
            self._release()
            # The close frame waits until Redis confirmed the unsubscribe and published what
            # the client sent: once a client saw its close answered, its messages are in
            # Redis and it is no longer counted as a receiver.
            # A client failed by the server (backlog, size, protocol) is not owed that.
            released = self.subscription.released if self.subscription else None
            published = self.last_publish if relay.failure is None else None
            futures = [released, published]
            if self.facilities is not None:
                futures += [*self.facilities.release(), self.facilities.last_publish]
            waiting = [f for f in futures if f is not None and not f.done()]
            if waiting:
                gathered = asyncio.gather(*waiting, return_exceptions=True)
                gathered.add_done_callback(lambda _: self._write_protocol_output())
                return
        self._write(relay.data_to_send())  # pings piling up unread: see pause_writing()

    def _write(self, chunks: list[bytes]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:
                transport.close()
                return

    def new_subscription(self) -> HubSubscription:
        """The subscriber's subscription: this connection, registered with the hub."""
        assert self.hub is not None
        self.subscription = HubSubscription(self.hub, self)
        return self.subscription

    def _release(self) -> None:
        if self.subscriber is not None:
            self.subscriber.release()
        if self.facilities is not None:
            self.facilities.release()

    # -- server-driven -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        relay = self.relay
        if relay is not None and not relay.closing and relay.tick(now):
            self._write_protocol_output()

    def going_away(self) -> None:
        if self.phase is OPEN:
            assert self.relay is not None
            self.relay.close(CloseCode.GOING_AWAY, "server shutting down")
            self._write_protocol_output()
        elif self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def install_signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, hurry: asyncio.Event
) -> None:
    """The first SIGTERM or SIGINT sets ``stop`` (drain), the next one ``hurry`` (close the
    rest at once: an operator who cannot wait, or a second Ctrl-C)."""

    def signalled() -> None:
        (hurry if stop.is_set() else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signalled)


def drain_seconds(drain: float | None) -> float:
    """The drain window: ``--drain`` when given, else ``WS4REDIS_DRAIN_SECONDS``."""
    return float(settings.WS4REDIS_DRAIN_SECONDS if drain is None else drain)


async def serve(
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    supervisor: int | None = None,
    drain: float | None = None,
) -> bool:
    """Run one server until SIGTERM or SIGINT (or, for a worker, until its ``supervisor``
    process is gone), then drain over ``drain`` seconds (:func:`drain_seconds`) and shut
    down gracefully; False if that left a thread blocked."""
    loop = asyncio.get_running_loop()
    stop, hurry = asyncio.Event(), asyncio.Event()
    install_signal_handlers(loop, stop, hurry)
    window = drain_seconds(drain)
    watchdog = None if supervisor is None else loop.create_task(_orphaned(supervisor, stop))
    server = WebsocketServer()
    bound = await server.start(host, port, reuse_port=reuse_port)
    # Everything made so far lives as long as the process: keep it out of the collector's
    # full passes, which would otherwise pause delivery for every websocket at once.
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    logger.info("ws4redis websocket server listening on %s:%d", host, bound)
    await stop.wait()
    if watchdog is not None:
        watchdog.cancel()
    if window and server.connections:
        logger.info("Draining: closing %d websocket(s) over %g s (signal again to close them"
                    " at once)", len(server.connections), window)  # fmt: skip
        await server.drain(window, hurry)
    logger.info("Shutting down: closing %d websocket(s)", len(server.connections))
    return await server.shutdown()


async def _orphaned(supervisor: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died (killed, say) stops instead of holding the port."""
    while os.getppid() == supervisor:
        await asyncio.sleep(1)
    logger.warning("The supervisor process is gone; shutting down")
    stop.set()


def bind_check(host: str, port: int) -> None:
    """Fail early and clearly when the address is taken (before forking workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server binds: a restart right after a stop finds the port in TIME_WAIT
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, port))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (``pip install ws4redis[fast]``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(
    host: str,
    port: int,
    *,
    reuse_port: bool,
    supervisor: int | None = None,
    drain: float | None = None,
) -> None:
    """Run one server process to the end."""
    serving = serve(host, port, reuse_port=reuse_port, supervisor=supervisor, drain=drain)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        clean = runner.run(serving)
    if not clean:  # the publishing thread still waits for Redis: do not wait for it
        logging.shutdown()
        os._exit(0)
