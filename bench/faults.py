"""Fault benchmark: ``runwebsocket`` under the faults production brings. Prints, asserts nothing.

1. Redis restarted 10 times under 1,000 open websockets: per restart, sockets dropped and
   messages lost among 20 published once the hub has resubscribed.
2. 1,000 disconnect/reconnect cycles on one channel during a steady publish: reconnects that
   never hear the next message (deaf), and server RSS before and after.
3. 10,000 handshakes reset right after the request: server RSS and subscriptions before and
   after.
4. 100 clients that flood pings and never read: how many are cut off, server RSS before,
   at the peak and after.

Run through ``bench/run faults [--runtime runwebsocket|asgi|runserver]`` (it installs the
bench extras); it starts its own ``redis-server`` (which it kills and restarts) and its own
server: ``manage.py runwebsocket``, ``ws4redis.asgi.application`` under uvicorn, or
``manage.py runserver`` with ``ws4redis.django_runserver.application``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from bench.harness import (
    LeanClient,
    Tally,
    connect_clients,
    free_port,
    rss_bytes,
    start_process,
    stop_process,
    wait_for,
)

HOST = "127.0.0.1"
PING = bytes([0x89, 0xFD]) + b"\0\0\0\0" + b"x" * 125  # masked (zero mask) ping, 125 bytes


class RedisProcess:
    """A private ``redis-server`` that can be killed and started again on its port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit(
                "the fault benchmark needs redis-server (apt-get install redis-server)"
            )
        self.command = [binary, "--bind", HOST, "--save", "", "--appendonly", "no",
                        "--dir", tempfile.mkdtemp()]  # fmt: skip
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [*self.command, "--port", str(self.port)], stdout=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def numsub(client, channel: str) -> int:
    return client.pubsub_numsub(channel)[0][1]


async def until(condition, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def restarts(redis_server: RedisProcess, port: int, clients: int) -> None:
    import redis

    tally = Tally()
    path = "/ws/faults?subscribe-broadcast"
    transports = await connect_clients(HOST, port, path, clients, tally)
    channel = "bench:broadcast:faults"
    client = redis.Redis(port=redis_server.port)
    number, rows = 0, []
    for _ in range(10):
        redis_server.kill()
        redis_server.start()
        back = await until(lambda: numsub(client, channel) == 1, 30)
        open_now = sum(not t.is_closing() for t in transports)
        first = number + 1
        for _ in range(20):
            number += 1
            client.publish(channel, f"{number} {time.monotonic()} x")
            await asyncio.sleep(0.01)
        numbers = range(first, number + 1)
        await wait_for(lambda: tally.total(numbers) >= 20 * open_now, tally, 10)  # noqa: B023
        rows.append((clients - open_now, 20 * open_now - tally.total(numbers), back))
    for transport in transports:
        transport.close()
    dropped = [row[0] for row in rows]
    lost = [row[1] for row in rows]
    print(f"1. Redis restarted 10 times, {clients} websockets: resubscribed every time: "
          f"{all(row[2] for row in rows)}; sockets dropped per restart {dropped}; "
          f"messages lost after resubscribe per restart {lost}")  # fmt: skip


async def cycles(redis_server: RedisProcess, port: int, pid: int) -> None:
    import redis

    channel = "bench:broadcast:cycle"
    client = redis.Redis(port=redis_server.port)
    stop = asyncio.Event()

    async def steady() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            client.publish(channel, f"{number} {time.monotonic()} x")
            await asyncio.sleep(0.005)

    publisher = asyncio.get_running_loop().create_task(steady())
    before = rss_bytes(pid)
    deaf = 0
    loop = asyncio.get_running_loop()
    for cycle in range(1000):
        tally = Tally()
        transport, _ = await loop.create_connection(
            lambda: LeanClient(f"ws://{HOST}:{port}/ws/cycle?subscribe-broadcast", tally),  # noqa: B023
            HOST,
            port,
        )
        await wait_for(lambda: tally.opened > 0, tally, 10)  # noqa: B023
        if not await wait_for(lambda: bool(tally.received), tally, 2):  # noqa: B023
            deaf += 1
        if cycle % 2:
            transport.abort()  # a reset
        else:
            transport.close()  # a FIN without a close frame
    stop.set()
    await publisher
    await asyncio.sleep(2)  # let the server finish the last disconnects
    after = rss_bytes(pid)
    growth = (after / before - 1) * 100
    print(f"2. 1,000 disconnect/reconnect cycles on one channel: {deaf} deaf reconnects; RSS "
          f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1f} %)")  # fmt: skip


