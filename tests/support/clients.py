"""What the behaviour tests use to reach a server: its address, logged-in clients,
websocket helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import websocket
from django.test import Client

from ws4redis.publisher import RedisPublisher

FACILITY = "unittest"


@dataclass
class Server:
    """A running server of one runtime: where its websockets are, and where Django's pages
    are (the same place under runserver)."""

    runtime: str
    http_url: str
    ws_base: str
    log: Callable[[], str]
    """The server's log during this test (captured here, or from uWSGI's log file)."""

    @property
    def ws_url(self) -> str:
        return self.ws_base + "/ws/"

    def url(self, query: str = "", facility: str = FACILITY) -> str:
        return f"{self.ws_url}{facility}{'?' + query if query else ''}"

    def connect(self, query: str = "", facility: str = FACILITY, **kwargs) -> websocket.WebSocket:
        kwargs.setdefault("timeout", 10)
        return websocket.create_connection(self.url(query, facility), **kwargs)


SOCKET_RUNTIMES = ["runserver", "asyncio"]


def login(username: str) -> Client:
    """A Django test client logged in as ``username`` (runs the user_logged_in signal)."""
    client = Client()
    assert client.login(username=username, password="secret")
    return client


def session_cookie(client: Client) -> str:
    """The Cookie header line that carries ``client``'s session to a websocket."""
    from django.conf import settings

    name = settings.SESSION_COOKIE_NAME
    return f"Cookie: {name}={client.cookies[name].value}"


def recv_close(ws: websocket.WebSocket) -> int:
    """Read until the server's close frame; return its close code."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big")


def chat_line(ws: websocket.WebSocket) -> str:
    """The next line of the example's broadcast chat, past its join/leave announcements."""
    while (message := ws.recv()).startswith('{"presence"'):
        pass
    return message


def publish_marker(facility: str = FACILITY) -> bytes:
    """Broadcast a marker on ``facility``. Redis delivers in order, so once a socket receives
    the marker, anything published before it has arrived too: absences are shown without
    waiting for a timeout."""
    marker = b"--marker--"
    RedisPublisher(facility=facility, broadcast=True).publish_message(marker, expire=0)
    return marker


@contextlib.contextmanager
def connected(server: Server, query: str = "", **kwargs) -> Iterator[websocket.WebSocket]:
    ws = server.connect(query, **kwargs)
    try:
        yield ws
    finally:
        ws.close()


def assert_retry_later(opening: Callable[[], object]) -> None:
    """``opening()`` (a websocket's) is refused with 503 and ``Retry-After: 1``: the answer
    to a refusal that will pass (Redis unreachable, the server at its cap)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        opening()
    assert refused.value.status_code == 503
    assert refused.value.resp_headers["retry-after"] == "1"
