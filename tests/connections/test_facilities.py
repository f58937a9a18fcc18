"""Many facilities on one websocket (docs/reference.md#many-facilities-on-one-websocket): a
client that speaks ``ws4redis.v1`` subscribes and unsubscribes facilities on an open
connection, each checked by the rules of an opening and answered; messages say their
facility; a bad request gets an error answer and the connection goes on."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator

import pytest
import redis
import websocket
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

import ws4redis
from tests.support.clients import connected, login, publish_marker, recv_close, session_cookie
from tests.support.servers import free_port, private_redis, wait_until
from ws4redis.publisher import RedisPublisher
from ws4redis.tokens import QUERY_KEY, connection_token

PROTOCOL = "ws4redis.v1"


class Mux:
    """A ``ws4redis.v1`` client: requests with ids, and what the server sends, as JSON."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.seen: list[dict] = []

    def send(self, **request) -> int:
        request.setdefault("id", next(self.ids))
        self.ws.send(json.dumps(request))
        return request["id"]

    def next(self) -> dict:
        message = json.loads(self.ws.recv())
        self.seen.append(message)
        return message

    def answer(self, request_id: int) -> dict:
        """The answer to ``request_id`` (what comes before it is kept in ``seen``)."""
        while (message := self.next()).get("id") != request_id or message["type"] == "message":
            pass
        return message

    def subscribe(self, facility: str, *keys: str, **fields) -> dict:
        return self.answer(
            self.send(type="subscribe", facility=facility, keys=list(keys), **fields)
        )

    def until(self, facility: str, data: str) -> list[dict]:
        """Every message up to the one on ``facility`` with ``data``."""
        got = []
        while True:
            message = self.next()
            if message.get("type") == "message":
                got.append(message)
                if message["facility"] == facility and message.get("data") == data:
                    return got


@contextlib.contextmanager
def multiplexed(server, query: str = "", **kwargs) -> Iterator[Mux]:
    kwargs.setdefault("timeout", 10)
    url = server.ws_url + (f"?{query}" if query else "")
    ws = websocket.create_connection(url, subprotocols=[PROTOCOL], **kwargs)
    try:
        yield Mux(ws)
    finally:
        ws.close()


def broadcast(facility: str, data: str) -> None:
    RedisPublisher(facility=facility, broadcast=True).publish_message(data, expire=0)


def test_one_websocket_carries_three_facilities_and_unsubscribes_one(server):
    """Subscribed after opening, each facility's messages arrive marked with it; once
    ``beta`` is unsubscribed (and answered), nothing of it arrives any more."""
    with multiplexed(server) as mux:
        assert mux.ws.subprotocol == PROTOCOL
        for name in ("alpha", "beta", "gamma"):
            answered = mux.subscribe(name, "subscribe-broadcast")
            assert answered == {"type": "subscribed", "id": answered["id"], "facility": name}
        for name in ("alpha", "beta", "gamma"):
            broadcast(name, f"to {name}")
        got = mux.until("gamma", "to gamma")
        assert [(m["facility"], m["channel"], m["data"]) for m in got] == [
            ("alpha", "broadcast", "to alpha"),
            ("beta", "broadcast", "to beta"),
            ("gamma", "broadcast", "to gamma"),
        ]
        request = mux.send(type="unsubscribe", facility="beta")
        assert mux.answer(request) == {"type": "unsubscribed", "id": request, "facility": "beta"}
        broadcast("beta", "too late")
        broadcast("alpha", "after")
        got = mux.until("alpha", "after")
        assert [m["facility"] for m in got] == ["alpha"]


