"""What only the production server (``runwebsocket``) promises: slow clients, Redis outages,
graceful shutdown, several workers on one port."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import websocket
from django.test import override_settings

from tests.conftest import FACILITY, in_process_server, recv_close, running_uwsgi
from tests.redis_servers import free_port, private_redis
from ws4redis.publisher import RedisPublisher

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = f"ws4redis:broadcast:{FACILITY}"


def wait_until(condition, what: str, limit: float = 20.0) -> None:
    """Poll ``condition`` (a wait for the system to settle, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def connect(ws_base: str, query: str = "subscribe-broadcast", **kwargs) -> websocket.WebSocket:
    kwargs.setdefault("timeout", 10)
    return websocket.create_connection(f"{ws_base}/ws/{FACILITY}?{query}", **kwargs)


def test_client_that_does_not_read_is_closed_and_others_get_everything(asyncio_server, rdb):
    server = asyncio_server.server
    already = len(server.connections)
    with override_settings(WS4REDIS_MAX_BUFFER_SIZE=256 * 1024):
        good = connect(asyncio_server.ws_base)
        slow = connect(
            asyncio_server.ws_base, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
        )
    wait_until(lambda: len(server.connections) == already + 2, "both websockets")
    slow_connection = next(c for c in server.connections if c.transport.get_extra_info(
        "peername")[1] == slow.sock.getsockname()[1])  # fmt: skip
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    payload = "x" * 65536
    sent = 0
    while slow_connection in server.connections and sent < 2000:
        publisher.publish_message(f"{sent:06d}{payload}", expire=0)
        assert good.recv() == f"{sent:06d}{payload}"  # every message, in order
        sent += 1
    assert slow_connection not in server.connections, "the slow client was never closed"
    assert slow_connection.relay.outbox == []
    # The slow client, reading at last, finds its stream cut short: a 1008 close or a reset.
    received, code = 0, None
    try:
        while True:
            opcode, frame = slow.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big")
                break
            received += 1
    except (ConnectionError, websocket.WebSocketConnectionClosedException):
        pass
    assert code in (None, 1008)
    assert received < sent
    publisher.publish_message("still flowing", expire=0)
    assert good.recv() == "still flowing"
    good.close()


@contextlib.contextmanager
def server_on_redis(runtime, port, request, caplog) -> Iterator[tuple[str, Callable[[], str]]]:
    """A server of ``runtime`` using the Redis on ``port``: its ws:// base and its log."""
    if runtime == "asyncio":
        with in_process_server() as running:
            yield running.ws_base, lambda: caplog.text
    else:
        request.getfixturevalue("django_db_setup")
        log = request.getfixturevalue("tmp_path") / "uwsgi.log"
        with running_uwsgi(log, REDIS_HOST="127.0.0.1", REDIS_PORT=str(port)) as web:
            yield f"ws://127.0.0.1:{web}", log.read_text


@pytest.mark.parametrize("runtime", ["asyncio", "uwsgi"])
def test_redis_outage_keeps_websockets_and_resubscribes(runtime, request, tmp_path, rdb, caplog):
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as first:
            with server_on_redis(runtime, port, request, caplog) as (ws_base, server_log):
                ws = connect(ws_base)
                RedisPublisher(facility=FACILITY, broadcast=True).publish_message("before")
                assert ws.recv() == "before"
                first.kill()
                first.wait()
                with private_redis(tmp_path, *args, port=port):
                    restarted = redis.Redis(port=port)
                    wait_until(
                        lambda: restarted.pubsub_numsub(CHANNEL)[0][1] == 1,
                        "the hub to subscribe again",
                    )
                    RedisPublisher(facility=FACILITY, broadcast=True).publish_message("after")
                    assert ws.recv() == "after"  # the same socket, never closed
                ws.close()
                assert "Lost the Redis subscription connection" in server_log()
                assert "Redis is back" in server_log()


def start_runwebsocket(port: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "examples")])
    command = [sys.executable, "-m", "django", "runwebsocket", f"127.0.0.1:{port}", *extra]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def wait_for_listening(process: subprocess.Popen, count: int) -> None:
    """Read the server's log until ``count`` workers said they listen."""
    seen = 0
    while seen < count:
        line = process.stderr.readline()
        if not line:
            pytest.fail(f"runwebsocket exited early with {process.wait()}")
        seen += bool(re.search(r"listening on", line))


def test_sigterm_closes_websockets_with_1001_and_exits(rdb):
    port = free_port()
    process = start_runwebsocket(port)
    try:
        wait_for_listening(process, 1)
        clients = [connect(f"ws://127.0.0.1:{port}") for _ in range(3)]
        process.send_signal(signal.SIGTERM)
        assert [recv_close(ws) for ws in clients] == [1001, 1001, 1001]
        assert process.wait(timeout=30) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        process.kill()
        process.wait()


def test_workers_share_the_port_and_each_has_a_hub(rdb):
    port = free_port()
    [(_, before)] = rdb.pubsub_numsub(CHANNEL)  # subscribers from elsewhere in this run
    process = start_runwebsocket(port, "--workers", "2")
    try:
        wait_for_listening(process, 2)
        clients = [connect(f"ws://127.0.0.1:{port}") for _ in range(24)]
        # Each worker that holds a subscriber subscribed once, on its own connection.
        assert rdb.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), before + 2)]
        receivers = RedisPublisher(facility=FACILITY, broadcast=True).publish_message("to all")
        assert receivers == {CHANNEL: before + 2}
        assert [ws.recv() for ws in clients] == ["to all"] * len(clients)
        for ws in clients:
            ws.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_workers_stop_when_their_supervisor_is_killed(rdb):
    port = free_port()
    process = start_runwebsocket(port, "--workers", "2")
    try:
        wait_for_listening(process, 2)
        workers = children_of(process.pid)
        assert len(workers) == 2
        process.kill()  # no chance to forward a signal
        process.wait()
        wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), "workers")
    finally:
        for worker in children_of(process.pid):
            os.kill(worker, signal.SIGKILL)
