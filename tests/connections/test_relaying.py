"""Relaying between websockets and Redis over real connections, under every runtime
(docs/reference.md#relaying, #close-codes, #limits-and-safety)."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest
import websocket
from django.test import override_settings

from tests.support import callbacks
from tests.support.clients import (
    FACILITY,
    connected,
    login,
    publish_marker,
    recv_close,
    session_cookie,
)
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage
from ws4redis.subscriber import RedisSubscriber

MESSAGE = "".join(chr(c) for c in range(33, 128)) + " ünïcödé"


def test_broadcast_persisted_message_arrives_on_connect(server, rdb):
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message(RedisMessage(MESSAGE))
    with connected(server, "subscribe-broadcast") as ws:
        assert ws.recv() == MESSAGE


def test_published_while_connected_arrives(server, rdb):
    with connected(server, "subscribe-broadcast") as ws:
        receivers = RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
        assert ws.recv() == MESSAGE
    assert receivers == {f"ws4redis:broadcast:{FACILITY}": 1}


@override_settings(WS4REDIS_CLIENT_EXPIRE=60)
def test_publish_from_client_is_persisted_with_expiry_where_the_project_allows_it(
    socket_server, rdb
):
    with connected(socket_server, "publish-broadcast") as ws:
        ws.send(MESSAGE)
    key = f"ws4redis:broadcast:{FACILITY}"
    assert rdb.get(key) == MESSAGE.encode()
    assert 0 < rdb.ttl(key) <= 10  # the shorter of WS4REDIS_EXPIRE and the client's
    assert RedisPublisher().fetch_message(None, FACILITY, "broadcast") == MESSAGE.encode()


@pytest.mark.parametrize("client_expire", [0, 3])
def test_messages_from_clients_are_stored_no_longer_than_client_expire(server, rdb, client_expire):
    """By default (0) a client's message never replaces what Django stored."""
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message("from Django")
    key = f"ws4redis:broadcast:{FACILITY}"
    with override_settings(WS4REDIS_CLIENT_EXPIRE=client_expire):
        with connected(server, "subscribe-broadcast") as reader:
            assert reader.recv() == "from Django"
            with connected(server, "publish-broadcast") as ws:
                ws.send(MESSAGE)
                assert reader.recv() == MESSAGE  # published (and stored, if at all) by now
    if client_expire:
        assert rdb.get(key) == MESSAGE.encode() and 0 < rdb.ttl(key) <= client_expire
    else:
        assert rdb.get(key) == b"from Django" and rdb.ttl(key) > 3


def test_client_messages_reach_other_clients(server, rdb):
    with connected(server, "subscribe-broadcast") as reader:
        with connected(server, "publish-broadcast") as writer:
            writer.send(MESSAGE)
            assert reader.recv() == MESSAGE


def test_binary_round_trip(server, rdb):
    payload = bytes(range(256))
    with connected(server, "subscribe-broadcast&publish-broadcast&echo") as ws:
        ws.send_binary(payload)
        opcode, data = ws.recv_data()
    assert (opcode, data) == (websocket.ABNF.OPCODE_BINARY, payload)


def test_text_published_by_django_arrives_as_text_frame(server, rdb):
    with connected(server, "subscribe-broadcast") as ws:
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE.encode())
        opcode, data = ws.recv_data()
    assert (opcode, data.decode()) == (websocket.ABNF.OPCODE_TEXT, MESSAGE)


def test_echo_returns_own_message(server, rdb):
    with connected(server, "subscribe-broadcast&publish-broadcast&echo") as ws:
        ws.send(MESSAGE)
        assert ws.recv() == MESSAGE