def test_a_plain_url_is_unchanged_by_the_subprotocol_of_others(server):
    """Without ``ws4redis.v1`` offered, a websocket is what its URL names: plain messages."""
    with connected(server, "subscribe-broadcast", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        broadcast("unittest", "plain")
        assert ws.recv() == "plain"


def test_the_url_of_a_multiplexed_websocket_names_no_facility(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(
            server.url("subscribe-broadcast"), subprotocols=[PROTOCOL], timeout=10
        )
    assert refused.value.status_code in (400, 403)  # ASGI servers turn refusals into 403


@pytest.mark.parametrize(
    ("request_text", "status", "says"),
    [
        ("not json", 400, "JSON object"),
        ("[1, 2]", 400, "JSON object"),
        ('{"type": "dance", "facility": "x"}', 400, "type is one of"),
        ('{"type": "subscribe", "facility": "a/b"}', 400, "without '/'"),
        ('{"type": "subscribe", "facility": "x", "keys": "subscribe-broadcast"}', 400, "keys"),
        ('{"type": "subscribe", "id": [1], "facility": "x"}', 400, "id is"),
        ('{"type": "publish", "facility": "nowhere", "data": "x"}', 404, "not subscribed"),
        ('{"type": "unsubscribe", "facility": "nowhere"}', 404, "not subscribed"),
        ('{"type": "subscribe", "facility": "x", "since": "broadcast:??:1"}', 400, "epoch"),
    ],
)
def test_a_bad_request_is_answered_and_the_connection_goes_on(server, request_text, status, says):
    with multiplexed(server) as mux:
        mux.subscribe("alpha", "subscribe-broadcast")
        mux.ws.send(request_text)
        error = mux.next()
        assert error["type"] == "error" and error["status"] == status, error
        assert says in error["reason"]
        broadcast("alpha", "still here")
        assert mux.until("alpha", "still here")


def test_a_subscription_is_refused_by_the_rules_of_an_opening(server):
    """``WS4REDIS_PERMISSIONS`` refuses staff-only publishing to an anonymous client: the
    request gets 403, and nothing of that facility is subscribed."""
    rules = {"admin": {"subscribe": "staff"}}
    with override_settings(WS4REDIS_PERMISSIONS=rules), multiplexed(server) as mux:
        refused = mux.subscribe("admin", "subscribe-broadcast")
        assert refused["type"] == "error" and refused["status"] == 403
        assert "refuses subscribe-broadcast" in refused["reason"]
        mux.subscribe("alpha", "subscribe-broadcast")
        broadcast("admin", "secret")
        broadcast("alpha", "public")
        assert [m["facility"] for m in mux.until("alpha", "public")] == ["alpha"]


def test_twice_the_same_facility_and_more_than_allowed_are_refused(server):
    with override_settings(WS4REDIS_MAX_FACILITIES=2), multiplexed(server) as mux:
        mux.subscribe("alpha", "subscribe-broadcast")
        assert mux.subscribe("alpha", "subscribe-broadcast")["status"] == 409
        mux.subscribe("beta", "subscribe-broadcast")
        refused = mux.subscribe("gamma", "subscribe-broadcast")
        assert refused["status"] == 429 and "WS4REDIS_MAX_FACILITIES" in refused["reason"]


def test_publishing_on_a_facility_follows_its_keys_and_echo(server):
    """A facility subscribed with publish-broadcast publishes there (a plain websocket of
    that facility hears it); without ``echo`` the author's own message is not sent back,
    and a facility whose keys publish nowhere answers 404."""
    with (
        connected(server, "subscribe-broadcast", facility="alpha") as plain,
        multiplexed(server) as mux,
    ):
        mux.subscribe("alpha", "subscribe-broadcast", "publish-broadcast")
        mux.subscribe("beta", "subscribe-broadcast", "publish-broadcast", "echo")
        mux.subscribe("gamma", "subscribe-broadcast")
        mux.ws.send(json.dumps({"type": "publish", "facility": "alpha", "data": "from mux"}))
        assert plain.recv() == "from mux"
        mux.ws.send(json.dumps({"type": "publish", "facility": "beta", "data": "echoed"}))
        got = mux.until("beta", "echoed")
        assert [(m["facility"], m["data"], m.get("from")) for m in got] == [
            ("beta", "echoed", None)
        ]
        request = mux.send(type="publish", facility="gamma", data="x")
        assert mux.answer(request)["status"] == 404


@override_settings(WS4REDIS_HISTORY={"logbook": {"size": 10, "ttl": 600}})
def test_each_facility_recovers_from_its_own_position(server):
    """A facility with history resumes where the client names (``since``), getting what
    was published since then, each with its position."""
    publisher = RedisPublisher(facility="logbook", broadcast=True)
    for n in range(3):
        publisher.publish_message(f"entry {n}")
    with multiplexed(server) as mux:
        mux.subscribe("logbook", "subscribe-broadcast")
        first = mux.until("logbook", "entry 2")
        epoch = first[-1]["epoch"]
        assert [m["offset"] for m in first] == [3]  # a first subscription: the latest
    publisher.publish_message("entry 3")
    with multiplexed(server) as mux:
        mux.subscribe("logbook", "subscribe-broadcast", since=f"broadcast:{epoch}:2")
        got = mux.until("logbook", "entry 3")
        assert [(m["data"], m["offset"]) for m in got] == [("entry 2", 3), ("entry 3", 4)]


def test_django_unsubscribes_one_facility_or_closes_the_websocket(server, users):
    """``unsubscribe(user=..., facility=...)`` drops only that facility, and the client is
    told with the code; ``disconnect(facility=...)`` closes a websocket that carries it."""
    cookie = session_cookie(login("john"))
    with multiplexed(server, header=[cookie]) as mux:
        mux.subscribe("alpha", "subscribe-user")
        mux.subscribe("beta", "subscribe-user")
        assert ws4redis.unsubscribe(user="john", facility="beta", reason="go") >= 1
        while (told := mux.next())["type"] != "unsubscribed":
            pass
        assert told == {"type": "unsubscribed", "id": None, "facility": "beta",
                        "code": 4004, "reason": "go"}  # fmt: skip
        RedisPublisher(facility="beta", users=["john"]).publish_message("gone", expire=0)
        RedisPublisher(facility="alpha", users=["john"]).publish_message("here", expire=0)
        assert [m["facility"] for m in mux.until("alpha", "here")] == ["alpha"]
        ws4redis.unsubscribe(user="john", facility="gamma")  # none of its facilities
        ws4redis.disconnect(user="john", facility="alpha", code=4003, reason="by staff")
        assert recv_close(mux.ws) == 4003


def test_unsubscribe_closes_a_websocket_of_that_facility_alone(server, users):
    cookie = session_cookie(login("john"))
    with connected(server, "subscribe-user", header=[cookie]) as ws:
        ws4redis.unsubscribe(user="john", facility="unittest")
        assert recv_close(ws) == 4004


def test_identity_is_read_at_each_subscription(server, users):
    """A session that logged out meanwhile subscribes anonymous: its user channel is
    refused, since the rules see Django's state now, not the opening's."""
    client = login("john")
    cookie = session_cookie(client)
    rules = {"*": {"subscribe": {"user": "authenticated"}}}
    with (
        override_settings(WS4REDIS_PERMISSIONS=rules),
        multiplexed(server, header=[cookie]) as mux,
    ):
        assert mux.subscribe("alpha", "subscribe-user")["type"] == "subscribed"
        SessionStore(
            client.session.session_key
        ).delete()  # also closes the websocket of that session
        assert recv_close(mux.ws) == 4001
    with (
        override_settings(WS4REDIS_PERMISSIONS=rules),
        multiplexed(server, header=[cookie]) as mux,
    ):
        refused = mux.subscribe("alpha", "subscribe-user")
        assert refused["status"] == 403


def test_what_other_facilities_hear_is_not_held_up_by_a_marker(server):
    """A plain websocket next to a multiplexed one hears as before."""
    with (
        connected(server, "subscribe-broadcast") as plain,
        multiplexed(server) as mux,
    ):
        mux.subscribe("unittest", "subscribe-broadcast")
        marker = publish_marker()
        assert plain.recv() == marker.decode()
        assert mux.until("unittest", marker.decode())


@override_settings(WS4REDIS_HISTORY={"logbook": {"size": 10, "ttl": 600}})
def test_a_facility_catches_up_after_its_subscription_connection_is_killed(server, tmp_path):
    """Redis drops the process's subscription connection: the facility is subscribed again,
    and what its history kept meanwhile reaches the connection once, in order."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with (
        override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}),
        private_redis(tmp_path, *args, port=port),
    ):
        admin = redis.Redis(port=port)
        with multiplexed(server) as mux:
            mux.subscribe("logbook", "subscribe-broadcast")
            publisher = RedisPublisher(facility="logbook", broadcast=True)
            publisher.publish_message("before")
            assert mux.until("logbook", "before")
            assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            publisher.publish_message("meanwhile")  # maybe before the resubscription
            channel = "ws4redis:broadcast:logbook"
            wait_until(lambda: admin.pubsub_numsub(channel)[0][1] == 1, "a resubscription")
            publisher.publish_message("after")
            got = mux.until("logbook", "after")
            assert [m["data"] for m in got] == ["meanwhile", "after"]


def test_a_subscription_redis_cannot_confirm_is_answered_503(server, tmp_path):
    """Redis is down when a facility is asked for: 503, the connection stays open, and the
    same facility subscribes once Redis is back."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as first, multiplexed(server) as mux:
            first.kill()
            first.wait()
            refused = mux.subscribe("alpha", "subscribe-broadcast")
            assert (refused["type"], refused["status"]) == ("error", 503)
            with private_redis(tmp_path, *args, port=port):
                assert mux.subscribe("alpha", "subscribe-broadcast")["type"] == "subscribed"
                broadcast("alpha", "back")
                assert mux.until("alpha", "back")


def test_a_token_client_subscribes_what_its_token_grants_and_nothing_more(server, users):
    token = connection_token(users["john"], ["subscribe-user"], ["alpha", "beta"])
    with multiplexed(server, f"{QUERY_KEY}={token}") as mux:
        assert mux.subscribe("alpha", "subscribe-user")["type"] == "subscribed"
        assert mux.subscribe("gamma", "subscribe-user")["status"] == 403
        refused = mux.subscribe("beta", "subscribe-broadcast")
        assert refused["status"] == 403 and "does not grant" in refused["reason"]
        RedisPublisher(facility="alpha", users=["john"]).publish_message("to john", expire=0)
        assert mux.until("alpha", "to john")
