"""Django decides who hears and who speaks: what a client claims to be counts for nothing
until Django's own stores confirm it (every runtime)."""

from __future__ import annotations

import pytest
import websocket
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import ws4redis
from tests.support.clients import (
    FACILITY,
    connected,
    login,
    publish_marker,
    recv_close,
    session_cookie,
)
from ws4redis import settings as ws_settings

FORGED = "madeup0123456789forgedsessionkey"


def test_a_made_up_session_cookie_is_anonymous(server, rdb, users):
    """An attacker sends a session cookie the store never issued, asks for its session's
    channels and publishes there: it gets no session channel (nothing stored or published
    under the made-up key, nothing of it in Redis), while a real session still has its own."""
    query = "subscribe-session&publish-session&subscribe-broadcast&publish-broadcast&echo"
    forged = [f"Cookie: sessionid={FORGED}"]
    with override_settings(WS4REDIS_CLIENT_EXPIRE=10):
        with connected(server, query, header=forged) as attacker:
            attacker.send("filling Redis")  # one pipeline: the broadcast and any session
            assert attacker.recv() == "filling Redis"
            publish_marker()  # after the whole pipeline, so Redis delivers it last
            assert attacker.recv() == "--marker--"  # no second copy: no session channel
        assert not [key for key in rdb.keys("*") if FORGED.encode() in key]

        client = login("john")
        real = client.session.session_key
        own = "subscribe-session&publish-session&echo"
        with connected(server, own, header=[session_cookie(client)]) as owner:
            owner.send("mine")
            assert owner.recv() == "mine"  # a session's websocket hears its own session
    assert rdb.get(f"ws4redis:session:{real}:unittest") == b"mine"


PERMISSIONS = {
    "*": {"subscribe": "anyone", "publish": "authenticated"},
    "open": {},
    "staffroom": {"subscribe": {"broadcast": "staff", "user": "authenticated"}},
    "coded": {"publish": "tests.support.callbacks.publish_on_header"},
}


