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
from collections.abc import Iterable

import uwsgi
from django.core.handlers.wsgi import WSGIRequest

from ws4redis.runtimes.sync.connection import serve_request
from ws4redis.runtimes.sync.wsgi import StartResponse


class UwsgiHandover:
    """A socket of our own on the connection (gevent's, so cooperative); uWSGI closes its
    descriptor when the request ends, we close ours."""

    def claim(self) -> socket.socket:
        return socket.socket(fileno=os.dup(uwsgi.connection_fd()))

    def switching(self, status: str) -> None:
        """uWSGI keeps no record of the upgrade: nothing to tell it."""

    def release(self, sock: socket.socket) -> None:
        sock.close()


def websocket_app(request: WSGIRequest, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one websocket request in the current greenlet until it closes."""
    return serve_request(request, start_response, UwsgiHandover())
