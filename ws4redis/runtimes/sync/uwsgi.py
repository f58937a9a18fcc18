"""Websockets on uWSGI's native websocket API, one greenlet each (``--gevent``).

uWSGI does the handshake and the framing; the core decides as under every other runtime,
and the worker's :class:`~ws4redis.runtimes.gevent_hub.GeventHub` hands each greenlet what
Redis delivered for it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable

import gevent
import gevent.event
import gevent.socket
import uwsgi
from django.core.handlers.wsgi import WSGIRequest

from ws4redis import settings
from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import open_connection
from ws4redis.core.relay import Relay, is_text
from ws4redis.redis_pool import connection_kwargs
from ws4redis.runtimes.gevent_hub import GeventSubscription, worker_hub
from ws4redis.runtimes.wsgi import StartResponse, reject
from ws4redis.subscriber import RedisSubscriber

logger = logging.getLogger("ws4redis.uwsgi")


class Greenlet:
    """One websocket: its relay and the event that wakes it (client data or hub messages)."""

    def __init__(self) -> None:
        self.relay: Relay | None = None
        self.wakeup = gevent.event.Event()


def websocket_app(request: WSGIRequest, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one websocket request in the current greenlet until it closes."""
    outcome = open_connection(request)  # with the handshake: key and version are checked
    if isinstance(outcome, Rejection):
        return reject(outcome, start_response)
    assert outcome.response is not None
    subprotocol = outcome.response.headers.get("Sec-WebSocket-Protocol", "")
    native = dataclasses.replace(outcome, protocol=None, response=None)  # uWSGI frames
    sink = Greenlet()
    hub = worker_hub(connection_kwargs())
    started = native.start(lambda: GeventSubscription(hub, sink))
    if isinstance(started, Rejection):
        return reject(started, start_response)
    relay, subscriber = started
    meta = request.META
    uwsgi.websocket_handshake(
        meta["HTTP_SEC_WEBSOCKET_KEY"], meta.get("HTTP_ORIGIN", ""), subprotocol
    )
    sink.relay = relay
    try:
        _serve(sink, relay, subscriber)
    finally:
        subscriber.release()
    return []


def _serve(sink: Greenlet, relay: Relay, subscriber: RedisSubscriber) -> None:
    consumed = gevent.event.Event()
    watcher = gevent.spawn(_watch_client, uwsgi.connection_fd(), sink.wakeup, consumed)
    max_size = settings.WS4REDIS_MAX_MESSAGE_SIZE
    try:
        while True:
            _send_outbox(relay)
            due = relay.next_heartbeat()
            sink.wakeup.wait(None if due is None else max(due - time.monotonic(), 0))
            sink.wakeup.clear()
            # uWSGI's API is only usable from this greenlet: the watcher merely wakes us.
            # An empty message reads like "nothing yet", so stop only at a second empty read.
            empty_reads = 0
            while empty_reads < 2:
                message = uwsgi.websocket_recv_nb()
                empty_reads = 0 if message else empty_reads + 1
                if len(message) > max_size:
                    logger.info("Closing a websocket that sent %d bytes", len(message))
                    return
                if relay.accept(message):
                    subscriber.publish_message(message)
            consumed.set()
            relay.tick(time.monotonic())
    except OSError:
        return  # the client closed or went away
    finally:
        watcher.kill()


def _watch_client(fd: int, wakeup: gevent.event.Event, consumed: gevent.event.Event) -> None:
    """Wake the websocket greenlet when the client's socket has data, then wait until it
    has been read, so that a readable socket does not spin."""
    while True:
        gevent.socket.wait_read(fd)
        consumed.clear()
        wakeup.set()
        consumed.wait()


def _send_outbox(relay: Relay) -> None:
    messages = relay.take_outbox()
    if not messages:
        return
    for message in messages:
        if is_text(message):
            uwsgi.websocket_send(message)
        else:
            uwsgi.websocket_send_binary(message)
    relay.note_sent(time.monotonic())