def test_without_echo_own_message_is_not_returned_but_others_are(server, rdb):
    """The marker is published once Redis has carried the client's message (a subscriber of
    the test's own sees it), so the message would reach the client first were it echoed."""
    with contextlib.closing(rdb.pubsub(ignore_subscribe_messages=True)) as watcher:
        watcher.subscribe(f"ws4redis:broadcast:{FACILITY}")
        with connected(server, "subscribe-broadcast&publish-broadcast") as ws:
            ws.send(MESSAGE)
            while (seen := watcher.get_message(timeout=10)) is None:
                pass
            assert seen["data"] == MESSAGE.encode()
            marker = publish_marker()
            assert ws.recv() == marker.decode()
            RedisPublisher(facility=FACILITY, broadcast=True).publish_message("from django")
            assert ws.recv() == "from django"


def test_empty_messages_are_dropped(server, rdb):
    with connected(server, "subscribe-broadcast&publish-broadcast&echo") as ws:
        ws.send("")
        ws.send("after")
        assert ws.recv() == "after"


def test_query_keys_are_case_insensitive_and_unknown_ones_ignored(server, rdb):
    with connected(server, "Subscribe-Broadcast&colour=blue") as ws:
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
        assert ws.recv() == MESSAGE


def test_facilities_are_separate(server, rdb):
    with connected(server, "subscribe-broadcast") as ws:
        RedisPublisher(facility="elsewhere", broadcast=True).publish_message("not for you")
        marker = publish_marker()
        assert ws.recv() == marker.decode()


# -- audiences ---------------------------------------------------------------------------


def test_user_audience_reaches_only_that_user(server, rdb, users):
    john, eve = login("john"), login("eve")
    with connected(server, "subscribe-user", header=[session_cookie(john)]) as john_ws:
        with connected(server, "subscribe-user", header=[session_cookie(eve)]) as eve_ws:
            RedisPublisher(facility=FACILITY, users=["john"]).publish_message(MESSAGE)
            assert john_ws.recv() == MESSAGE
            RedisPublisher(facility=FACILITY, users=["eve"]).publish_message("for eve")
            assert eve_ws.recv() == "for eve"


def test_user_audience_with_self(server, rdb, users, rf):
    john = login("john")
    request = rf.get("/")
    request.user = users["john"]
    RedisPublisher(facility=FACILITY, users=[SELF], request=request).publish_message(MESSAGE)
    assert rdb.get(f"ws4redis:user:john:{FACILITY}") == MESSAGE.encode()
    with connected(server, "subscribe-user", header=[session_cookie(john)]) as ws:
        assert ws.recv() == MESSAGE


def test_group_audience_reaches_members(server, rdb, users):
    mary = login("mary")
    with connected(server, "subscribe-group", header=[session_cookie(mary)]) as ws:
        RedisPublisher(facility=FACILITY, groups=["chatters"]).publish_message(MESSAGE)
        assert ws.recv() == MESSAGE


def test_group_audience_with_self_uses_groups_stored_at_login(server, rdb, users, rf):
    john = login("john")
    request = rf.get("/")
    request.user, request.session = users["john"], john.session
    assert john.session["ws4redis:memberof"] == ["chatters"]
    RedisPublisher(facility=FACILITY, groups=[SELF], request=request).publish_message(MESSAGE)
    with connected(server, "subscribe-group", header=[session_cookie(login("mary"))]) as ws:
        assert ws.recv() == MESSAGE


def test_session_audience_with_and_without_self(server, rdb, users, rf):
    john = login("john")
    key = john.session.session_key
    with connected(server, "subscribe-session", header=[session_cookie(john)]) as ws:
        RedisPublisher(facility=FACILITY, sessions=[key]).publish_message("by key")
        assert ws.recv() == "by key"
        request = rf.get("/")
        request.session = john.session
        RedisPublisher(facility=FACILITY, sessions=[SELF], request=request).publish_message("me")
        assert ws.recv() == "me"


def test_anonymous_gets_no_user_or_group_channels(server, rdb, users):
    with connected(server, "subscribe-user&subscribe-group&subscribe-broadcast") as ws:
        RedisPublisher(facility=FACILITY, users=["john"], groups=["chatters"]).publish_message(
            "private"
        )
        marker = publish_marker()
        assert ws.recv() == marker.decode()


