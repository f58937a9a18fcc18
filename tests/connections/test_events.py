"""Server-Sent Events on the websocket URL (docs/reference.md#server-sent-events), on every
runtime: a GET that accepts text/event-stream gets the same channels, identity and rules as
a websocket, each message as an event, and with ``recover`` resumes from Last-Event-ID."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

import ws4redis
from tests.support.clients import login, session_cookie
from tests.support.servers import wait_until
from ws4redis.bus import live
from ws4redis.publisher import RedisPublisher
from ws4redis.tokens import QUERY_KEY, connection_token

FACILITY = "events"


class Stream:
    """An event stream read as a browser's EventSource parses it."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.last_id: str | None = None

    def next(self) -> dict:
        """The next event: its name, data (lines joined with \\n) and id; comments skipped."""
        name, data, seen = "message", [], False
        while True:
            line = self.response.fp.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.decode().rstrip("\r\n")
            if not line:
                if seen and data:
                    return {"event": name, "data": "\n".join(data), "id": self.last_id}
                name, data, seen = "message", [], False
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            seen = True
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
            elif field == "id":
                self.last_id = value

    def data(self) -> str:
        return self.next()["data"]


@contextlib.contextmanager
def streaming(
    server, query: str, headers: dict | None = None, facility: str = FACILITY
) -> Iterator[Stream]:
    """``GET`` the facility's websocket URL as an event stream."""
    url = urlsplit(server.ws_base.replace("ws:", "http:", 1))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request(
        "GET",
        f"/ws/{facility}?{query}",
        headers={"Accept": "text/event-stream", **(headers or {})},
    )
    response = connection.getresponse()
    try:
        assert response.status == 200, (response.status, response.read())
        assert response.getheader("Content-Type").startswith("text/event-stream")
        yield Stream(response)
    finally:
        connection.close()


def publish(data: str | bytes, facility: str = FACILITY, **audience) -> None:
    audience = audience or {"broadcast": True}
    RedisPublisher(facility=facility, **audience).publish_message(data)


def test_an_event_stream_gets_the_stored_message_then_each_published_one(server, rdb):
    publish("stored before")
    with streaming(server, "subscribe-broadcast") as stream:
        assert stream.data() == "stored before"
        publish("live")
        assert stream.data() == "live"


def test_multi_line_and_binary_messages_arrive_whole(server, rdb):
    with streaming(server, "subscribe-broadcast") as stream:
        publish("first line\nsecond line\r\nthird")
        assert stream.data() == "first line\nsecond line\nthird"
        publish(b"\xff\x00binary")
        binary = stream.next()
        assert binary["event"] == "bytes"
        assert base64.b64decode(binary["data"]) == b"\xff\x00binary"


def recovered(stream: Stream) -> str:
    """The next message of a stream with positions (past markers, which carry no data)."""
    while "data" not in (message := json.loads(stream.data())):
        pass
    return message["data"]


@override_settings(WS4REDIS_HISTORY={FACILITY: {"size": 10, "ttl": 600}})
def test_the_browser_s_reconnect_resumes_with_exactly_what_it_missed(server, rdb):
    """With ``recover`` each event's id is where the stream stands; sending it back as
    Last-Event-ID resumes with the messages published in between, once each."""
    with streaming(server, "subscribe-broadcast&recover") as stream:
        publish("one")
        assert recovered(stream) == "one"
        last = stream.last_id
        assert last and last.startswith("broadcast:")
    publish("two")
    publish("three")
    with streaming(server, "subscribe-broadcast&recover", {"Last-Event-ID": last}) as stream:
        assert [recovered(stream) for _ in range(2)] == ["two", "three"]
        publish("four")
        assert recovered(stream) == "four"


