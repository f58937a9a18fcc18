"""Websockets under ``./manage.py runserver`` and Django's test server: a thread each.

Both servers are ``wsgiref`` based and run every request in its own thread, so a websocket
simply keeps its thread: it takes the request's socket over and waits with ``select`` on the
socket and on its own Redis subscription. Simple and debuggable; not for production.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Iterable
from typing import Any

import redis
from django.core.handlers.wsgi import WSGIRequest
from websockets.frames import CloseCode

from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import open_connection
from ws4redis.core.relay import FramedRelay
from ws4redis.redis_store import RedisMessage
from ws4redis.runtimes.wsgi import StartResponse, reject
from ws4redis.subscriber import RedisSubscriber

logger = logging.getLogger("ws4redis")

READ_SIZE = 65536


def websocket_app(request: WSGIRequest, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one websocket request until the websocket closes."""
    outcome = open_connection(request)
    if isinstance(outcome, Rejection):
        return reject(outcome, start_response)
    # wsgiref passes its handler's bound method as start_response; the handler knows the
    # request handler, which owns the socket. No other public way reaches it.
    handler: Any = getattr(start_response, "__self__", None)
    request_handler = getattr(handler, "request_handler", None)
    if request_handler is None:
        return reject(
            Rejection(500, "This server cannot hand over its socket; run `runwebsocket`.\n"),
            start_response,
        )
    started = outcome.start()
    if isinstance(started, Rejection):
        return reject(started, start_response)
    relay, subscriber = started
    assert isinstance(relay, FramedRelay)
    # Record the 101 with wsgiref (for its access log) but write the handshake ourselves:
    # wsgiref would add "Connection: close" and refuses hop-by-hop headers.
    start_response("101 Switching Protocols", [])
    handler.headers_sent = True
    request_handler.close_connection = True
    try:
        _serve(request_handler.connection, relay, subscriber)
    finally:
        subscriber.release()
    return []


def _serve(sock: socket.socket, relay: FramedRelay, subscriber: RedisSubscriber) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        redis_fd = subscriber.get_file_descriptor()
        if redis_fd is not None:
            selector.register(redis_fd, selectors.EVENT_READ)
        try:
            _read_redis(relay, subscriber)  # what arrived while subscribing
            while _flush(sock, relay, subscriber):
                due = relay.next_heartbeat()
                timeout = None if due is None else max(due - time.monotonic(), 0)
                for key, _events in selector.select(timeout):
                    if key.fileobj is sock:
                        _read_client(sock, relay, subscriber)
                    else:
                        _read_redis(relay, subscriber)
                relay.tick(time.monotonic())
        except (ConnectionError, TimeoutError) as exc:
            logger.debug("websocket connection lost: %s", exc)
        except redis.RedisError as exc:
            logger.warning("websocket closed, Redis failed: %s", exc)
            relay.fail(CloseCode.TRY_AGAIN_LATER, "Redis unavailable")
            _flush(sock, relay, subscriber)
        except Exception:
            logger.exception("websocket loop failed")
            relay.fail(CloseCode.INTERNAL_ERROR)
            _flush(sock, relay, subscriber)


def _read_client(sock: socket.socket, relay: FramedRelay, subscriber: RedisSubscriber) -> None:
    data = sock.recv(READ_SIZE)
    if not data:
        relay.receive_eof()
        return
    for message in relay.receive_data(data):
        subscriber.publish_message(message)


def _read_redis(relay: FramedRelay, subscriber: RedisSubscriber) -> None:
    # hiredis may have parsed several replies from one read: drain them all.
    while (reply := subscriber.parse_response()) is not None:
        message = RedisMessage(reply)
        if message:
            relay.deliver(message)


def _flush(sock: socket.socket, relay: FramedRelay, subscriber: RedisSubscriber) -> bool:
    """Write what the relay queued; False once the connection is finished.

    When closing, the Redis subscriptions are released *before* the close frame goes out,
    so a client that saw its close confirmed is no longer counted as a receiver.
    """
    if relay.closing:
        subscriber.release()
    chunks = relay.data_to_send()
    try:
        for chunk in chunks:
            if chunk:
                sock.sendall(chunk)
            else:
                sock.shutdown(socket.SHUT_WR)
                return False
    except OSError as exc:
        logger.debug("websocket write failed: %s", exc)
        return False
    if chunks:
        relay.note_sent(time.monotonic())
    return True