def refusal(server, query: str, facility: str = "unittest", **kwargs) -> tuple[int, bytes]:
    """The HTTP status and body answering a websocket request that must be refused."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(query, facility=facility, **kwargs)
    return refused.value.status_code, refused.value.resp_body or b""


def test_permissions_refuse_anonymous_publishers_with_403_naming_the_key(server, rdb, users):
    """With WS4REDIS_PERMISSIONS, a client with no cookie and no Origin (or a made-up
    session) that asks to publish where only users may is answered 403 naming the key; it
    may still subscribe; a logged-in user publishes; a facility configured open stays open."""
    with override_settings(WS4REDIS_PERMISSIONS=PERMISSIONS):
        for header in ([], [f"Cookie: sessionid={FORGED}"]):
            status, body = refusal(
                server, "subscribe-broadcast&publish-broadcast", header=header, suppress_origin=True
            )
            assert status == 403
            if server.runtime != "asgi":  # uvicorn's 403 may carry its own body
                assert b"publish-broadcast" in body and b"unittest" in body
        with connected(server, "subscribe-broadcast", suppress_origin=True) as reader:
            cookie = [session_cookie(login("john"))]
            with connected(server, "publish-broadcast", header=cookie) as john:
                john.send("from john")
                assert reader.recv() == "from john"
        with connected(server, "subscribe-broadcast&publish-broadcast&echo", facility="open") as ws:
            ws.send("open to all")
            assert ws.recv() == "open to all"


def test_permissions_per_audience_and_by_dotted_path(server, rdb, users):
    """A rule given per audience judges each key on its own; a dotted-path rule is called
    with the request, the facility and the audience."""
    with override_settings(WS4REDIS_PERMISSIONS=PERMISSIONS):
        cookie = [session_cookie(login("john"))]  # authenticated, not staff
        assert refusal(server, "subscribe-broadcast", "staffroom", header=cookie)[0] == 403
        assert refusal(server, "subscribe-user", "staffroom")[0] == 403
        with connected(server, "subscribe-user", facility="staffroom", header=cookie) as ws:
            assert ws.connected
        assert refusal(server, "publish-broadcast", "coded", header=cookie)[0] == 403
        allowed = ["Allow-Publish: YES"]
        with connected(server, "subscribe-broadcast", facility="coded") as reader:
            with connected(server, "publish-broadcast", facility="coded", header=allowed) as ws:
                ws.send("by the rule")
                assert reader.recv() == "by the rule"


@pytest.mark.parametrize(
    "permissions",
    [
        {"chat": {"read": "anyone"}},
        {"chat": {"publish": "authenticted"}},
        {"chat": {"subscribe": {"everyone": "anyone"}}},
        {"chat": "authenticated"},
    ],
    ids=["action", "misspelt-rule", "audience", "not-a-dict"],
)
def test_a_malformed_permissions_setting_is_named_by_the_system_check(permissions):
    with override_settings(WS4REDIS_PERMISSIONS=permissions):
        assert [name for name, _ in ws_settings.problems()] == ["WS4REDIS_PERMISSIONS"]
        with pytest.raises(ImproperlyConfigured, match="WS4REDIS_PERMISSIONS"):
            ws_settings.get("WS4REDIS_PERMISSIONS")  # and when it is read


def test_a_forged_signed_cookie_session_is_anonymous(socket_server, rdb):
    """With the signed-cookie engine the key is the data: a key with a bad signature names
    no session channel, one Django signed does."""
    from django.contrib.sessions.backends.signed_cookies import SessionStore

    query = "subscribe-session&publish-session&subscribe-broadcast&publish-broadcast&echo"
    signed = SessionStore()
    signed["visits"] = 1
    signed.save()
    engine = "django.contrib.sessions.backends.signed_cookies"
    with override_settings(SESSION_ENGINE=engine):
        for key, copies in ((FORGED + ":forged", 1), (signed.session_key, 2)):
            with connected(socket_server, query, header=[f"Cookie: sessionid={key}"]) as ws:
                ws.send("hello")
                assert ws.recv() == "hello"
                publish_marker()
                # Two channels: their copies may come either side of the marker.
                received = sorted(ws.recv() for _ in range(copies))
                assert received == ["--marker--", *["hello"] * (copies - 1)]


def control_subscriptions(rdb) -> list[bytes]:
    """The control channels some websocket process subscribes to (Redis's own count)."""
    return rdb.execute_command("PUBSUB", "CHANNELS", "ws4redis:control:*")


def test_logout_closes_that_sessions_websockets_in_the_websocket_process(server, rdb, users):
    """john logs out through Django (the user_logged_out signal, in this process); his
    websocket, in the server's process, is closed with 4001 "session ended". mary's stays
    open; an anonymous websocket subscribes to no control channel at all."""
    with connected(server, "subscribe-broadcast") as anonymous:
        publish_marker()
        assert anonymous.recv() == "--marker--"
        assert control_subscriptions(rdb) == []
        john, mary = login("john"), login("mary")
        with connected(server, "subscribe-broadcast", header=[session_cookie(john)]) as his:
            with connected(server, "subscribe-broadcast", header=[session_cookie(mary)]) as hers:
                assert control_subscriptions(rdb)
                john.logout()
                assert recv_close(his) == 4001
                publish_marker()
                assert hers.recv() == "--marker--"
                assert anonymous.recv() == "--marker--"


@override_settings(WS4REDIS_SUBSCRIBER="tests.support.callbacks.DisconnectedWhileOpening")
def test_a_session_ended_while_its_websocket_opens_closes_it(server, rdb, users):
    """Django ends the session after the websocket subscribed, before it opened: the
    command reaches it while opening and closes it once open (4001), never as a message."""
    john = login("john")
    with connected(server, "subscribe-broadcast", header=[session_cookie(john)]) as ws:
        opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, int.from_bytes(frame.data[:2], "big")) == (websocket.ABNF.OPCODE_CLOSE, 4001)


def test_a_deleted_session_closes_its_websockets(server, rdb, users):
    from django.contrib.sessions.models import Session

    john = login("john")
    with connected(server, "subscribe-session", header=[session_cookie(john)]) as ws:
        Session.objects.filter(session_key=john.session.session_key).delete()
        assert recv_close(ws) == 4001


def test_disconnect_while_redis_is_unreachable_logs_and_does_not_raise(caplog):
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": 1}):
        assert ws4redis.disconnect(session="abcdefgh12345678") is None
    assert "Cannot close the websockets" in caplog.text


