"""One websocket on a blocking socket: the request's thread reads, a second one writes.

Used by ``runserver`` (real threads) and by uWSGI with gevent (the same code as greenlets),
both through :func:`serve_request`, the blocking model's one opening sequence. The reader
feeds the client's bytes to the :class:`~ws4redis.core.relay.SocketRelay` (the websocket
framing, or any other transport) and publishes what it returns; the hub's thread queues
Redis messages in the relay; the writer
is the only one that writes to the socket, so frames never interleave. One lock guards the
relay, and nobody blocks on the network while holding it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from django.core.handlers.wsgi import WSGIRequest

from ws4redis.core.handshake import Rejection
from ws4redis.core.relay import Delivery, Failure, SocketRelay, Start
from ws4redis.core.stats import STATS
from ws4redis.runtimes.hooks import Hook, judged, opening_hook, text_of
from ws4redis.runtimes.opening import open_connection
from ws4redis.runtimes.posting import answered, publish_request
from ws4redis.runtimes.redis_side import publish, subscribe
from ws4redis.runtimes.sync.facilities import Facilities
from ws4redis.runtimes.sync.hub import HubSubscription, get_hub
from ws4redis.runtimes.sync.wsgi import StartResponse, reject
from ws4redis.subscriber import RedisSubscriber

logger = logging.getLogger("ws4redis")

READ_SIZE = 65536
RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, for 0 seconds: closing the socket resets the connection."""
SOCKET_WAIT = 1.0
"""Seconds a blocked send or receive waits before it looks again at the relay's state: a
client that stopped reading cannot hold the writer for longer once it has been failed."""


class Connection:
    """A websocket whose socket this process holds, fed by the process's hub."""

    def __init__(self, sock: socket.socket, relay: SocketRelay) -> None:
        self.sock = sock
        self.relay = relay
        self.changed = threading.Condition()
        self.publishing = False
        self.released = False
        self.finished = False
        self.cut = False
        """Cut off for not reading: its socket is shut down."""
        self.facilities: Facilities | None = None
        """With ``ws4redis.v1``: its facilities, whose requests its reading thread runs."""
        self.hook: Hook | None = None
        """Its facility's hook, if it has one."""

    def push(self, delivery: Delivery) -> bool:
        """From the hub's thread: queue a message and wake the writer."""
        with self.changed:
            if self.relay.deliver(delivery):
                if self.relay.failure is not None:  # rare: the steady stream pays one test
                    self._cut_off_if_too_slow()
                self.changed.notify()
        return False

    def serve(self, subscriber: RedisSubscriber, start: Start, data: bytes) -> None:
        """Relay until the websocket is closed, beginning with ``start``; ``data`` are bytes
        of the client that were read with the handshake."""
        self.sock.settimeout(SOCKET_WAIT)
        with self.changed:
            self.relay.opened(start)
        writer = threading.Thread(
            target=self._write_forever, args=(subscriber,), name="ws4redis-writer", daemon=True
        )
        writer.start()
        try:
            self._read_forever(subscriber, data)
        except OSError as exc:
            logger.debug("websocket connection lost: %s", exc)
        except Exception:
            logger.exception("Relaying failed; closing the websocket with 1011")
            with self.changed:
                self.relay.fail(Failure.SERVER_ERROR)
        finally:
            with self.changed:
                self.finished = True
                self.changed.notify()
            writer.join()
            self._release(subscriber)

    def _release(self, subscriber: RedisSubscriber) -> None:
        subscriber.release()
        if self.facilities is not None:
            self.facilities.release()

    # -- reading ---------------------------------------------------------------------------

    def _read_forever(self, subscriber: RedisSubscriber, data: bytes) -> None:
        relay = self.relay
        while not self.finished:
            if data:
                with self.changed:
                    messages = relay.receive_data(data)
                    self._cut_off_if_too_slow()  # pongs it never reads
                    self.publishing = bool(messages)
                    self.changed.notify()
                if messages:
                    # In this thread: while Redis is slow this client is not read, so what
                    # waits for Redis is at most one read's messages.
                    failure = None
                    if self.facilities is not None:
                        self.facilities.receive(messages)
                    elif self.hook is not None:
                        failure = self._judge(subscriber, messages, self.hook)
                    else:
                        failure = publish(subscriber, messages)
                    with self.changed:
                        if failure is not None:
                            relay.published(0, failure)  # the client is told: closed
                        self.publishing = False
                        self.changed.notify()
            if self.facilities is not None and self.facilities.ended:
                self.facilities.release_ended()
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                data = b""
                continue
            if not data:
                with self.changed:
                    relay.receive_eof()
                    self.finished = True
                    self.changed.notify()

    def _judge(self, subscriber: RedisSubscriber, messages: list[bytes], hook: Hook) -> int | None:
        """Run the client's messages through its facility's hook, in order; publish what it
        lets through and tell the client what it says. The close code if publishing failed."""
        for message in messages:
            verdict = judged(hook, text_of(message), None, None)
            with self.changed:
                if verdict is None:  # too many wait for the hooks: as when Redis is behind
                    self.relay.fail(Failure.BACKED_UP)
                elif verdict.told is not None:
                    self.relay.send(verdict.told)
                self.changed.notify()
            if verdict is None:
                return None
            if verdict.publish is not None:
                with self.changed:
                    self.relay.accept(verdict.publish)
                if (failure := publish(subscriber, [verdict.publish])) is not None:
                    return failure
        return None

    # -- writing ---------------------------------------------------------------------------

    def _write_forever(self, subscriber: RedisSubscriber) -> None:
        try:
            while (chunks := self._next_chunks(subscriber)) is not None:
                for chunk in chunks:
                    if not chunk:  # the protocol is done: half-close, the client closes
                        self._shutdown(socket.SHUT_WR)
                        return
                    if not self._send(chunk):
                        return
                with self.changed:
                    self.relay.written(time.monotonic())
        finally:
            with self.changed:
                self.finished = True

    def _next_chunks(self, subscriber: RedisSubscriber) -> list[bytes] | None:
        """Wait for something to write; None once there is nothing more to do.

        Once the connection is closing, the close frame waits until what the client sent is
        published and the subscriptions are released: a client that saw its close answered
        has its messages in Redis and is no longer counted as a receiver.
        """
        relay = self.relay
        with self.changed:
            while True:
                if relay.closing and not self.released:
                    if self.publishing:
                        self.changed.wait()
                        continue
                    break
                chunks = relay.data_to_send()
                if chunks:
                    return chunks
                if self.finished:
                    return None
                due = relay.next_tick()
                self.changed.wait(None if due is None else max(due - time.monotonic(), 0))
                relay.tick(time.monotonic())
        self._release(subscriber)
        with self.changed:
            self.released = True
        return []

    def _send(self, chunk: bytes) -> bool:
        """Write all of ``chunk``; False if the connection is gone or was failed for not
        reading (then it is cut off)."""
        view = memoryview(chunk)
        while view:
            try:
                sent = self.sock.send(view)
                if sent < len(view):  # the client's socket is full: it is behind
                    with self.changed:
                        self.relay.stall()
                        if self._cut_off_if_too_slow():
                            return False
                view = view[sent:]
            except TimeoutError:
                with self.changed:
                    self.relay.stall()
                    if self._cut_off_if_too_slow():
                        return False
            except OSError as exc:
                logger.debug("websocket write failed: %s", exc)
                return False
        return True

    def _cut_off_if_too_slow(self) -> bool:
        """With the lock held: whether the client is cut off for not reading, which is done
        at once by whichever thread failed it. Its writer may be blocked in a send to it for
        up to :data:`SOCKET_WAIT`, while its reader would go on taking (and dropping)
        whatever it floods in."""
        if not self.cut and self.relay.behind:
            self.cut = True
            logger.warning("Closing a websocket that does not read")
            # Reset, not closed in order: the client's unread data may have closed the
            # server's receive window, and a closed socket behind a closed window answers
            # nothing, so a client that keeps sending would hang instead of being told.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            self._shutdown(socket.SHUT_RDWR)
        return self.cut

    def _shutdown(self, how: int) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(how)


