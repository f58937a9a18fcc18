"""A ``POST`` to ``runwebsocket``: the message of an event stream's client
(:mod:`ws4redis.runtimes.posting`), its request and body parsed by ``h11``.

The websocket handshake's parser takes no body, so a request that begins with ``POST`` is
read by :class:`PostReader` instead: its headers within ``h11``'s bounds, its body up to
``WS4REDIS_MAX_MESSAGE_SIZE``.
"""

from __future__ import annotations

import h11
from websockets.datastructures import Headers
from websockets.http11 import Request

from ws4redis.core.handshake import Rejection
from ws4redis.runtimes.posting import too_big

MAX_HEAD = 16 * 1024
"""Bytes a ``POST``'s request line and headers may take."""


class PostReader:
    """One ``POST`` request as it arrives: its head, then its body."""

    __slots__ = ("body", "connection", "request")

    def __init__(self) -> None:
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.request: Request | None = None
        self.body = bytearray()

    def feed(self, data: bytes) -> Request | Rejection | None:
        """The request once it is whole (its body in :attr:`body`), a Rejection for one
        that cannot be read or is too big, or None while more is to come."""
        try:
            self.connection.receive_data(data)
            while (event := self.connection.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Request):
                    headers = Headers((k.decode(), v.decode("latin-1")) for k, v in event.headers)
                    path, method = event.target.decode("ascii"), event.method.decode("ascii")
                    self.request = Request(path, headers, method=method)
                elif isinstance(event, h11.Data):
                    self.body += event.data
                    if (rejection := too_big(len(self.body))) is not None:
                        return rejection
                elif isinstance(event, h11.EndOfMessage):
                    return self.request
                else:  # a closed connection, or something a POST does not send
                    return Rejection(400, "The request could not be read.\n")
        except h11.RemoteProtocolError as exc:
            return Rejection(exc.error_status_hint, f"The request could not be read: {exc}\n")
        return None
