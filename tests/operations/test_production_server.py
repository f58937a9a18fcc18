"""What only the production server (``runwebsocket``) promises: graceful shutdown, several
workers on one port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import websocket
from django.test import override_settings

from tests.support.clients import FACILITY, assert_retry_later, login, recv_close, session_cookie
from tests.support.servers import (
    django_environment,
    free_port,
    in_process_server,
    private_redis,
    start_runwebsocket,
    wait_for_listening,
    wait_until,
)
from ws4redis.django_runserver import application
from ws4redis.publisher import RedisPublisher

CHANNEL = f"ws4redis:broadcast:{FACILITY}"


def connect(ws_base: str, query: str = "subscribe-broadcast", **kwargs) -> websocket.WebSocket:
    kwargs.setdefault("timeout", 10)
    return websocket.create_connection(f"{ws_base}/ws/{FACILITY}?{query}", **kwargs)


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


def test_request_that_does_not_arrive_in_time_is_cut_off(rdb):
    """An idle TCP connection and a slowloris (one header byte at a time) are closed once
    ``WS4REDIS_HANDSHAKE_TIMEOUT`` passes, and hold nothing afterwards."""
    with override_settings(WS4REDIS_HANDSHAKE_TIMEOUT=0.5):
        with in_process_server() as running:
            address = ("127.0.0.1", running.port)
            with socket.create_connection(address, timeout=10) as idle:
                assert idle.recv(1) == b""  # closed by the server, not by our timeout
            with socket.create_connection(address, timeout=10) as slow:
                request = b"GET /ws/unittest HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"y" * 400
                sent = 0
                with contextlib.suppress(OSError):
                    for byte in request:
                        slow.sendall(bytes([byte]))
                        sent += 1
                        time.sleep(0.05)
                assert sent < len(request)  # cut off before the request could complete
            wait_until(lambda: not running.server.connections, "the connections to go")


def test_connections_over_the_cap_get_503_with_retry_after(rdb):
    with override_settings(WS4REDIS_MAX_CONNECTIONS=3):
        with in_process_server() as running:
            clients = [connect(running.ws_base) for _ in range(3)]
            assert_retry_later(lambda: connect(running.ws_base))
            clients.pop().close()
            wait_until(lambda: len(running.server.connections) == 2, "a free place")
            clients.append(connect(running.ws_base))  # a place is free again
            for ws in clients:
                ws.close()


def test_sigterm_during_a_redis_outage_exits_and_the_port_restarts_at_once(tmp_path, rdb):
    redis_port, port = free_port(), free_port()
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port)}
    with private_redis(tmp_path, "--port", str(redis_port), port=redis_port) as server:
        process = start_runwebsocket(port, **env)
        try:
            wait_for_listening(process, 1)
            ws = connect(f"ws://127.0.0.1:{port}")
            server.kill()  # Redis is gone while the websocket is open
            server.wait()
            process.send_signal(signal.SIGTERM)
            assert recv_close(ws) == 1001
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
            process.wait()
    # The server closed that websocket first, so the port is in TIME_WAIT: binding it again
    # must work all the same.
    again = start_runwebsocket(port, **env)
    try:
        wait_for_listening(again, 1)
    finally:
        again.kill()
        again.wait()


def held(client: dict) -> bool:
    """A client whose command a paused server holds: Redis leaves it unparsed in the query
    buffer, Valkey parses it and marks the client blocked."""
    return int(client["qbuf"]) > 0 or "b" in client["flags"]


def test_sigterm_while_redis_holds_client_messages_up_still_exits(tmp_path, rdb):
    """A paused Redis holds a client message in the publishing thread: SIGTERM still ends
    the process within the shutdown grace, saying what was dropped."""
    redis_port, port = free_port(), free_port()
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port)}
    with private_redis(tmp_path, "--port", str(redis_port), port=redis_port):
        admin = redis.Redis(port=redis_port)
        process = start_runwebsocket(port, **env)
        try:
            wait_for_listening(process, 1)
            ws = connect(f"ws://127.0.0.1:{port}", "publish-broadcast")
            admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
            ws.send("held up")
            wait_until(lambda: any(map(held, admin.client_list())), "the held command")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0  # the pause would hold it for 60 s
            log = process.stderr.read()  # dropped at the shutdown, or refused by then
            assert "did not take 1 client message(s)" in log or "Dropped 1 client message" in log
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            process.kill()
            process.wait()


def test_disconnect_from_a_django_shell_closes_the_user_s_websockets_everywhere(
    rdb, users, live_server
):
    """``ws4redis.disconnect(user=...)`` in ``manage.py shell`` closes that user's
    websockets in both workers of a ``runwebsocket`` and under ``runserver`` (Django's live
    server here), and leaves another user's open."""
    live_server.thread.httpd.set_app(application)
    john, mary = session_cookie(login("john")), session_cookie(login("mary"))
    port = free_port()
    process = start_runwebsocket(port, "--workers", "2")
    try:
        wait_for_listening(process, 2)
        bases = [f"ws://127.0.0.1:{port}"] * 16 + [live_server.url.replace("http", "ws", 1)]
        johns = [connect(base, "subscribe-user", header=[john]) for base in bases]
        marys = connect(bases[0], "subscribe-user", header=[mary])
        shell = subprocess.run(
            [sys.executable, "-m", "django", "shell", "-c",
             "import ws4redis; print(ws4redis.disconnect(user='john'))"],
            env=django_environment(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert [recv_close(ws) for ws in johns] == [4001] * len(johns)
        assert int(shell.stdout.split()[-1]) == 3  # both workers and this process heard it
        RedisPublisher(facility=FACILITY, users=["mary"]).publish_message("still here")
        assert marys.recv() == "still here"
        marys.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
