"""Anonymous openings are judged once per URL and page (``Decisions``), and the default
subscriber names an anonymous client's channels once per facility and keys: the websockets
that follow get the same channels, a setting changed applies to the next opening, and
nothing with an identity is ever served what an anonymous opening was decided or named,
or the reverse."""

from __future__ import annotations

from importlib import import_module

import pytest
import websocket
from django.conf import settings
from django.test import override_settings

from tests.support.clients import FACILITY, connected, login, publish_marker, session_cookie
from ws4redis.core.opening import DECISION_KEY_SIZE
from ws4redis.publisher import RedisPublisher
from ws4redis.runtimes.opening import decisions
from ws4redis.subscriber import anonymous_names
from ws4redis.tokens import QUERY_KEY, connection_token

AUTHENTICATED_ONLY = {FACILITY: {"subscribe": "authenticated"}}
ANONYMOUS_KEPT = {"WS4REDIS_ALLOWED_CHANNELS": None, "WS4REDIS_DECISIONS_KEPT": 8}
"""No project code (the suite's settings have a channel callback, which is judged each
time), and a bound of the test's own, so that its count starts empty."""


def test_websockets_opening_the_same_url_are_judged_once_and_all_hear(socket_server):
    """The in-process runtimes share this process's decisions."""
    with override_settings(**ANONYMOUS_KEPT):
        with connected(socket_server, "subscribe-broadcast") as first:
            with connected(socket_server, "subscribe-broadcast") as second:
                assert len(decisions()) == 1
                marker = publish_marker()
                assert first.recv() == second.recv() == marker.decode()


@override_settings(WS4REDIS_ALLOWED_CHANNELS=None)
def test_a_setting_changed_applies_to_the_next_opening_of_a_judged_url(socket_server):
    with connected(socket_server, "subscribe-broadcast"):
        assert len(decisions()) > 0
    with override_settings(WS4REDIS_PERMISSIONS=AUTHENTICATED_ONLY):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            socket_server.connect("subscribe-broadcast")
    assert refused.value.status_code == 403


def test_an_anonymous_client_is_never_given_what_a_session_was_decided(socket_server, users):
    """A user's session may open what the rules give only to the authenticated: that is
    judged on its session each time and never kept, so an anonymous client opening the
    same URL after it (its key without cookies is the same) is refused."""
    cookie = session_cookie(login("john"))
    with override_settings(WS4REDIS_PERMISSIONS=AUTHENTICATED_ONLY, **ANONYMOUS_KEPT):
        with connected(socket_server, "subscribe-broadcast", header=[cookie]) as john:
            with pytest.raises(websocket.WebSocketBadStatusException) as refused:
                socket_server.connect("subscribe-broadcast")
            assert refused.value.status_code == 403
            marker = publish_marker()
            assert john.recv() == marker.decode()
        assert len(decisions()) == 0


OWN_CHANNELS = "subscribe-user&subscribe-session"


def anonymous_session() -> str:
    """The key of a saved session nobody logged into (a visitor's cart, say)."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session["visited"] = True
    session.save()
    assert session.session_key
    return session.session_key


def test_a_session_and_a_token_hear_their_own_channels_after_an_anonymous_client(
    socket_server, users
):
    """An anonymous client asking for its user's and session's channels gets none, and
    that naming is kept for the facility and keys; john, asking the same keys with his
    session, then with a token (a user and no session), still gets his own channels, and a
    visitor's session without a user its session's."""
    john = login("john")
    token = connection_token(users["john"], ["subscribe-user"], FACILITY)
    with override_settings(**ANONYMOUS_KEPT):
        with connected(socket_server, OWN_CHANNELS):
            assert len(anonymous_names()) == 1
        with connected(socket_server, OWN_CHANNELS, header=[session_cookie(john)]) as his:
            RedisPublisher(facility=FACILITY, users=["john"]).publish_message(
                "by session", expire=0
            )
            assert his.recv() == "by session"
        visitor = anonymous_session()
        cookie = f"Cookie: {settings.SESSION_COOKIE_NAME}={visitor}"
        with connected(socket_server, OWN_CHANNELS, header=[cookie]) as theirs:
            RedisPublisher(facility=FACILITY, sessions=[visitor]).publish_message(
                "visitor", expire=0
            )
            assert theirs.recv() == "visitor"
        with connected(socket_server, f"subscribe-user&{QUERY_KEY}={token}") as tokened:
            with connected(socket_server, "subscribe-user"):
                pass  # the token's keys, anonymous: named (none) and kept
            RedisPublisher(facility=FACILITY, users=["john"]).publish_message("by token", expire=0)
            assert tokened.recv() == "by token"
        with connected(socket_server, f"subscribe-user&{QUERY_KEY}={token}") as later:
            RedisPublisher(facility=FACILITY, users=["john"]).publish_message("after", expire=0)
            assert later.recv() == "after"


def test_a_client_varying_its_url_keeps_nothing_past_the_bounds(socket_server):
    """An anonymous client may open any facility with anything in its query, each a new
    key. Past ``WS4REDIS_DECISIONS_KEPT`` both stores empty themselves, a request too large
    for a key is judged every time and never kept, and a bystander's websocket still hears
    its broadcast."""
    with override_settings(**{**ANONYMOUS_KEPT, "WS4REDIS_DECISIONS_KEPT": 4}):
        with connected(socket_server, "subscribe-broadcast") as bystander:
            for number in range(10):
                with connected(socket_server, "subscribe-broadcast", facility=f"probe{number}"):
                    assert len(decisions()) <= 4
                    assert len(anonymous_names()) <= 4
            kept = len(decisions())
            with connected(socket_server, "subscribe-broadcast&junk=" + "x" * DECISION_KEY_SIZE):
                assert len(decisions()) == kept
            marker = publish_marker()
            assert bystander.recv() == marker.decode()