NO_SOCKET = Rejection(500, "This server cannot hand over its socket; run `runwebsocket`.\n")


class Handover(Protocol):
    """How a blocking server hands a websocket its client's socket."""

    def claim(self) -> socket.socket | None:
        """The client's socket, once the request is accepted; None if the server cannot
        give it."""
        ...

    def switching(self, status: str) -> None:
        """The subscriptions hold and the answer's head goes out next (``status``: a 101
        for a websocket, a 200 for an event stream): the server's bookkeeping."""
        ...

    def release(self, sock: socket.socket) -> None:
        """The websocket is done with ``sock``."""
        ...


def serve_request(
    request: WSGIRequest, start_response: StartResponse, handover: Handover
) -> Iterable[bytes]:
    """Open and serve one websocket request in the current thread (or greenlet) until the
    websocket closes: open, or reject over HTTP; subscribe through the process's hub, or
    reject; then relay on the socket ``handover`` gives."""
    if request.method == "POST":  # a message of an event stream's client
        status, body = publish_request(request)
        start_response(*answered(status, body))
        return [body]
    outcome = open_connection(request)
    if isinstance(outcome, Rejection):
        return reject(outcome, start_response)
    sock = handover.claim()
    if sock is None:
        return reject(NO_SOCKET, start_response)
    try:
        relay = outcome.relay(time.monotonic(), STATS)
        assert isinstance(relay, SocketRelay)
        connection = Connection(sock, relay)
        hub = get_hub()
        if outcome.multiplex:
            connection.facilities = Facilities(relay, connection.changed, outcome, hub)
        connection.hook = opening_hook(outcome)
        started = subscribe(outcome, lambda: HubSubscription(hub, connection))
        if isinstance(started, Rejection):
            return reject(started, start_response)
        subscriber, start = started
        handover.switching("200 OK" if outcome.events else "101 Switching Protocols")
        connection.serve(subscriber, start, b"")
    finally:
        handover.release(sock)
    return []
