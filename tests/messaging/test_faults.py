"""Faults injected for real, under every runtime: the Redis process killed and restarted,
clients that vanish with a TCP reset."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from urllib.parse import urlsplit

import pytest
import redis
import websocket
from django.test import override_settings
from websockets.frames import Frame, Opcode

from tests.support.clients import FACILITY, assert_retry_later, connected
from tests.support.servers import free_port, private_redis, wait_until
from ws4redis.publisher import RedisPublisher

CHANNEL = f"ws4redis:broadcast:{FACILITY}"


@pytest.mark.parametrize("outage", [0, 12], ids=["blip", "long"])
def test_redis_outage_keeps_websockets_and_resubscribes(server, tmp_path, outage):
    """Redis dies under open websockets and comes back, at once or after longer than the
    reconnect backoff's ceiling: the same sockets get what is published afterwards, and the
    server says once that Redis went away and came back, with no traceback."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as first:
            with connected(server, "subscribe-broadcast") as ws:
                publisher = RedisPublisher(facility=FACILITY, broadcast=True)
                publisher.publish_message("before")
                assert ws.recv() == "before"
                first.kill()
                first.wait()
                time.sleep(outage)  # the length of the fault, not a wait for a result
                with private_redis(tmp_path, *args, port=port):
                    restarted = redis.Redis(port=port)
                    wait_until(
                        lambda: restarted.pubsub_numsub(CHANNEL)[0][1] == 1,
                        "the hub to subscribe again",
                    )
                    publisher.publish_message("after")
                    assert ws.recv() == "after"  # the same socket, never closed
                    log = server.log()
    assert log.count("Lost the Redis subscription connection") == 1
    assert "1 channels resubscribed" in log and "Redis is back after" in log
    assert "Traceback" not in log


def test_killed_subscription_connection_is_replaced(server, tmp_path):
    """Redis drops the process's subscription connection (``CLIENT KILL TYPE pubsub``):
    the hub connects again, resubscribes, and the same socket gets the next message."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port):
            admin = redis.Redis(port=port)
            with connected(server, "subscribe-broadcast") as ws:
                publisher = RedisPublisher(facility=FACILITY, broadcast=True)
                publisher.publish_message("before")
                assert ws.recv() == "before"
                assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
                # The kill took the only subscriber: only a resubscription brings back 1.
                wait_until(lambda: admin.pubsub_numsub(CHANNEL)[0][1] == 1, "a resubscription")
                publisher.publish_message("after")
                assert ws.recv() == "after"


def test_aborted_handshakes_leave_no_subscription(server, rdb):
    """Clients that reset the connection right after sending their upgrade request (before
    or while the server opens it) leave no subscription behind."""
    facility = "aborted"
    channel = f"ws4redis:broadcast:{facility}"
    host, port = urlsplit(server.ws_base).hostname, urlsplit(server.ws_base).port
    request = (
        f"GET /ws/{facility}?subscribe-broadcast HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    for _ in range(200):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with connected(server, "subscribe-broadcast", facility=facility):
        pass  # opened after all of them, and closed again
    wait_until(lambda: rdb.pubsub_numsub(channel)[0][1] == 0, "every subscription to go")


def test_listener_arriving_as_the_last_one_resets_is_not_deaf(server, rdb):
    """The last websocket of a channel vanishes (TCP reset) and a new one opens on the same
    channel at once, while the process's UNSUBSCRIBE may still be in flight: the new one
    must get what is published next, every time."""
    publisher = RedisPublisher(facility=FACILITY, broadcast=True)
    for attempt in range(30):
        leaving = server.connect("subscribe-broadcast")
        leaving.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaving.sock.close()  # RST: the server learns it at its own pace
        with connected(server, "subscribe-broadcast") as arriving:
            publisher.publish_message(f"attempt {attempt}", expire=0)
            assert arriving.recv() == f"attempt {attempt}"


@pytest.mark.not_under("asgi", reason="the ASGI server answers pings itself")
@pytest.mark.parametrize(
    "bound", [64 * 1024, 1024 * 1024], ids=["reached-by-one-read", "reached-in-the-socket"]
)
def test_ping_flood_from_a_client_that_never_reads_is_cut_off(server, rdb, bound):
    """Pongs count against ``WS4REDIS_MAX_BUFFER_SIZE``: a client that floods pings and
    never reads is closed instead of growing the server, and its neighbour is served. Both
    where the pongs of one read pass the bound (64 KiB) and where no single read can (1 MiB:
    one read brings at most a few hundred KB of pings), so that what waits in the server's
    own socket buffer is bounded too. Several flooders in turn: how the server's end of
    the connection meets the flood is a race (a client shut out behind a full receive
    window and then closed in order would hang, not learn it was cut off)."""
    ping = Frame(Opcode.PING, b"x" * 125).serialize(mask=True)
    with connected(server, "subscribe-broadcast") as neighbour:
        for attempt in range(4):
            with override_settings(WS4REDIS_MAX_BUFFER_SIZE=bound):
                flooder = server.connect(
                    "subscribe-broadcast", sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)]
                )
            cut_off = False
            for _ in range(32_000):  # 64 MB of pings, far past the bound and the kernel's buffers
                try:
                    flooder.sock.sendall(ping * 16)
                except TimeoutError:  # the server stopped reading it, but kept it: not cut off
                    break
                except OSError:  # reset or broken pipe: the server cut it off
                    cut_off = True
                    break
            flooder.sock.close()
            assert cut_off, f"flooder {attempt} was not cut off"
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("still served")
        assert neighbour.recv() == "still served"


def test_open_refused_during_an_outage_leaves_nothing_behind(server, tmp_path):
    """A websocket opened while Redis is down gets 503 (with Retry-After) and leaves no
    registration: once Redis is back, the next client of that facility is served and is the
    only subscriber."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": port}):
        with private_redis(tmp_path, *args, port=port) as first:
            first.kill()
            first.wait()
            assert_retry_later(lambda: server.connect("subscribe-broadcast"))
        with private_redis(tmp_path, *args, port=port):
            with connected(server, "subscribe-broadcast") as ws:
                receivers = RedisPublisher(facility=FACILITY, broadcast=True).publish_message(
                    "back", expire=0
                )
                assert ws.recv() == "back"
            assert receivers == {CHANNEL: 1}


