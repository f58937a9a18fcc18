"""Deciding whether a request becomes a websocket: statuses, channels, subprotocols."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory, override_settings

from tests.core.test_relay import HANDSHAKE
from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import Accepted, client_message_expiry, open_connection

ANONYMOUS = {"WS4REDIS_PROCESS_REQUEST": lambda request: None}


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


def test_client_messages_are_stored_for_the_shorter_of_the_two_expiries():
    assert client_message_expiry() == 10  # the test settings' WS4REDIS_EXPIRE, under 60
    with override_settings(WS4REDIS_EXPIRE=3600):
        assert client_message_expiry() == 60  # bounded by default
    with override_settings(WS4REDIS_EXPIRE=None):
        assert client_message_expiry() == 0
    with override_settings(WS4REDIS_CLIENT_EXPIRE=0):
        assert client_message_expiry() == 0
