"""What clients and Redis send is data: no frame of a client passes for a server message, and
no message, from a client or from Redis, stops a process's reader (every runtime)."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.support.clients import connected, publish_marker, recv_close
from tests.support.servers import free_port, private_redis
from ws4redis.core.history import ENVELOPE
from ws4redis.core.names import history_keys
from ws4redis.core.stats import STATS
from ws4redis.publisher import RedisPublisher
from ws4redis.settings import key_prefix

KEPT = "kept"
HISTORY = {KEPT: {"size": 10, "ttl": 3600}}
CRAFTED = [
    "\x00ws4redis-history\x00",  # the envelope of earlier releases, bare
    "\x00ws4redis-history\x00e1:1:x",
    ENVELOPE.decode(),
    ENVELOPE.decode() + "se1:99999999999999999999999:x",
    ENVELOPE.decode() + "s1:1",
    ENVELOPE.decode() + "pe1:1:{}",
]


@pytest.mark.parametrize("facility", ["attack", KEPT])
def test_crafted_frames_are_data_and_the_process_keeps_relaying(server, rdb, facility):
    """A client sends what looks like envelopes, on a plain facility and on one whose messages
    are enveloped. Its readers get the bytes as sent; the process's reader lives on: other
    websockets get what Django publishes, and new channels still open."""
    with override_settings(WS4REDIS_HISTORY=HISTORY):
        query = "subscribe-broadcast&publish-broadcast"
        with connected(server, "subscribe-broadcast", facility=facility) as reader:
            with connected(server, query, facility=facility) as attacker:
                for crafted in CRAFTED:
                    attacker.send(crafted)
                    assert reader.recv() == crafted
            with connected(server, "subscribe-broadcast", facility="bystander") as bystander:
                RedisPublisher(facility="bystander", broadcast=True).publish_message("still here")
                assert bystander.recv() == "still here"
            publish_marker(facility)
            assert reader.recv() == "--marker--"


def test_what_redis_delivers_that_cannot_be_read_is_skipped_and_counted(server, rdb):
    """Something with access to Redis publishes a damaged envelope on a facility with history:
    it is skipped (logged, counted in-process), and the next message gets through."""
    channel = f"ws4redis:broadcast:{KEPT}"
    before = STATS.unreadable
    with override_settings(WS4REDIS_HISTORY=HISTORY):
        with connected(server, "subscribe-broadcast", facility=KEPT) as reader:
            rdb.publish(channel, ENVELOPE + b"sdamaged")
            rdb.publish(channel, b"published around ws4redis")  # no envelope: data
            publish_marker(KEPT)
            assert reader.recv() == "published around ws4redis"
            assert reader.recv() == "--marker--"
    if server.runtime != "uwsgi":  # its counts are in the uWSGI worker
        assert STATS.unreadable == before + 1
        assert "cannot be read" in server.log()


def test_client_messages_are_not_kept_in_history_unless_client_messages_are_stored(server, rdb):
    publisher = RedisPublisher(facility=KEPT, broadcast=True)
    channel = f"ws4redis:broadcast:{KEPT}"
    with override_settings(WS4REDIS_HISTORY=HISTORY, WS4REDIS_CLIENT_EXPIRE=0):
        with connected(server, "subscribe-broadcast&recover", facility=KEPT) as reader:
            assert json.loads(reader.recv())["offset"] == 0  # an empty channel's position
            with connected(server, "publish-broadcast", facility=KEPT) as writer:
                writer.send("not kept")
                message = json.loads(reader.recv())
        assert message == {"channel": "broadcast", "from": "client", "data": "not kept"}
        assert publisher.history()[channel].messages == []
        assert not rdb.exists(*history_keys(key_prefix(), channel))  # nothing of it left in Redis


def test_client_entries_keep_a_history_alive_no_longer_than_client_messages_live(server, rdb):
    publisher = RedisPublisher(facility=KEPT, broadcast=True)
    channel = f"ws4redis:broadcast:{KEPT}"
    with override_settings(WS4REDIS_HISTORY=HISTORY, WS4REDIS_CLIENT_EXPIRE=5):
        with connected(server, "subscribe-broadcast&recover", facility=KEPT) as reader:
            reader.recv()
            with connected(server, "publish-broadcast", facility=KEPT) as writer:
                writer.send("kept briefly")
                message = json.loads(reader.recv())
        assert message["from"] == "client" and message["offset"] == 1
        assert all(0 < rdb.ttl(key) <= 5 for key in history_keys(key_prefix(), channel))
        publisher.publish_message("from Django", expire=0)  # the server's keeps it for 3600 s
        assert all(rdb.ttl(key) > 5 for key in history_keys(key_prefix(), channel))
        window = publisher.history()[channel]
        assert window.messages == [(1, b"kept briefly"), (2, b"from Django")]
        assert window.clients == frozenset({1})


def test_a_client_whose_message_could_not_be_published_is_told(server, tmp_path):
    """Redis goes away under an open websocket; what its client sends then cannot be
    published: the client is closed with 1013 instead of its message vanishing."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as redis_process:
            ws = server.connect("publish-broadcast", facility="told", timeout=30)
            try:
                redis_process.kill()
                redis_process.wait()
                ws.send("lost with Redis")
                assert recv_close(ws) == 1013
            finally:
                ws.close()
