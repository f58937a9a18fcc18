"""Presence and the open/close signals, against a real Redis and real websockets."""

from __future__ import annotations

import contextlib
import json
import signal

import pytest
import websocket
from django.test import override_settings

from tests.support.clients import connected, login, publish_marker, session_cookie
from tests.support.servers import free_port, start_runwebsocket, wait_for_listening, wait_until
from ws4redis.core.names import presence_keys
from ws4redis.presence import present
from ws4redis.settings import key_prefix
from ws4redis.signals import websocket_closed, websocket_opened

HERE = "here"  # the facility with presence in tests/support/settings.py


def test_who_is_here_across_runtimes(server, users):
    john = login("john")
    with connected(server, "subscribe-broadcast", facility=HERE, header=[session_cookie(john)]):
        with connected(server, "subscribe-broadcast", facility=HERE):  # anonymous
            wait_until(lambda: present(HERE).connections == 2, "both to be present")
            here = present(HERE)
            assert here.users == {"john"} and len(here.sessions) == 1
        wait_until(lambda: present(HERE).connections == 1, "the anonymous one to leave")
    wait_until(lambda: present(HERE).connections == 0, "everybody to leave")


def test_subscribers_that_get_json_are_told_who_joins_and_leaves(server, users):
    with connected(server, "subscribe-broadcast&recover", facility=HERE) as watcher:
        joined = {"channel": "presence", "presence": "join", "user": None}
        assert json.loads(watcher.recv()) == joined  # itself
        mary = login("mary")
        with connected(server, "subscribe-broadcast", facility=HERE, header=[session_cookie(mary)]):
            assert json.loads(watcher.recv()) == {
                "channel": "presence",
                "presence": "join",
                "user": "mary",
            }
        assert json.loads(watcher.recv())["presence"] == "leave"


def test_a_client_cannot_pass_for_an_announcement(server, users):
    """What a client sends on a facility with presence arrives as a client's message: JSON
    clients see ``"from": "client"`` on the broadcast channel, and plain clients get no
    announcements at all, so a line that looks like one was a client's."""
    forged = '{"presence": "join", "user": "admin"}'
    with connected(server, "subscribe-broadcast&recover", facility=HERE) as watcher:
        assert json.loads(watcher.recv())["channel"] == "presence"  # its own join
        with connected(server, "subscribe-broadcast", facility=HERE) as plain:
            assert json.loads(watcher.recv())["channel"] == "presence"  # the plain one's join
            with connected(server, "publish-broadcast", facility=HERE) as attacker:
                assert json.loads(watcher.recv())["channel"] == "presence"
                attacker.send(forged)
                assert json.loads(watcher.recv()) == {
                    "channel": "broadcast",
                    "from": "client",
                    "data": forged,
                }
                assert plain.recv() == forged  # the client's line, as sent
            publish_marker(HERE)
            assert plain.recv() == "--marker--"  # no announcement of the attacker's leave


@pytest.mark.not_under("uwsgi", reason="the signal's receivers are in the test process")
def test_signals_say_who_opened_and_closed(server, users):
    seen = []

    def record(signal, user, facility, session, **kwargs):
        seen.append((signal, user, facility, bool(session)))

    websocket_opened.connect(record)
    websocket_closed.connect(record)
    try:
        john = login("john")
        with connected(server, "subscribe-user", facility="signals", header=[session_cookie(john)]):
            wait_until(lambda: len(seen) == 1, "the opened signal")
        wait_until(lambda: len(seen) == 2, "the closed signal")
    finally:
        websocket_opened.disconnect(record)
        websocket_closed.disconnect(record)
    assert seen == [(websocket_opened, "john", "signals", True),
                    (websocket_closed, "john", "signals", True)]  # fmt: skip


def test_a_killed_process_leaves_no_one_behind(rdb):
    """A websocket process killed without a chance to say goodbye: its entries expire."""
    port = free_port()
    process = start_runwebsocket(port, WS4REDIS_TEST_PRESENCE_TTL="2")
    try:
        wait_for_listening(process, 1)
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/{HERE}?subscribe-broadcast")
        wait_until(lambda: present(HERE).connections == 1, "the websocket to be present")
        process.send_signal(signal.SIGKILL)
        process.wait()
        ws.close()
        wait_until(lambda: present(HERE).connections == 0, "its entry to expire")
    finally:
        process.kill()
        process.wait()


def test_presence_adds_up_across_two_workers(rdb):
    port = free_port()
    process = start_runwebsocket(port, "--workers", "2")
    clients = []
    try:
        wait_for_listening(process, 2)
        for _ in range(12):  # the kernel spreads them over both workers
            url = f"ws://127.0.0.1:{port}/ws/{HERE}?subscribe-broadcast"
            clients.append(websocket.create_connection(url, timeout=10))
        wait_until(lambda: present(HERE).connections == 12, "all twelve to be present")
        counted = {
            entry.decode().split(":")[1]
            for entry in rdb.zrange(presence_keys(key_prefix(), HERE)[0], 0, -1)
        }
        assert len(counted) == 2  # entries of two processes (pids)
    finally:
        for ws in clients:
            ws.close()
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_crowd_arriving_at_once_is_announced_in_diffs(server, users):
    """With an interval, everyone who joined since the last announcement comes in one diff:
    the watcher is told of all of them (itself first among them), in fewer messages than
    there were arrivals."""
    crowd = 12
    with (
        override_settings(WS4REDIS_PRESENCE_INTERVAL=5),
        connected(server, "subscribe-broadcast&recover", facility=HERE) as watcher,
        contextlib.ExitStack() as stack,
    ):
        for _ in range(crowd):
            stack.enter_context(connected(server, "subscribe-broadcast", facility=HERE))
        joined, messages = 0, 0
        while joined < crowd + 1:  # the watcher's own join is announced to it too
            told = json.loads(watcher.recv())
            messages += 1
            if told["presence"] == "diff":
                joined += told["joined"]
                assert told["join"] == [None] * told["joined"]  # anonymous, by name
            else:
                joined += told["presence"] == "join"
        assert joined == crowd + 1 and messages < crowd
