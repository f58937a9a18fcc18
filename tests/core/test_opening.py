"""Deciding whether a request becomes a websocket: statuses, channels, subprotocols."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory, override_settings
from websockets.client import ClientProtocol
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from tests.core.test_relay import HANDSHAKE
from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import Accepted, client_message_expiry, may_block, open_connection
from ws4redis.core.relay import Start

ANONYMOUS = {"WS4REDIS_PROCESS_REQUEST": lambda request: None}
NO_HOOKS = {"WS4REDIS_PROCESS_REQUEST": None, "WS4REDIS_ALLOWED_CHANNELS": None}


def opening(path: str = "/ws/chat", method: str = "get", **headers) -> Accepted | Rejection:
    request = getattr(RequestFactory(), method)(path, **{**HANDSHAKE, **headers})
    with override_settings(**ANONYMOUS):
        return open_connection(request)


@pytest.mark.parametrize(
    "path, method, headers, status",
    [
        ("/elsewhere", "get", {}, 404),
        ("/ws/chat", "post", {}, 400),
        ("/ws/chat", "get", {"HTTP_UPGRADE": "h2c"}, 400),
        ("/ws/chat", "get", {"HTTP_SEC_WEBSOCKET_VERSION": None}, 426),
        ("/ws/chat", "get", {"HTTP_SEC_WEBSOCKET_VERSION": "8"}, 400),
        ("/ws/chat", "get", {"HTTP_SEC_WEBSOCKET_KEY": "short"}, 400),
        ("/ws/chat", "get", {"HTTP_ORIGIN": "https://evil.example"}, 403),
    ],
)
def test_refusals_and_their_statuses(path, method, headers, status):
    missing = [name for name, value in headers.items() if value is None]
    request = getattr(RequestFactory(), method)(path, **{**HANDSHAKE, **headers})
    for name in missing:
        del request.META[name]
    with override_settings(**ANONYMOUS):
        outcome = open_connection(request)
    assert isinstance(outcome, Rejection)
    assert outcome.status == status
    assert outcome.body  # says what is wrong


def test_channel_keys_are_case_insensitive_and_unknown_ones_ignored():
    outcome = opening("/ws/chat?Subscribe-Broadcast&PUBLISH-user&nonsense&Echo")
    assert isinstance(outcome, Accepted)
    assert outcome.channels == ["publish-user", "subscribe-broadcast"]
    assert outcome.echo


def test_allowed_channels_narrows_or_refuses():
    request = RequestFactory().get("/ws/chat?subscribe-broadcast&publish-broadcast", **HANDSHAKE)
    with override_settings(
        **ANONYMOUS, WS4REDIS_ALLOWED_CHANNELS=lambda r, c: [k for k in c if "publish" not in k]
    ):
        outcome = open_connection(request)
    assert isinstance(outcome, Accepted) and outcome.channels == ["subscribe-broadcast"]

    def refuse(request, channels):
        raise PermissionDenied("not you")

    with override_settings(**ANONYMOUS, WS4REDIS_ALLOWED_CHANNELS=refuse):
        outcome = open_connection(request)
    assert isinstance(outcome, Rejection) and outcome.status == 403 and b"not you" in outcome.body


def test_failing_callback_is_a_500_not_an_exception():
    def broken(request):
        raise RuntimeError("boom")

    request = RequestFactory().get("/ws/chat", **HANDSHAKE)
    with override_settings(WS4REDIS_PROCESS_REQUEST=broken):
        outcome = open_connection(request)
    assert isinstance(outcome, Rejection) and outcome.status == 500


def test_requested_subprotocol_is_answered_with_the_first_offered():
    outcome = opening(HTTP_SEC_WEBSOCKET_PROTOCOL="chat, superchat")
    assert isinstance(outcome, Accepted) and outcome.response is not None
    assert outcome.response.headers["Sec-WebSocket-Protocol"] == "chat"
    plain = opening()
    assert isinstance(plain, Accepted) and plain.response is not None
    assert "Sec-WebSocket-Protocol" not in plain.response.headers


def test_unframed_opening_has_no_handshake_for_asgi_servers():
    request = RequestFactory().get("/ws/chat?subscribe-broadcast", **HANDSHAKE)
    with override_settings(**ANONYMOUS):
        outcome = open_connection(request, framing=False)
    assert isinstance(outcome, Accepted) and outcome.protocol is None


def test_long_query_is_refused_with_414_and_many_fields_with_400():
    with override_settings(WS4REDIS_MAX_QUERY_SIZE=64):
        outcome = opening("/ws/chat?subscribe-broadcast&" + "x" * 100)
    assert isinstance(outcome, Rejection) and outcome.status == 414
    crowded = "&".join(f"k{n}" for n in range(1100))  # more than Django's 1000 fields
    outcome = opening(f"/ws/chat?{crowded}")
    assert isinstance(outcome, Rejection) and outcome.status == 414  # by default
    with override_settings(WS4REDIS_MAX_QUERY_SIZE=100_000):
        outcome = opening(f"/ws/chat?{crowded}")
    assert isinstance(outcome, Rejection) and outcome.status == 400
    assert b"DATA_UPLOAD_MAX_NUMBER_FIELDS" in outcome.body


def test_client_messages_are_not_stored_unless_allowed_and_then_for_the_shorter_expiry():
    with override_settings(WS4REDIS_EXPIRE=3600):
        assert client_message_expiry() == 0  # by default nothing a client sends is stored
    with override_settings(WS4REDIS_CLIENT_EXPIRE=60):
        assert client_message_expiry() == 10  # the test settings' WS4REDIS_EXPIRE, under 60
        with override_settings(WS4REDIS_EXPIRE=3600):
            assert client_message_expiry() == 60
        with override_settings(WS4REDIS_EXPIRE=None):
            assert client_message_expiry() == 0


@pytest.mark.parametrize(
    "cookies, overrides, blocks",
    [
        ({}, {}, False),
        ({"sessionid": "abc"}, {}, True),
        ({"csrftoken": "x"}, {}, False),
        ({}, ANONYMOUS, True),
        ({}, {"WS4REDIS_ALLOWED_CHANNELS": lambda request, channels: channels}, True),
    ],
    ids=["no cookie", "session cookie", "other cookie", "process request", "allowed channels"],
)
def test_only_a_session_or_project_hooks_may_block_an_opening(cookies, overrides, blocks):
    """A runtime may open on its event loop what cannot wait for I/O (runwebsocket does)."""
    factory = RequestFactory()
    for name, value in cookies.items():
        factory.cookies[name] = value
    request = factory.get("/ws/chat", **HANDSHAKE)
    with override_settings(**{**NO_HOOKS, **overrides}):
        assert may_block(request) is blocks


def test_the_handshake_response_is_written_by_the_relay_and_frames_parse_right_after():
    """The protocol starts open (the server parsed the request): the 101 response is the
    relay's first output, and a frame the client sends next is a message."""
    outcome = opening("/ws/chat?publish-broadcast")
    assert isinstance(outcome, Accepted)
    relay = outcome.relay(0.0)
    relay.opened(Start([b"persisted"]))
    first, persisted = relay.data_to_send()[:2]
    assert first.startswith(b"HTTP/1.1 101 ") and persisted == b"\x81\x09persisted"
    client = ClientProtocol(parse_uri("ws://testserver/ws/chat"))
    client.state = OPEN
    client.send_text(b"hello")
    assert relay.receive_data(client.data_to_send()[0]) == [b"hello"]