@pytest.mark.parametrize("audience", ["user", "group", "session"])
@override_settings(WS4REDIS_CLIENT_EXPIRE=60)  # stored: what it published can be looked at
def test_publish_from_client_to_own_audience(socket_server, rdb, users, rf, audience):
    john = login("john")
    with connected(socket_server, f"publish-{audience}", header=[session_cookie(john)]) as ws:
        ws.send(MESSAGE)
    request = rf.get("/")
    request.user, request.session = users["john"], john.session
    assert RedisPublisher().fetch_message(request, FACILITY, audience) == MESSAGE.encode()


def test_receiver_count_drops_when_socket_closes(socket_server, rdb, users):
    john = login("john")
    publisher = RedisPublisher(facility=FACILITY, sessions=[john.session.session_key])
    channel = f"ws4redis:session:{john.session.session_key}:{FACILITY}"
    ws = socket_server.connect("subscribe-session", header=[session_cookie(john)])
    assert publisher.publish_message(MESSAGE) == {channel: 1}
    ws.close()
    assert publisher.publish_message(MESSAGE) == {channel: 0}


# -- identity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "engine",
    [
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.signed_cookies",
        "redis_sessions.session",
    ],
)
def test_user_found_through_any_session_engine(server, rdb, users, engine):
    if server.runtime == "uwsgi" and engine.endswith(".cache"):
        pytest.skip("the test's local-memory cache is not visible to the uWSGI process")
    with override_settings(SESSION_ENGINE=engine):
        john = login("john")
        with connected(server, "subscribe-user", header=[session_cookie(john)]) as ws:
            RedisPublisher(facility=FACILITY, users=["john"]).publish_message(MESSAGE)
            assert ws.recv() == MESSAGE


def test_process_request_setting_replaces_cookie_session(server, rdb, users):
    with override_settings(WS4REDIS_PROCESS_REQUEST="tests.support.callbacks.token_identity"):
        with connected(server, "subscribe-user&token=mary") as ws:
            RedisPublisher(facility=FACILITY, users=["mary"]).publish_message(MESSAGE)
            assert ws.recv() == MESSAGE


# -- heartbeat, limits, close ------------------------------------------------------------


def test_heartbeat_sent_when_idle_and_swallowed_when_received(server, rdb):
    """The client's heartbeat is never published: what Redis carries on the channel, read by
    a subscriber of its own, begins with the message sent after it."""
    channel = f"ws4redis:broadcast:{FACILITY}"
    with contextlib.closing(rdb.pubsub(ignore_subscribe_messages=True)) as watcher:
        watcher.subscribe(channel)
        with override_settings(WS4REDIS_HEARTBEAT="--heartbeat--", WS4REDIS_CLIENT_EXPIRE=60):
            with connected(server, "subscribe-broadcast&publish-broadcast&echo") as ws:
                ws.send("--heartbeat--")  # must not be published
                assert ws.recv() == "--heartbeat--"  # the server's own, after ~4 s idle
                ws.send("real")
                assert ws.recv() == "real"
        while (seen := watcher.get_message(timeout=10)) is None:
            pass
    assert seen["data"] == b"real"
    assert rdb.get(channel) == b"real"


def test_protocol_ping_is_answered(server, rdb):
    with connected(server, "subscribe-broadcast") as ws:
        ws.ping(b"are you there")
        opcode, frame = ws.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are you there")


def test_oversized_message_closes_with_1009(server, rdb):
    with override_settings(WS4REDIS_MAX_MESSAGE_SIZE=1024):
        ws = server.connect("publish-broadcast")
        ws.send("x" * 2048)
        assert recv_close(ws) == 1009
    assert rdb.get(f"ws4redis:broadcast:{FACILITY}") is None


