"""History with offsets, against a real Redis and over every runtime."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
import websocket
from django.test import override_settings

from tests.support.clients import connected, publish_marker
from tests.support.servers import free_port, private_redis
from ws4redis.core.names import history_keys
from ws4redis.publisher import RedisPublisher
from ws4redis.settings import key_prefix

HISTORY = {"kept": {"size": 3, "ttl": 30}}
CHANNEL = "ws4redis:broadcast:kept"


@pytest.fixture
def history():
    with override_settings(WS4REDIS_HISTORY=HISTORY):
        yield RedisPublisher(facility="kept", broadcast=True)


def test_published_messages_get_offsets_in_a_bounded_expiring_history(history, rdb):
    for n in range(1, 6):
        history.publish_message(f"m{n}", expire=0)
    window = history.history()[CHANNEL]
    assert window.epoch and (window.first, window.last) == (3, 5)  # trimmed to the last 3
    assert window.messages == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
    assert history.history(since=4)[CHANNEL].messages == [(5, b"m5")]
    assert all(0 < rdb.ttl(key) <= 30 for key in history_keys(key_prefix(), CHANNEL))


def test_lost_history_starts_a_new_epoch(history, rdb):
    history.publish_message("before", expire=0)
    old = history.history()[CHANNEL]
    rdb.delete(*history_keys(key_prefix(), CHANNEL))  # flushed, expired or evicted
    assert history.history()[CHANNEL].epoch == ""  # nothing known any more
    history.publish_message("after", expire=0)
    new = history.history()[CHANNEL]
    assert new.epoch != old.epoch and new.messages == [(1, b"after")]


def test_clients_without_positions_get_plain_payloads(server, history):
    with connected(server, "subscribe-broadcast", facility="kept") as ws:
        receivers = history.publish_message("hello", expire=0)
        assert ws.recv() == "hello"
    assert receivers == {CHANNEL: 1}


@override_settings(WS4REDIS_CLIENT_EXPIRE=60)
def test_what_clients_send_is_kept_in_the_history_too_where_clients_messages_are_kept(
    server, history
):
    with connected(server, "subscribe-broadcast", facility="kept") as reader:
        with connected(server, "publish-broadcast", facility="kept") as writer:
            writer.send("from a browser")
            assert reader.recv() == "from a browser"
            publish_marker("kept")
            assert reader.recv() == "--marker--"
    assert [m for _, m in history.history()[CHANNEL].messages][-2:] == [
        b"from a browser",
        b"--marker--",
    ]


def positions(ws) -> dict:
    """The next JSON message of a client that asked for positions."""
    return json.loads(ws.recv())


def test_a_client_reset_mid_stream_resumes_with_every_message_once_in_order(server, history):
    """A steady publish; the client's TCP connection is reset; it reconnects with its last
    position and gets exactly what it missed, then the live messages: each once, in order."""
    url = "subscribe-broadcast&recover"
    with override_settings(WS4REDIS_HISTORY={"kept": {"size": 1000, "ttl": 30}}):
        resume_reset_client(server, history, url)


def resume_reset_client(server, history, url) -> None:
    first = server.connect(url, facility="kept")
    start = positions(first)  # an empty channel: its position before any history
    assert (start["channel"], start["offset"]) == ("broadcast", 0)
    done = threading.Event()

    def publish_steadily() -> None:
        for n in range(1, 201):
            history.publish_message(f"m{n}", expire=0)
            if n == 50:
                done.wait(10)  # the first connection has seen some and is gone
        history.publish_message("end", expire=0)

    publisher = threading.Thread(target=publish_steadily)
    publisher.start()
    seen, last = [], start
    while len(seen) < 20:
        last = positions(first)
        seen.append(last["data"])
    first.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    first.sock.close()  # a reset, with messages still in flight
    done.set()
    since = f"broadcast:{last['epoch']}:{last['offset']}"
    with connected(server, f"{url}&since={since}", facility="kept") as again:
        while (message := positions(again))["data"] != "end":
            assert message["offset"] == last["offset"] + 1  # no gap, no duplicate
            seen.append(message["data"])
            last = message
    publisher.join()
    assert seen == [f"m{n}" for n in range(1, 201)]


def test_a_client_told_when_what_it_missed_is_gone(server, history, rdb):
    for n in range(1, 6):
        history.publish_message(f"m{n}", expire=0)
    window = history.history()[CHANNEL]
    behind = f"broadcast:{window.epoch}:1"  # 2 was trimmed away: only 3..5 are kept
    with connected(server, f"subscribe-broadcast&recover&since={behind}", facility="kept") as ws:
        told = positions(ws)
    assert told == {"channel": "broadcast", "epoch": window.epoch, "offset": 5, "recovered": False}
    rdb.delete(
        *history_keys(key_prefix(), CHANNEL)
    )  # history lost: Redis restarted, flushed or evicted
    history.publish_message("new", expire=0)
    resume = f"broadcast:{window.epoch}:5"
    with connected(server, f"subscribe-broadcast&recover&since={resume}", facility="kept") as ws:
        told = positions(ws)
    assert told["recovered"] is False and told["epoch"] != window.epoch and told["offset"] == 1


def test_a_malformed_position_is_refused_with_400(socket_server, history):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        socket_server.connect("subscribe-broadcast&recover&since=broadcast", facility="kept")
    assert refused.value.status_code == 400


def test_history_lost_with_a_redis_restart_is_told_not_silently_skipped(server, tmp_path):
    """Redis restarts without persistence: a client resuming from before the restart is
    told it could not recover, and gets what is published afterwards with the new epoch."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as first:
            publisher = RedisPublisher(facility="kept", broadcast=True)
            with override_settings(WS4REDIS_HISTORY=HISTORY):
                publisher.publish_message("before", expire=0)
                old = publisher.history()[CHANNEL]
            first.kill()
            first.wait()
        with private_redis(tmp_path, *args, port=port), override_settings(WS4REDIS_HISTORY=HISTORY):
            resume = f"broadcast:{old.epoch}:{old.last}"
            query = f"subscribe-broadcast&recover&since={resume}"
            with connected(server, query, facility="kept") as ws:
                told = positions(ws)
                assert told == {
                    "channel": "broadcast",
                    "epoch": "",
                    "offset": 0,
                    "recovered": False,
                }
                publisher.publish_message("after", expire=0)
                message = positions(ws)
    assert message["data"] == "after" and message["offset"] == 1 and message["epoch"] != old.epoch


