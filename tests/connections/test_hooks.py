"""Hooks for client messages (docs/reference.md#hooks-for-client-messages), on every runtime:
a facility's hook sees what a client sends, with the identity Django has now, and accepts,
changes, rejects (the sender is told, nobody else sees it) or answers it; calls get their
answer by id; a failing or slow hook is answered with an error and the loop goes on."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.connections.test_facilities import multiplexed
from tests.support.clients import connected, login, publish_marker, session_cookie

HOOKS = {"moderated": "tests.support.callbacks.moderate"}
pytestmark = pytest.mark.usefixtures("hooked")


@pytest.fixture
def hooked(server):
    """After ``server``: uWSGI's process takes the overrides made once it runs."""
    with override_settings(WS4REDIS_HOOKS=HOOKS):
        yield


def heard_until_marker(ws, facility: str) -> list[str]:
    """What a plain websocket of ``facility`` hears before the marker."""
    marker = publish_marker(facility).decode()
    heard = []
    while (message := ws.recv()) != marker:
        heard.append(message)
    return heard


def test_a_hook_rejects_a_message_the_sender_is_told_and_others_see_nothing(server):
    with (
        connected(server, "subscribe-broadcast", facility="moderated") as listener,
        multiplexed(server) as mux,
    ):
        mux.subscribe("moderated", "subscribe-broadcast", "publish-broadcast")
        rejected = mux.send(type="publish", facility="moderated", data="forbidden")
        assert mux.answer(rejected) == {"type": "rejected", "id": rejected,
                                        "facility": "moderated", "reason": "not here"}  # fmt: skip
        answered = mux.send(type="publish", facility="moderated", data="ping")
        assert mux.answer(answered)["data"] == "pong"
        mux.send(type="publish", facility="moderated", data="shout")
        mux.send(type="publish", facility="moderated", data="as sent")
        assert listener.recv() == "SHOUT"
        assert listener.recv() == "as sent"
        assert heard_until_marker(listener, "moderated") == []


def test_a_call_is_answered_by_id_with_the_identity_django_has_now(server, users):
    cookie = session_cookie(login("john"))
    with multiplexed(server, header=[cookie]) as mux:
        mux.subscribe("moderated", "subscribe-broadcast")
        first = mux.send(type="call", facility="moderated", name="whoami", data=[1, 2])
        second = mux.send(type="call", facility="moderated", name="nope", data=None)
        assert mux.answer(first) == {"type": "reply", "id": first, "facility": "moderated",
                                     "data": {"user": "john", "data": [1, 2]}}  # fmt: skip
        refused = mux.answer(second)
        assert (refused["type"], refused["status"], refused["reason"]) == (
            "error", 403, "no call nope"
        )  # fmt: skip


def test_a_failing_or_slow_hook_is_answered_with_an_error_and_the_connection_goes_on(server):
    with override_settings(WS4REDIS_HOOK_TIMEOUT=0.2), multiplexed(server) as mux:
        mux.subscribe("moderated", "subscribe-broadcast", "publish-broadcast")
        failing = mux.send(type="call", facility="moderated", name="fail")
        assert mux.answer(failing)["status"] == 500
        slow = mux.send(type="call", facility="moderated", name="slow")
        assert mux.answer(slow)["status"] == 504
        after = mux.send(type="call", facility="moderated", name="whoami", data="x")
        assert mux.answer(after)["data"] == {"user": "", "data": "x"}


def test_calls_without_a_hook_are_not_found(server):
    with multiplexed(server) as mux:
        mux.subscribe("plain", "subscribe-broadcast")
        call = mux.send(type="call", facility="plain", name="anything")
        assert mux.answer(call)["status"] == 404


def test_a_one_facility_websocket_goes_through_its_facility_hook_too(server):
    """Without the subprotocol the hook still decides: nobody reaches a hooked facility
    around it. The sender gets the verdict as a JSON text message."""
    with (
        connected(server, "subscribe-broadcast", facility="moderated") as listener,
        connected(server, "publish-broadcast", facility="moderated") as sender,
    ):
        sender.send("forbidden")
        told = json.loads(sender.recv())
        assert (told["type"], told["reason"]) == ("rejected", "not here")
        sender.send("shout")
        assert listener.recv() == "SHOUT"
        assert heard_until_marker(listener, "moderated") == []