def aborted_handshakes(redis_server: RedisProcess, port: int, pid: int, pace: float) -> None:
    import redis

    client = redis.Redis(port=redis_server.port)
    channel = "bench:broadcast:aborted"
    request = (
        f"GET /ws/aborted?subscribe-broadcast HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    before = rss_bytes(pid), numsub(client, channel)
    for _ in range(10_000):
        with socket.create_connection((HOST, port)) as sock:
            sock.sendall(request)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(pace)
    # the server may still be working through the backlog: give it up to 30 s to finish
    deadline = time.monotonic() + 30
    while numsub(client, channel) != before[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    after = rss_bytes(pid), numsub(client, channel)
    print(f"3. 10,000 aborted handshakes: RSS {before[0] / 2**20:.1f} -> "
          f"{after[0] / 2**20:.1f} MiB ({(after[0] / before[0] - 1) * 100:+.1f} %), "
          f"subscriptions {before[1]} -> {after[1]}")  # fmt: skip


def ping_flooders(port: int, pid: int) -> None:
    before = rss_bytes(pid)
    outcomes: list[str] = []
    peak = [before]

    def flood() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.connect((HOST, port))
            sock.sendall(
                f"GET /ws/flood HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            sock.recv(4096)  # the 101; nothing is read afterwards
        except OSError:
            outcomes.append("not let in (the server's accept queue was full)")
            sock.close()
            return
        sock.settimeout(5)
        try:
            for _ in range(4_000):  # 8 MB of pings: eight times the default limit
                sock.sendall(PING * 16)
            outcomes.append("sent everything")
        except TimeoutError:
            outcomes.append("held back (the server stopped reading)")
        except OSError:
            outcomes.append("cut off")
        finally:
            sock.close()

    threads = [threading.Thread(target=flood) for _ in range(100)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak.append(rss_bytes(pid))
        time.sleep(0.05)
    time.sleep(2)
    after = rss_bytes(pid)
    counts = {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}
    print(f"4. 100 non-reading ping flooders: {counts}; RSS "
          f"{before / 2**20:.1f} -> peak {max(peak) / 2**20:.1f} -> {after / 2**20:.1f} MiB "
          f"({(after / before - 1) * 100:+.1f} %)")  # fmt: skip


def start_server(runtime: str, port: int):
    if runtime == "asgi":
        command = [sys.executable, "-m", "uvicorn", "ws4redis.asgi:application",
                   "--port", str(port), "--log-level", "info"]  # fmt: skip
        return start_process(command, "Uvicorn running")
    if runtime == "runserver":
        runserver = [sys.executable, "-m", "django", "runserver", f"{HOST}:{port}", "--noreload"]
        # runserver says it is ready on stdout; the shell hands that to the log that is read
        return start_process(["sh", "-c", 'exec "$@" 1>&2', "sh", *runserver], "Quit the server")
    command = [sys.executable, "-m", "django", "runwebsocket", f"{HOST}:{port}"]
    return start_process(command, "listening on")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--runtime", choices=["runwebsocket", "asgi", "runserver"], default="runwebsocket"
    )
    parser.add_argument("--clients", type=int, default=1000, help="websockets of part 1")
    args = parser.parse_args()
    print(f"Fault benchmark: {args.runtime}", flush=True)
    redis_server = RedisProcess()
    redis_server.start()
    os.environ.update(REDIS_HOST=HOST, REDIS_PORT=str(redis_server.port))
    port = free_port()
    server = start_server(args.runtime, port)
    try:
        asyncio.run(restarts(redis_server, port, args.clients))
        asyncio.run(cycles(redis_server, port, server.pid))
        # runserver listens with a backlog of 10 and starts a thread per connection: unpaced,
        # its accept queue overflows and every dropped SYN costs the client a second or more
        pace = 0.005 if args.runtime == "runserver" else 0
        aborted_handshakes(redis_server, port, server.pid, pace)
        ping_flooders(port, server.pid)
    finally:
        stop_process(server)
        redis_server.kill()


if __name__ == "__main__":
    main()