def test_an_event_stream_has_the_identity_and_rules_of_a_websocket(server, users):
    cookie = session_cookie(login("john")).split(": ", 1)[1]
    with streaming(server, "subscribe-user", {"Cookie": cookie}) as stream:
        publish("for mary", users=["mary"])
        publish("for john", users=["john"])
        assert stream.data() == "for john"
        ws4redis.disconnect(user="john")
        closed = stream.next()
        assert closed["event"] == "close" and json.loads(closed["data"])["code"] == 4001
    rules = {FACILITY: {"subscribe": "staff"}}
    url = urlsplit(server.ws_base.replace("ws:", "http:", 1))
    with override_settings(WS4REDIS_PERMISSIONS=rules):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request("GET", f"/ws/{FACILITY}?subscribe-broadcast",
                           headers={"Accept": "text/event-stream"})  # fmt: skip
        assert connection.getresponse().status == 403
        connection.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_prints_a_message_published_from_django(server, rdb):
    url = f"{server.ws_base.replace('ws:', 'http:', 1)}/ws/{FACILITY}?subscribe-broadcast"
    publish("stored")  # curl's first event: once it has it, its stream is subscribed
    curl = subprocess.Popen(
        ["curl", "-sN", "-H", "Accept: text/event-stream", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert curl.stdout.readline() == "data: stored\n"
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("hello curl")
        lines = iter(curl.stdout.readline, "")
        assert next(line for line in lines if line.startswith("data:")) == "data: hello curl\n"
    finally:
        curl.kill()
        curl.wait()


CSRF = "k" * 32  # a CSRF secret: the cookie and the header carry it as Django checks them


def post(server, query: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    url = urlsplit(server.ws_base.replace("ws:", "http:", 1))
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("POST", f"/ws/{FACILITY}?{query}", body=body, headers=headers or {})
    response = connection.getresponse()
    try:
        return response.status, response.read()
    finally:
        connection.close()


def with_csrf(cookie: str = "") -> dict:
    cookies = f"csrftoken={CSRF}" + (f"; {cookie}" if cookie else "")
    return {"Cookie": cookies, "X-CSRFToken": CSRF, "Content-Type": "text/plain"}


def test_a_post_publishes_what_an_event_stream_s_client_sends(server, rdb):
    """The body of a POST to the websocket URL is published as a client message of its
    ``publish-*`` keys; Django's CSRF rules apply to it."""
    with streaming(server, "subscribe-broadcast") as stream:
        assert post(server, "publish-broadcast", b"from a POST", with_csrf()) == (204, b"")
        assert stream.data() == "from a POST"
        status, body = post(server, "publish-broadcast", b"forged")  # no CSRF token
        assert status == 403 and b"CSRF" in body
        assert post(server, "subscribe-broadcast", b"x", with_csrf())[0] == 404
        assert post(server, "publish-broadcast", b"x" * 70_000, with_csrf())[0] == 413
        assert post(server, "publish-broadcast", b"after", with_csrf())[0] == 204
        assert stream.data() == "after"  # nothing refused was published


def test_a_post_with_a_token_needs_no_csrf_and_goes_through_the_hook(server, users):
    token = connection_token(users["john"], ["publish-user", "subscribe-user"], FACILITY)
    hooks = {FACILITY: "tests.support.callbacks.moderate"}
    cookie = session_cookie(login("john")).split(": ", 1)[1]
    with (
        override_settings(WS4REDIS_HOOKS=hooks),
        streaming(server, "subscribe-user", {"Cookie": cookie}) as stream,
    ):
        query = f"publish-user&{QUERY_KEY}={token}"
        status, body = post(server, query, b"forbidden")
        assert status == 200 and json.loads(body)["type"] == "rejected"
        assert post(server, query, b"shout") == (204, b"")
        assert stream.data() == "SHOUT"


def test_another_allowed_origin_may_read_the_stream_and_others_are_refused(server, rdb):
    """A page of an allowed origin reads the stream with its credentials (CORS, as an
    EventSource with ``withCredentials`` asks); an origin that is not allowed gets 403."""
    allowed = "https://app.example.com"
    with override_settings(WS4REDIS_ALLOWED_ORIGINS=[allowed]):
        with streaming(server, "subscribe-broadcast", {"Origin": allowed}) as stream:
            response = stream.response
            assert response.getheader("Access-Control-Allow-Origin") == allowed
            assert response.getheader("Access-Control-Allow-Credentials") == "true"
        url = urlsplit(server.ws_base.replace("ws:", "http:", 1))
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request("GET", f"/ws/{FACILITY}?subscribe-broadcast",
                           headers={"Accept": "text/event-stream",
                                    "Origin": "https://evil.example"})  # fmt: skip
        assert connection.getresponse().status == 403
        connection.close()


def test_a_stream_that_is_not_read_is_ended_and_others_get_everything(server, rdb):
    """An anonymous client that opens a stream and stops reading holds no more than
    ``WS4REDIS_MAX_BUFFER_SIZE`` once the server knows it is behind: its stream is ended
    (a ``close`` event of 1008, or cut off when it cannot take even that), and its
    neighbour gets every message in order. The blocking runtimes know it once a write has
    waited ``SOCKET_WAIT``: the live counts say when the stream was let go, and only then
    is it read (under ASGI the stream ends once its held-back send returns)."""
    count, payload, facility = 200, "x" * 65536, "unread"  # counted alone in the live counts
    url = urlsplit(server.ws_base.replace("ws:", "http:", 1))

    def open_streams() -> int:
        return live.facilities(rdb)[0][facility]

    with override_settings(WS4REDIS_MAX_BUFFER_SIZE=256 * 1024):
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect((url.hostname, url.port))
        slow.sendall(f"GET /ws/{facility}?subscribe-broadcast HTTP/1.1\r\nHost: x\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())  # fmt: skip
        head = slow.recv(4096)  # its head: subscribed
        good_stream = streaming(server, "subscribe-broadcast", facility=facility)
        with contextlib.closing(slow), good_stream as good:
            assert head.startswith(b"HTTP/1.1 200")
            wait_until(lambda: open_streams() == 2, "both streams in the live counts")
            for number in range(count):
                publish(f"{number:06d}{payload}", facility)
                assert good.data() == f"{number:06d}{payload}"
            if server.runtime != "asgi":  # there the app cannot let go of it while a send
                # waits for the client: what it held is dropped, its stream ends once read
                wait_until(lambda: open_streams() == 1, "the stream not read to be ended")
            received = bytearray()
            with contextlib.suppress(ConnectionError):
                while chunk := slow.recv(65536):  # to its end: a timeout here fails the test
                    received += chunk
    assert len(received) < count * len(payload)
