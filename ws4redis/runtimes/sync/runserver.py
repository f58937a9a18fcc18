"""Websockets under ``./manage.py runserver`` and Django's test server: a thread each.

Both servers are ``wsgiref`` based and run every request in its own thread, so a websocket
keeps its thread: it takes the request's socket over and relays until the websocket closes.
Simple and debuggable; not for production.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIRequest

from ws4redis.runtimes.sync.connection import serve_request
from ws4redis.runtimes.sync.wsgi import StartResponse


class WsgirefHandover:
    """The socket of a ``wsgiref`` request handler.

    wsgiref passes its handler's bound method as start_response; the handler knows the
    request handler, which owns the socket. No other public way reaches it.
    """

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.handler: Any = getattr(start_response, "__self__", None)
        self.request_handler: Any = getattr(self.handler, "request_handler", None)

    def claim(self) -> socket.socket | None:
        return None if self.request_handler is None else self.request_handler.connection

    def switching(self, status: str) -> None:
        # Record the status with wsgiref (for its access log) but write the answer ourselves:
        # wsgiref would add "Connection: close" and refuses hop-by-hop headers.
        self.start_response(status, [])
        self.handler.headers_sent = True
        self.request_handler.close_connection = True

    def release(self, sock: socket.socket) -> None:
        """wsgiref closes its own socket when the request ends."""


def websocket_app(request: WSGIRequest, start_response: StartResponse) -> Iterable[bytes]:
    """Serve one websocket request until the websocket closes."""
    return serve_request(request, start_response, WsgirefHandover(start_response))