def test_a_user_removed_from_a_group_opens_without_it(server, rdb, users):
    """mary logged in while in chatters (the session's ws4redis:memberof says so), then was
    removed: a websocket she opens afterwards neither hears nor publishes the group."""
    mary = login("mary")
    cookie = [session_cookie(mary)]
    users["mary"].groups.remove(Group.objects.get(name="chatters"))
    query = "subscribe-group&publish-group&subscribe-broadcast&publish-broadcast&echo"
    with override_settings(WS4REDIS_CLIENT_EXPIRE=10):
        with connected(server, query, header=cookie) as ws:
            ws.send("into the group")
            assert ws.recv() == "into the group"  # the broadcast copy
            publish_marker()
            assert ws.recv() == "--marker--"  # no group copy: not a member any more
        assert rdb.get("ws4redis:group:chatters:unittest") is None


@pytest.mark.parametrize(
    "change",
    ["user.groups.remove", "group.user_set.remove", "user.groups.clear", "group.delete",
     "user.deactivate", "user.delete"],
)  # fmt: skip
def test_a_change_of_membership_closes_the_open_websockets_concerned(server, rdb, users, change):
    """john is in chatters with a group websocket open; his membership changes in Django
    (either side of the relation, a clear, the group deleted, john deactivated or deleted):
    that websocket is closed with 4002 so it reconnects with the groups he has now; mary's,
    whose membership did not change, stays open (except when the whole group goes)."""
    john, mary = login("john"), login("mary")
    group = Group.objects.get(name="chatters")
    user = users["john"]
    with connected(server, "subscribe-group", header=[session_cookie(john)]) as his:
        with connected(
            server, "subscribe-group&subscribe-broadcast", header=[session_cookie(mary)]
        ) as hers:
            if change == "user.groups.remove":
                user.groups.remove(group)
            elif change == "group.user_set.remove":
                group.user_set.remove(user)
            elif change == "user.groups.clear":
                user.groups.clear()
            elif change == "group.delete":
                group.delete()
            elif change == "user.deactivate":
                user.is_active = False
                user.save()
            else:
                user.delete()
            assert recv_close(his) == (
                4002 if change.startswith(("user.groups", "group")) else 4001
            )
            if change == "group.delete":
                assert recv_close(hers) == 4002
            else:
                publish_marker()
                assert hers.recv() == "--marker--"


@pytest.mark.parametrize(
    ("audience", "hears"),
    [
        ("users", {"john"}),  # users=["john"]
        ("groups", {"john", "mary"}),  # groups=["chatters"]: eve is in no group
        ("sessions", {"john"}),  # sessions=[john's key]
    ],
)
def test_each_audience_reaches_its_people_and_nobody_else(server, rdb, users, audience, hears):
    """john, mary (both in chatters) and eve each listen on every audience; a message to
    one audience reaches exactly its people: the others' next message is the marker."""
    from ws4redis.publisher import RedisPublisher

    clients = {name: login(name) for name in ("john", "mary", "eve")}
    query = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session"
    sockets = {
        name: server.connect(query, header=[session_cookie(client)])
        for name, client in clients.items()
    }
    try:
        target = {
            "users": ["john"],
            "groups": ["chatters"],
            "sessions": [clients["john"].session.session_key],
        }[audience]
        RedisPublisher(facility=FACILITY, **{audience: target}).publish_message("for you")
        marker = publish_marker().decode()
        heard = {name for name, ws in sockets.items() if ws.recv() == "for you"}
        assert heard == hears
        for name in hears:
            assert sockets[name].recv() == marker
    finally:
        for ws in sockets.values():
            ws.close()


def test_disconnect_on_one_facility_leaves_the_user_s_other_websockets_open(server, rdb, users):
    """``disconnect(user=..., facility=...)`` closes that user's websockets on the facility,
    with the code and reason asked for; on other facilities they stay open and hear on."""
    john = login("john")
    cookie = [session_cookie(john)]
    with connected(server, "subscribe-broadcast", header=cookie) as here:
        with connected(server, "subscribe-broadcast", facility="elsewhere", header=cookie) as other:
            assert ws4redis.disconnect(user="john", facility=FACILITY, code=4010, reason="moved")
            opcode, frame = here.recv_data_frame(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE
            assert (int.from_bytes(frame.data[:2], "big"), frame.data[2:]) == (4010, b"moved")
            publish_marker("elsewhere")
            assert other.recv() == "--marker--"


def test_disconnect_refuses_a_code_a_client_could_mistake():
    with pytest.raises(ValueError, match="4000-4999"):
        ws4redis.disconnect(user="john", code=1000)
