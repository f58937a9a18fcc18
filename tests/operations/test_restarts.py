"""Gentle restarts: on SIGTERM, ``runwebsocket`` closes its websockets spread over the drain
window (``--drain`` / ``WS4REDIS_DRAIN_SECONDS``), not all at once.

Nothing here measures time: the spread shows as counts (when the first close arrived, most
websockets were still open and still received what was published then).
"""

from __future__ import annotations

import select
import signal
import socket
import subprocess

import pytest
import websocket
from django.core import checks
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.support.clients import FACILITY, recv_close
from tests.support.servers import free_port, start_runwebsocket, wait_for_listening, wait_until
from ws4redis import settings
from ws4redis.publisher import RedisPublisher

COUNT = 300
"""Websockets per test: enough that a burst of closes could not pass for a spread one."""


def open_websockets(port: int, count: int) -> list[websocket.WebSocket]:
    url = f"ws://127.0.0.1:{port}/ws/{FACILITY}?subscribe-broadcast"
    return [websocket.create_connection(url, timeout=10) for _ in range(count)]


def first_close(clients: list[websocket.WebSocket]) -> list[websocket.WebSocket]:
    """Wait for the first websocket the server closes, check its code; return the others
    that had nothing to read yet (still open) right after it."""
    by_socket = {ws.sock: ws for ws in clients}
    readable, _, _ = select.select(list(by_socket), [], [], 30)
    assert readable, "no websocket was closed"
    first = by_socket[readable[0]]
    assert recv_close(first) == 1001
    others = [ws for ws in clients if ws is not first]
    ready, _, _ = select.select([ws.sock for ws in others], [], [], 0)
    return [ws for ws in others if ws.sock not in set(ready)]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def next_message_or_close(ws: websocket.WebSocket) -> str | int:
    """The next text message, or the close code if the close came first."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return frame.data.decode()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big")


def stopped(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_closes_the_websockets_spread_over_the_window(rdb, workers):
    """With ``--workers 2`` each worker drains its own websockets when the supervisor
    forwards SIGTERM."""
    port = free_port()
    process = start_runwebsocket(port, "--drain", "8", "--workers", workers)
    try:
        wait_for_listening(process, int(workers))
        clients = open_websockets(port, COUNT)
        process.send_signal(signal.SIGTERM)
        still_open = first_close(clients)
        assert len(still_open) > COUNT * 3 // 4  # not all (nor half) at once
        # No longer listening (each worker as soon as it had its signal), while draining:
        wait_until(lambda: refused(port), "the port to refuse connections")
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("meanwhile")
        seen = [next_message_or_close(ws) for ws in still_open]
        assert seen.count("meanwhile") > COUNT // 2  # delivered to those not closed yet
        assert set(seen) <= {"meanwhile", 1001}
        # In the end every one is closed with 1001, and the server exits cleanly.
        assert {
            recv_close(ws) for ws, last in zip(still_open, seen, strict=True) if last != 1001
        } == {1001}
        assert stopped(process) == 0
    finally:
        process.kill()
        process.wait()


def test_a_second_sigterm_closes_the_rest_at_once(rdb):
    """With a window of an hour the drain would close one websocket a minute; the second
    SIGTERM closes all the others (each client waits 10 s at most for its close)."""
    port = free_port()
    count = COUNT // 3
    process = start_runwebsocket(port, "--drain", "3600")
    try:
        wait_for_listening(process, 1)
        clients = open_websockets(port, count)
        process.send_signal(signal.SIGTERM)
        still_open = first_close(clients)
        assert len(still_open) == count - 1
        process.send_signal(signal.SIGTERM)
        assert [recv_close(ws) for ws in still_open] == [1001] * (count - 1)
        assert stopped(process) == 0
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("value", [-1, "10", True, float("nan"), float("inf")])
def test_a_wrong_drain_window_is_reported_by_the_check(value):
    with override_settings(WS4REDIS_DRAIN_SECONDS=value):
        errors = [m.msg for m in checks.run_checks(tags=["ws4redis"]) if m.id == "ws4redis.E001"]
    assert len(errors) == 1 and "WS4REDIS_DRAIN_SECONDS" in errors[0]


@pytest.mark.parametrize("value", [0, 2.5])
def test_a_drain_window_of_zero_or_more_seconds_is_taken(value):
    with override_settings(WS4REDIS_DRAIN_SECONDS=value):
        assert value == settings.WS4REDIS_DRAIN_SECONDS


def test_a_negative_drain_option_is_refused():
    with pytest.raises(CommandError, match="--drain"):
        call_command("runwebsocket", str(free_port()), "--drain", "-1")
