"""Opening a websocket over real connections: every refusal (docs/reference.md#http-statuses)
and the Origin rule (#limits-and-safety)."""

from __future__ import annotations

import base64
import logging
import socket
from urllib.parse import urlsplit

import pytest
import requests
import websocket
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.test import override_settings
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri

from tests.support.clients import FACILITY, Server
from ws4redis.django_runserver import application

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_headers(**changes: str | None) -> dict[str, str]:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


def http_url(server: Server) -> str:
    """The websocket URL with http: (requests speaks only HTTP)."""
    return server.url().replace("ws:", "http:", 1)


def http_get(server: Server, **changes: str | None) -> requests.Response:
    return requests.get(http_url(server), headers=upgrade_headers(**changes), timeout=10)


def test_plain_get_is_told_to_upgrade(server):
    response = requests.get(http_url(server), timeout=10)
    assert response.status_code == 400
    assert "upgrade to a websocket" in response.text


@pytest.mark.not_under("asgi", reason="the ASGI server answers an upgrade by POST itself (405)")
def test_post_is_refused(server):
    response = requests.post(http_url(server), headers=upgrade_headers(), data={}, timeout=10)
    assert response.status_code == 400


def test_missing_version_is_426(socket_server):
    assert http_get(socket_server, **{"Sec-WebSocket-Version": None}).status_code == 426


@pytest.mark.parametrize(
    "changes",
    [
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Key": None},
        {"Sec-WebSocket-Key": "not base64!"},
        {"Sec-WebSocket-Key": base64.b64encode(b"short").decode()},
    ],
    ids=["unsupported-version", "missing-key", "malformed-key", "short-key"],
)
def test_bad_version_or_key_is_400(socket_server, changes):
    assert http_get(socket_server, **changes).status_code == 400


@pytest.mark.parametrize("twice", ["Upgrade", "Sec-WebSocket-Key"])
def test_a_header_given_twice_is_400(socket_server, twice):
    """Each header once is what the opening reads: one given twice is merged, as WSGI
    servers merge it, and refused as a bad value, never failed with a 500."""
    url = urlsplit(socket_server.url())
    lines = [f"GET {url.path}?{url.query} HTTP/1.1", f"Host: {url.netloc}"]
    for name, value in upgrade_headers().items():
        lines += [f"{name}: {value}"] * (2 if name == twice else 1)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = sock.makefile("rb").readline()
    assert status.split()[1] == b"400"


def test_permission_denied_by_dotted_path_callback_is_403(socket_server):
    # tests.support.settings names tests.support.callbacks.deny_on_header by its dotted path.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        socket_server.connect("subscribe-broadcast", header=["Deny-Channels: YES"])
    assert refused.value.status_code == 403


def deny_everything(request, channels):
    raise PermissionDenied("not you")


def test_permission_denied_by_callable_is_403(socket_server):
    with override_settings(WS4REDIS_ALLOWED_CHANNELS=deny_everything):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            socket_server.connect("subscribe-broadcast")
    assert refused.value.status_code == 403


def test_unexpected_error_is_500_and_logged(socket_server, caplog):
    def broken(request, channels):
        raise RuntimeError("callback bug")

    with override_settings(WS4REDIS_ALLOWED_CHANNELS=broken), caplog.at_level(logging.ERROR):
        with pytest.raises(websocket.WebSocketBadStatusException) as failed:
            socket_server.connect("subscribe-broadcast")
    assert failed.value.status_code == 500
    assert "callback bug" in caplog.text


def test_foreign_origin_is_403(socket_server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        socket_server.connect("subscribe-broadcast", origin="http://evil.example")
    assert refused.value.status_code == 403


def test_own_origin_and_no_origin_are_allowed(socket_server):
    host = urlsplit(socket_server.ws_base).netloc
    for kwargs in ({"origin": f"http://{host}"}, {"suppress_origin": True}):
        ws = socket_server.connect("subscribe-broadcast", **kwargs)
        assert ws.connected
        ws.close()


def test_allowed_origins_setting_replaces_allowed_hosts(socket_server):
    with override_settings(WS4REDIS_ALLOWED_ORIGINS=["https://app.example"]):
        ws = socket_server.connect("subscribe-broadcast", origin="https://app.example")
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            socket_server.connect("subscribe-broadcast", origin=socket_server.http_url)
    assert refused.value.status_code == 403


def test_first_offered_subprotocol_is_chosen(socket_server):
    ws = socket_server.connect("subscribe-broadcast", subprotocols=["unittestprotocol", "other"])
    assert ws.headers["sec-websocket-protocol"] == "unittestprotocol"
    ws.close()
    ws = socket_server.connect("subscribe-broadcast")
    assert "sec-websocket-protocol" not in ws.headers
    ws.close()


def test_only_frames_follow_the_upgrade(socket_server):
    """After the 101 nothing but websocket frames may reach the client: here, exactly the
    answer to its close frame, then EOF."""
    url = urlsplit(socket_server.ws_base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        lines = [f"GET /ws/{FACILITY}?subscribe-broadcast HTTP/1.1", f"Host: {url.netloc}"]
        lines += [f"{k}: {v}" for k, v in upgrade_headers().items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        head, rest = received.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        close = Frame(Opcode.CLOSE, Close(1000, "").serialize())
        sock.sendall(close.serialize(mask=True))
        while chunk := sock.recv(4096):
            rest += chunk
    assert rest == close.serialize(mask=False)


def test_pages_are_served_by_the_runserver_application(live_server, rdb):
    live_server.thread.httpd.set_app(application)
    response = requests.get(f"{live_server.url}/chat/", timeout=10)
    assert response.status_code == 200
    assert "Broadcast chat" in response.text
    # the view published its persisted welcome through the Django loop, to this browser only
    session = response.cookies[settings.SESSION_COOKIE_NAME]
    assert b"Welcome" in rdb.get(f"ws4redis:session:{session}:foobar")
    assert rdb.get("ws4redis:broadcast:foobar") is None


def test_oversized_query_is_414_without_a_traceback(socket_server, caplog):
    crowded = "&".join(f"k{n}" for n in range(1100))
    response = requests.get(
        f"{http_url(socket_server)}?{crowded}", headers=upgrade_headers(), timeout=10
    )
    assert response.status_code == 414
    assert "longer than" in response.text
    assert "Traceback" not in caplog.text and "ERROR" not in caplog.text


def test_frame_sent_with_the_request_is_not_lost(asyncio_server, rdb):
    """A client that sends its first frame in the same packet as the upgrade request (not
    allowed by RFC 6455, done by some clients) gets it relayed, not a dropped connection."""
    url = f"{asyncio_server.ws_base}/ws/{FACILITY}?subscribe-broadcast&publish-broadcast&echo"
    client = ClientProtocol(parse_uri(url))
    client.send_request(client.connect())
    frame = Frame(Opcode.TEXT, b"early bird").serialize(mask=True)
    with socket.create_connection(("127.0.0.1", asyncio_server.port), timeout=10) as sock:
        sock.sendall(b"".join(client.data_to_send()) + frame)
        received: list[bytes] = []
        while not received:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            client.receive_data(data)
            received = [e.data for e in client.events_received() if isinstance(e, Frame)]
    assert received == [b"early bird"]
