"""Websockets under ``./manage.py runserver`` and Django's test server: a thread each.

Both servers are ``wsgiref`` based and run every request in its own thread, so a websocket
keeps its thread: it takes the request's socket over and relays until the websocket closes.
Simple and debuggable; not for production.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIRequest

from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import open_connection
from ws4redis.core.relay import FramedRelay
from ws4redis.runtimes.redis_side import subscribe
from ws4redis.runtimes.sync.connection import Connection
from ws4redis.runtimes.sync.hub import HubSubscription, get_hub
from ws4redis.runtimes.sync.wsgi import StartResponse, reject


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
    relay = outcome.relay(time.monotonic())
    assert isinstance(relay, FramedRelay)
    connection = Connection(request_handler.connection, relay)
    hub = get_hub()
    started = subscribe(outcome, lambda: HubSubscription(hub, connection))
    if isinstance(started, Rejection):
        return reject(started, start_response)
    subscriber, start = started
    # Record the 101 with wsgiref (for its access log) but write the handshake ourselves:
    # wsgiref would add "Connection: close" and refuses hop-by-hop headers.
    start_response("101 Switching Protocols", [])
    handler.headers_sent = True
    request_handler.close_connection = True
    connection.serve(subscriber, start, b"")
    return []