def test_invalid_utf8_text_closes_with_1007(server, rdb):
    ws = server.connect("publish-broadcast")
    ws.send(b"\xff\xfe", opcode=websocket.ABNF.OPCODE_TEXT)
    assert recv_close(ws) == 1007


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000])
def test_client_close_is_answered_with_its_code(server, rdb, code, caplog):
    ws = server.connect("subscribe-broadcast&publish-broadcast")
    ws.send_close(code)
    assert recv_close(ws) == code
    assert "ERROR" not in caplog.text


def test_close_releases_subscription(socket_server, rdb, monkeypatch):
    released = []
    original = RedisSubscriber.release

    def spy(self):
        released.append(self.subscribed_channels)
        original(self)

    monkeypatch.setattr(RedisSubscriber, "release", spy)
    ws = socket_server.connect("subscribe-broadcast")
    ws.close()
    assert [f"ws4redis:broadcast:{FACILITY}"] in released
    assert rdb.pubsub_numsub(f"ws4redis:broadcast:{FACILITY}") == [
        (f"ws4redis:broadcast:{FACILITY}".encode(), 0)
    ]


# -- overrides ---------------------------------------------------------------------------


class ExtraChannelSubscriber(RedisSubscriber):
    """Also listens to a site-wide announcements channel."""

    def set_pubsub_channels(self, request, channels):
        super().set_pubsub_channels(request, channels)
        self._subscription.subscribe("announcements")


class QuietSubscriber(RedisSubscriber):
    """Never sends persisted messages on connect."""

    def send_persisted_messages(self, websocket):
        websocket.send(b"nothing persisted for you")


def test_subscriber_subclass_adds_a_channel(server, rdb):
    with override_settings(
        WS4REDIS_SUBSCRIBER="tests.connections.test_relaying.ExtraChannelSubscriber"
    ):
        with connected(server, "subscribe-broadcast") as ws:
            rdb.publish("announcements", "site news")
            assert ws.recv() == "site news"


class RoomSubscriber(RedisSubscriber):
    """Also listens to the room its request names in a header: a project's own naming,
    from more of the request than its session and user."""

    def _get_message_channels(self, request=None, facility="{facility}", **audiences):
        channels = super()._get_message_channels(request, facility, **audiences)
        if audiences.get("broadcast") and request is not None:
            channels.append(f"room:{request.META['HTTP_X_ROOM']}")
        return channels


@override_settings(
    WS4REDIS_SUBSCRIBER="tests.connections.test_relaying.RoomSubscriber",
    WS4REDIS_ALLOWED_CHANNELS=None,
)
def test_a_subscriber_subclass_names_each_anonymous_clients_channels_itself(socket_server, rdb):
    """The default subscriber's names for an anonymous client are kept per facility and
    keys; a subclass's are asked for each client, since they may read anything."""
    with connected(socket_server, "subscribe-broadcast", header=["X-Room: a"]):
        with connected(socket_server, "subscribe-broadcast", header=["X-Room: b"]) as b:
            rdb.publish("room:b", "in room b")
            assert b.recv() == "in room b"


def test_subscriber_subclass_replaces_persisted_messages(server, rdb):
    RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
    with override_settings(WS4REDIS_SUBSCRIBER="tests.connections.test_relaying.QuietSubscriber"):
        with connected(server, "subscribe-broadcast") as ws:
            assert ws.recv() == "nothing persisted for you"


def test_prefix_override(server, rdb):
    with override_settings(WS4REDIS_PREFIX="other"):
        with connected(server, "subscribe-broadcast") as ws:
            receivers = RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
            assert ws.recv() == MESSAGE
    assert receivers == {f"other:broadcast:{FACILITY}": 1}
    assert rdb.get(f"other:broadcast:{FACILITY}") == MESSAGE.encode()


