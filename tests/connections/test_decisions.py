"""Anonymous openings are judged once per URL and page (``Decisions``): the websockets that
follow get the same channels, a setting changed applies to the next opening, and nothing
with an identity is ever served what an anonymous opening was decided, or the reverse."""

from __future__ import annotations

import pytest
import websocket
from django.test import override_settings

from tests.support.clients import FACILITY, connected, login, publish_marker, session_cookie
from ws4redis.runtimes.opening import decisions

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
