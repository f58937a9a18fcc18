"""The opening above the core, with Django's request and settings: identity, the project's
callbacks, the settings read into plain options (the core's part: ``tests/core``)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory, override_settings

from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import Accepted
from ws4redis.runtimes.opening import (
    DEBUG_HOSTS,
    client_message_expiry,
    may_block,
    open_connection,
    read_options,
    upgrade_of,
)

HANDSHAKE = {
    "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
    "HTTP_SEC_WEBSOCKET_VERSION": "13",
}
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
        ("/ws/chat", "get", {"HTTP_SEC_WEBSOCKET_KEY": "short"}, 400),
        ("/ws/chat", "get", {"HTTP_ORIGIN": "https://evil.example"}, 403),
        (
            "/ws/chat",
            "get",
            {"HTTP_HOST": "evil.example", "HTTP_ORIGIN": "http://evil.example"},
            403,
        ),
    ],
)
def test_a_django_request_is_refused_with_the_core_s_statuses(path, method, headers, status):
    outcome = opening(path, method, **headers)
    assert isinstance(outcome, Rejection) and outcome.status == status


def test_the_request_reaches_the_core_as_plain_values():
    request = RequestFactory().get(
        "/ws/chat?subscribe-broadcast", secure=True, **HANDSHAKE, HTTP_ORIGIN="https://x"
    )
    upgrade = upgrade_of(request)
    assert (upgrade.method, upgrade.path, upgrade.query) == (
        "GET",
        "/ws/chat",
        "subscribe-broadcast",
    )
    assert upgrade.headers["Origin"] == "https://x" and upgrade.headers["Upgrade"] == "websocket"
    assert upgrade.host == "testserver" and upgrade.secure


def test_the_settings_are_read_into_plain_options_each_opening():
    with override_settings(WS4REDIS_MAX_BUFFER_SIZE=1234, WS4REDIS_ALLOWED_ORIGINS=["*"]):
        options = read_options()
    assert options.max_buffer == 1234 and options.handshake.allowed_origins == ("*",)
    assert "testserver" in options.handshake.allowed_hosts
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[]):
        assert read_options().handshake.allowed_hosts == DEBUG_HOSTS


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


def test_permissions_name_rules_or_call_the_project_s_code_with_the_request():
    request = RequestFactory().get("/ws/chat?subscribe-broadcast&publish-broadcast", **HANDSHAKE)
    seen = []

    def only_subscribers(request, facility, audience):
        seen.append((request.path, facility, audience))
        return True

    rules = {"chat": {"publish": "authenticated", "subscribe": only_subscribers}}
    with override_settings(**ANONYMOUS, WS4REDIS_PERMISSIONS=rules):
        outcome = open_connection(request)
    assert isinstance(outcome, Rejection) and outcome.status == 403
    assert b"publish-broadcast" in outcome.body and b"subscribe-broadcast" not in outcome.body
    assert seen == [("/ws/chat", "chat", "broadcast")]


def test_failing_callback_is_a_500_not_an_exception():
    def broken(request):
        raise RuntimeError("boom")

    request = RequestFactory().get("/ws/chat", **HANDSHAKE)
    with override_settings(WS4REDIS_PROCESS_REQUEST=broken):
        outcome = open_connection(request)
    assert isinstance(outcome, Rejection) and outcome.status == 500


def test_many_query_fields_are_refused_with_400():
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
        ({}, {"WS4REDIS_PERMISSIONS": {"*": {"publish": lambda r, f, a: True}}}, True),
        ({}, {"WS4REDIS_PERMISSIONS": {"*": {"publish": "staff"}}}, False),
    ],
    ids=[
        "no cookie", "session cookie", "other cookie", "process request", "allowed channels",
        "callable permission", "named permission",
    ],
)  # fmt: skip
def test_only_a_session_or_project_hooks_may_block_an_opening(cookies, overrides, blocks):
    """A runtime may open on its event loop what cannot wait for I/O (runwebsocket does)."""
    factory = RequestFactory()
    for name, value in cookies.items():
        factory.cookies[name] = value
    request = factory.get("/ws/chat", **HANDSHAKE)
    with override_settings(**{**NO_HOOKS, **overrides}):
        assert may_block(request) is blocks