INLINE = "publishes in the client's own thread: a stalled Redis stops reading that client"


def publish_behind_the_queue(server, message: str) -> None:
    """Send ``message`` through the server, so that it is published after what the server
    still queues (one publishing thread keeps the order; a publish straight to Redis from
    here could overtake it). The sender hears it back (``echo``) once it went out; while
    the queue is still full it is refused with 1013 instead, and sent again."""
    while True:
        with connected(server, "subscribe-broadcast&publish-broadcast&echo") as ws:
            ws.send(message)
            while (frame := ws.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:
                if frame.data == message.encode():
                    return
        assert int.from_bytes(frame.data[:2], "big") == 1013


@pytest.mark.not_under("runserver", "uwsgi", reason=INLINE)
@pytest.mark.parametrize(
    ("limit", "size", "most"),
    [
        ({"WS4REDIS_MAX_PENDING_PUBLISHES": 20}, 10, 21),
        ({"WS4REDIS_MAX_CLIENT_PENDING_BYTES": 256 * 1024}, 60_000, 5),
        ({"WS4REDIS_MAX_PENDING_BYTES": 256 * 1024}, 60_000, 5),
    ],
    ids=["messages", "client-bytes", "process-bytes"],
)
def test_client_publishes_backed_up_behind_a_paused_redis_are_bounded(
    server, tmp_path, limit, size, most
):
    """While Redis is paused, what clients send waits in a queue bounded in messages, in
    bytes per client and in bytes per process: the client that overruns it is closed with
    1013, and what was queued still reaches everybody, in order."""
    port = free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    settings = {"WS4REDIS_CONNECTION": {"host": "127.0.0.1", "port": port}}
    with override_settings(**settings, **limit):
        with private_redis(tmp_path, *args, port=port):
            admin = redis.Redis(port=port)
            with connected(server, "subscribe-broadcast") as reader:
                writer = server.connect("publish-broadcast")
                admin.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
                sent = 0
                with contextlib.suppress(OSError, websocket.WebSocketException):
                    for sent in range(1, 201):
                        writer.send(f"m{sent}:".ljust(size, "x"))
                try:
                    while (frame := writer.recv_frame()).opcode != websocket.ABNF.OPCODE_CLOSE:
                        pass
                finally:
                    admin.execute_command("CLIENT", "UNPAUSE")
                assert int.from_bytes(frame.data[:2], "big") == 1013
                publish_behind_the_queue(server, "end")
                received = []
                while (message := reader.recv()) != "end":
                    received.append(message)
    assert 0 < len(received) <= most
    assert received == [f"m{n}:".ljust(size, "x") for n in range(1, len(received) + 1)]


@pytest.mark.not_under("asgi", reason="the ASGI server pings (uvicorn --ws-ping-interval)")
def test_client_that_goes_silent_is_pinged_then_let_go(server, rdb):
    """A client that vanished without a FIN or a reset (it neither reads nor answers) gets a
    ping, then a close with 1011 once ``WS4REDIS_PING_TIMEOUT`` passes without an answer;
    its subscription goes, and a neighbour that answers stays."""
    with connected(server, "subscribe-broadcast") as neighbour:
        with override_settings(WS4REDIS_PING_INTERVAL=0.2, WS4REDIS_PING_TIMEOUT=0.2):
            silent = server.connect("subscribe-broadcast", facility="silent")
        channel = "ws4redis:broadcast:silent"
        wait_until(lambda: rdb.pubsub_numsub(channel)[0][1] == 0, "the silent client to go")
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message("still served")
        assert neighbour.recv() == "still served"
    received = b""
    while chunk := silent.sock.recv(4096):  # raw: no automatic pong from the client library
        received += chunk
    silent.sock.close()
    assert received.startswith(b"\x89\x00")  # the ping
    assert received.endswith(struct.pack("!H", 1011) + b"keepalive ping timeout")
