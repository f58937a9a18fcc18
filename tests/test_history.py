"""History with offsets, against a real Redis and over every runtime."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import connected, publish_marker
from ws4redis.history import history_keys
from ws4redis.publisher import RedisPublisher

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
    assert all(0 < rdb.ttl(key) <= 30 for key in history_keys(CHANNEL))


def test_lost_history_starts_a_new_epoch(history, rdb):
    history.publish_message("before", expire=0)
    old = history.history()[CHANNEL]
    rdb.delete(*history_keys(CHANNEL))  # flushed, expired or evicted
    assert history.history()[CHANNEL].epoch == ""  # nothing known any more
    history.publish_message("after", expire=0)
    new = history.history()[CHANNEL]
    assert new.epoch != old.epoch and new.messages == [(1, b"after")]


def test_clients_without_positions_get_plain_payloads(server, history):
    with connected(server, "subscribe-broadcast", facility="kept") as ws:
        receivers = history.publish_message("hello", expire=0)
        assert ws.recv() == "hello"
    assert receivers == {CHANNEL: 1}


def test_what_clients_send_is_kept_in_the_history_too(server, history):
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
