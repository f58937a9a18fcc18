"""Websockets under uWSGI with gevent: a greenlet each, on the same protocol as elsewhere.

uWSGI parses the HTTP request and hands it to us as WSGI; from there on the connection is
ours. The handshake response and every frame are the ``websockets`` library's, written to
the connection's own socket (``uwsgi.connection_fd()``), exactly as under ``runserver`` and
``runwebsocket``: uWSGI's websocket parser is never used. The worker's
:class:`~ws4redis.runtimes.sync.hub.Hub` reads Redis for all its websockets.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

import uwsgi
from django.core.handlers.wsgi import WSGIRequest

from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import open_connection
from ws4redis.core.relay import FramedRelay
from ws4redis.runtimes.redis_side import subscribe
from ws4redis.runtimes.sync.connection import Connection
from ws4redis.runtimes.sync.hub import HubSubscription, get_hub
from ws4redis.runtimes.sync.wsgi import StartResponse, reject


def websocket_app(request: WSGIRequest, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one websocket request in the current greenlet until it closes."""
    outcome = open_connection(request)
    if isinstance(outcome, Rejection):
        return reject(outcome, start_response)
    relay = outcome.relay(time.monotonic())
    assert isinstance(relay, FramedRelay)
    # A socket of our own on the connection (gevent's, so cooperative); uWSGI closes its
    # descriptor when the request ends, we close ours.
    sock = socket.socket(fileno=os.dup(uwsgi.connection_fd()))
    try:
        connection = Connection(sock, relay)
        hub = get_hub()
        started = subscribe(outcome, lambda: HubSubscription(hub, connection))
        if isinstance(started, Rejection):
            return reject(started, start_response)
        subscriber, start = started
        connection.serve(subscriber, start, b"")
    finally:
        sock.close()
    return []