def test_a_client_open_through_a_redis_restart_gets_the_new_epoch_from_its_start(server, tmp_path):
    """Redis restarts without persistence under an open ``recover`` websocket; what Django
    publishes before the process has subscribed again starts a new epoch and reaches no
    subscriber. The websocket gets that epoch's messages from offset 1, in order, once."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    kept = {"kept": {"size": 1000, "ttl": 60}}
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with override_settings(WS4REDIS_HISTORY=kept):
            publisher = RedisPublisher(facility="kept", broadcast=True)
            with private_redis(tmp_path, *args, port=port) as first:
                publisher.publish_message("before", expire=0)
                with connected(server, "subscribe-broadcast&recover", facility="kept") as ws:
                    old = positions(ws)
                    assert old["data"] == "before"
                    first.kill()
                    first.wait()
                    with private_redis(tmp_path, *args, port=port):
                        sent, unheard = [], 0
                        for n in range(500):  # until one reaches the resubscribed websocket
                            text = f"new {n}"
                            receivers = publisher.publish_message(text, expire=0)[CHANNEL]
                            sent.append(text)
                            unheard += receivers == 0
                            if receivers:
                                break
                        assert unheard, "the process was back before anything was published"
                        got = [positions(ws) for _ in sent]
    assert [m["data"] for m in got] == sent
    assert [m["offset"] for m in got] == list(range(1, len(sent) + 1))
    assert {m["epoch"] for m in got} != {old["epoch"]}


def test_a_client_that_stayed_open_gets_what_a_resubscription_missed(server, history, rdb):
    """The process's subscription connection is cut. What is published before it has
    subscribed again reaches no subscriber in Redis (the publish says so), yet the open
    websocket gets it from the history once the channel is back: once, in order."""
    with connected(server, "subscribe-broadcast&recover", facility="kept") as ws:
        last = positions(ws)
        for attempt in range(50):
            rdb.client_kill_filter(_type="pubsub")  # this process's hub: a Redis blip
            text = f"message {attempt}"
            receivers = history.publish_message(text, expire=0)[CHANNEL]
            message = positions(ws)  # from the history, or live if the hub was quicker
            assert (message["data"], message["offset"]) == (text, last["offset"] + 1)
            last = message
            if receivers == 0:
                break  # delivered to nobody by Redis: only the catch-up can have sent it
        assert receivers == 0, "every publish found the subscription back already"
        history.publish_message("after", expire=0)
        message = positions(ws)
        assert (message["data"], message["offset"]) == ("after", last["offset"] + 1)