def test_websocket_url_override(server, rdb):
    with override_settings(WEBSOCKET_URL="/sockets/"):
        url = server.url("subscribe-broadcast").replace("/ws/", "/sockets/")
        ws = websocket.create_connection(url, timeout=10)
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
        assert ws.recv() == MESSAGE
        ws.close()
        with pytest.raises(websocket.WebSocketBadStatusException) as not_a_socket:
            server.connect("subscribe-broadcast")  # /ws/ is an ordinary (missing) page now
    assert not_a_socket.value.status_code == 404


@pytest.mark.not_under("uwsgi", reason="the gate it holds closed lives in the test process")
def test_slow_identity_lookup_does_not_block_other_websockets(server, rdb):
    opened = []
    callbacks.GATE.clear()
    with override_settings(WS4REDIS_PROCESS_REQUEST="tests.support.callbacks.gated_identity"):
        gated = threading.Thread(target=lambda: opened.append(server.connect("gated")))
        gated.start()
        try:
            with connected(server, "subscribe-broadcast") as ws:
                RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
                assert ws.recv() == MESSAGE
            assert gated.is_alive()  # still inside its lookup, yet the other websocket worked
        finally:
            callbacks.GATE.set()
            gated.join(30)
    opened[0].close()


def test_stray_continuation_fails_only_that_client(server, rdb):
    """A continuation frame with nothing to continue is a protocol error (1002) for its
    sender; the worker survives and a neighbour keeps its websocket and its messages."""
    with connected(server, "subscribe-broadcast") as neighbour:
        ws = server.connect("publish-broadcast")
        ws.sock.sendall(
            bytes([0x80, 0x83])
            + b"\x01\x02\x03\x04"
            + bytes(b ^ m for b, m in zip(b"abc", b"\x01\x02\x03", strict=True))
        )
        assert recv_close(ws) == 1002
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("still here")
        assert neighbour.recv() == "still here"


def test_client_that_does_not_read_is_cut_off_and_others_get_everything(server, rdb):
    """``WS4REDIS_MAX_BUFFER_SIZE`` holds under every runtime: the stalled reader is closed
    (1008, or cut off when it cannot even take the close frame), its neighbour gets every
    message in order."""
    count, payload = 200, "x" * 65536
    small_buffer = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
    with override_settings(WS4REDIS_MAX_BUFFER_SIZE=256 * 1024):
        good = server.connect("subscribe-broadcast")
        slow = server.connect("subscribe-broadcast", sockopt=small_buffer)
    with contextlib.closing(good), contextlib.closing(slow):
        publisher = RedisPublisher(facility=FACILITY, broadcast=True)
        for number in range(count):
            publisher.publish_message(f"{number:06d}{payload}", expire=0)
            assert good.recv() == f"{number:06d}{payload}"
        received, ending = 0, None
        try:
            while ending is None:
                opcode, frame = slow.recv_data_frame(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    ending = int.from_bytes(frame.data[:2], "big")
                else:
                    received += 1
        except (ConnectionError, websocket.WebSocketConnectionClosedException):
            ending = "cut off"
    assert ending in (1008, "cut off")
    assert received < count


@override_settings(WS4REDIS_MAX_BUFFER_SIZE=256 * 1024)
def test_client_that_reads_everything_is_not_cut_for_the_servers_own_backlog(server, rdb):
    """The slow-client rule judges what the client has not read: bursts of 50 x 10 KB, each
    more than ``WS4REDIS_MAX_BUFFER_SIZE`` and arriving from Redis faster than one write,
    never cut a client that has read everything before each burst."""
    burst, payload = 50, "x" * 10_000
    with connected(server, "subscribe-broadcast") as reader:
        for first in range(0, 1000, burst):
            with rdb.pipeline(transaction=False) as pipeline:
                for number in range(first, first + burst):
                    pipeline.publish(f"ws4redis:broadcast:{FACILITY}", f"{number:06d}{payload}")
                pipeline.execute()
            for number in range(first, first + burst):
                opcode, frame = reader.recv_data_frame(control_frame=True)
                assert (opcode, frame.data[:6]) == (websocket.ABNF.OPCODE_TEXT, b"%06d" % number)
