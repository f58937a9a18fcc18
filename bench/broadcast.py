"""Broadcast benchmark: ``runwebsocket`` against Django Channels, on this machine.

Not a test: it prints figures. The server under test runs pinned to core 0; this process
(clients and publisher) pins itself to core 1. Server CPU comes from ``/proc/<pid>/stat``,
memory from ``/proc/<pid>/statm``. Run it through ``bench/run`` (it finds Redis and installs
Channels and uvicorn, which only the comparison needs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SERVER_CORE, CLIENT_CORE = 0, 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


# -- clients -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What all clients received: per message number, and publish-to-receive latencies."""

    opened: int = 0
    failed: int = 0
    received: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    clients: list[LeanClient] = field(default_factory=list)
    stash: bool = False

    def total(self, numbers: range) -> int:
        return sum(self.received.get(n, 0) for n in numbers)


class LeanClient(asyncio.Protocol):
    """One websocket client: ``websockets``' sans-I/O client protocol over a transport.

    With ``tally.stash`` set, arriving bytes are only timestamped and kept, and parsed later
    (:meth:`parse_stash`): then the time one client spends parsing does not show up as
    latency of the next.
    """

    def __init__(self, uri: str, tally: Tally) -> None:
        self.tally = tally
        self.protocol = ClientProtocol(parse_uri(uri))
        self.protocol.send_request(self.protocol.connect())
        self.transport: asyncio.Transport | None = None
        self.stash: list[tuple[float, bytes]] = []
        tally.clients.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.writelines(self.protocol.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.tally.stash:
            self.stash.append((time.monotonic(), data))
        else:
            self.parse(time.monotonic(), data)

    def parse_stash(self) -> None:
        stash, self.stash = self.stash, []
        for now, data in stash:
            self.parse(now, data)

    def parse(self, now: float, data: bytes) -> None:
        self.protocol.receive_data(data)
        tally = self.tally
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if event.status_code == 101:
                    tally.opened += 1
                else:
                    tally.failed += 1
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                number, sent = event.data.split(b" ", 2)[:2]
                n = int(number)
                tally.received[n] = tally.received.get(n, 0) + 1
                tally.latencies.append(now - float(sent))
        pending = self.protocol.data_to_send()
        if pending and self.transport is not None:
            self.transport.writelines(pending)
        tally.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.changed.set()


async def connect_clients(host: str, port: int, path: str, count: int, tally: Tally) -> list:
    loop = asyncio.get_running_loop()
    uri = f"ws://{host}:{port}{path}"
    transports = []
    batch = 200
    for start in range(0, count, batch):
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda: LeanClient(uri, tally), host, port)
                for _ in range(min(batch, count - start))
            )
        )
        transports.extend(t for t, _ in made)
        await wait_for(lambda: tally.opened + tally.failed >= len(transports), tally, 120)
    if tally.failed:
        raise SystemExit(f"{tally.failed} websocket handshakes failed")
    return transports


async def wait_for(done: Callable[[], bool], tally: Tally, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not done():
        tally.changed.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.changed.wait(), min(remaining, 0.5))
    return True


# -- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    path: str
    publish: Callable[[str], Awaitable[None]]


def start_process(command: list[str], ready_text: str) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="bench.settings", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CORE), *command],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in process.stderr:  # type: ignore[union-attr]
        if ready_text in line:
            # Keep reading its log, or the server blocks once the pipe is full.
            threading.Thread(target=process.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            return process
    raise SystemExit(f"{command[0]} did not start: exit {process.wait()}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ws4redis_server() -> Server:
    from ws4redis.publisher import RedisPublisher

    port = free_port()
    process = start_process(
        [sys.executable, "-m", "django", "runwebsocket", f"127.0.0.1:{port}"], "listening on"
    )
    publisher = RedisPublisher(facility="bench", broadcast=True)

    async def publish(text: str) -> None:
        publisher.publish_message(text)

    return Server("ws4redis", process, port, "/ws/bench?subscribe-broadcast", publish)


def channels_server() -> Server:
    from channels.layers import get_channel_layer

    port = free_port()
    process = start_process(
        [
            sys.executable, "-m", "uvicorn", "bench.channels_asgi:application",
            "--port", str(port), "--log-level", "info", "--ws", "websockets",
        ],
        "Uvicorn running",
    )  # fmt: skip
    layer = get_channel_layer()

    async def publish(text: str) -> None:
        await layer.group_send("bench", {"type": "bench.message", "text": text})

    return Server("channels", process, port, "/ws/bench", publish)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


# -- workloads ---------------------------------------------------------------------------


class Numbers:
    """Hands out message numbers, so that every published message is told apart."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, count: int) -> range:
        taken = range(self.next, self.next + count)
        self.next += count
        return taken


NUMBERS = Numbers()


async def burst(server: Server, tally: Tally, clients: int, messages: int) -> dict:
    """Publish ``messages`` at once; measure server CPU until every client has them all."""
    numbers = NUMBERS.take(messages)
    before = cpu_seconds(server.process.pid)
    for n in numbers:
        await server.publish(f"{n} {time.monotonic()} burst")
    await wait_for(lambda: tally.total(numbers) >= clients * messages, tally, 600)
    used = cpu_seconds(server.process.pid) - before
    received = tally.total(numbers)
    return {"reach": received / (clients * messages), "us": used * 1e6 / max(received, 1)}


async def steady(server: Server, tally: Tally, clients: int, rate: float, seconds: float) -> dict:
    """Publish ``rate`` messages per second; collect publish-to-receive latencies."""
    tally.latencies.clear()
    count = int(rate * seconds)
    numbers = NUMBERS.take(count)
    before = cpu_seconds(server.process.pid)
    began = time.monotonic()
    tally.stash = True
    gc.disable()  # a collection in this process would be counted as latency
    for i, n in enumerate(numbers):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        await server.publish(f"{n} {time.monotonic()} steady")
    await asyncio.sleep(2)  # stragglers; whatever is still missing counts against reach
    used = cpu_seconds(server.process.pid) - before
    tally.stash = False
    gc.enable()
    for client in tally.clients:
        client.parse_stash()
    latencies = sorted(tally.latencies)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return {
        "reach": tally.total(numbers) / (clients * count),
        "p50": pick(0.50),
        "p99": pick(0.99),
        "max": latencies[-1] * 1e3,
        "us": used * 1e6 / max(len(latencies), 1),
    }


async def run_server(server: Server, args: argparse.Namespace, counts: list[int]) -> dict:
    results: dict = {}
    tally = Tally()
    transports: list = []
    rss_empty = rss_bytes(server.process.pid)
    try:
        for clients in counts:
            more = clients - len(transports)
            transports += await connect_clients("127.0.0.1", server.port, server.path, more, tally)
            await asyncio.sleep(1)  # let the server settle after the handshakes
            rss = rss_bytes(server.process.pid)
            runs = []
            for _ in range(args.runs):
                runs.append(await burst(server, tally, clients, args.messages))
                print(f"    burst: {runs[-1]}", flush=True)
            results[clients] = {
                "reach": min(r["reach"] for r in runs),
                "us": statistics.median(r["us"] for r in runs),
                "rss_per_conn": (rss - rss_empty) / clients,
            }
            print(f"  {server.name} {clients} clients: {results[clients]}", flush=True)
            if clients == args.latency_clients:
                steady_runs = []
                for _ in range(args.runs):
                    steady_runs.append(
                        await steady(server, tally, clients, args.rate, args.seconds)
                    )
                    print(f"    steady: {steady_runs[-1]}", flush=True)
                results["latency"] = {
                    key: statistics.median(run[key] for run in steady_runs)
                    for key in steady_runs[0]
                }
                results["latency"]["reach"] = min(run["reach"] for run in steady_runs)
    finally:
        for transport in transports:
            transport.abort()
        stop_process(server.process)
    return results


def prepare_process() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Pin this process (clients, publisher) to its core, allow a socket per client, set up
    Django for the publishers; returns the loop factory for the clients (uvloop's if any)."""
    os.sched_setaffinity(0, {CLIENT_CORE})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--channels-clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50, help="broadcasts per burst")
    parser.add_argument("--runs", type=int, default=3, help="bursts per client count")
    parser.add_argument("--latency-clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="broadcasts/s (latency)")
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    parser.add_argument("--skip-channels", action="store_true")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=prepare_process()) as runner:
        print("ws4redis (runwebsocket, 1 process, core 0):", flush=True)
        ours = runner.run(run_server(ws4redis_server(), args, args.clients))
        theirs: dict = {}
        if not args.skip_channels:
            print("Django Channels (uvicorn + RedisPubSubChannelLayer, core 0):", flush=True)
            theirs = runner.run(run_server(channels_server(), args, [args.channels_clients]))
    report(args, ours, theirs)


def report(args: argparse.Namespace, ours: dict, theirs: dict) -> None:
    print()
    print(f"| server | clients | reach | server CPU µs/delivery (median of {args.runs} bursts "
          f"of {args.messages}) | server RSS KiB/connection |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, results in (("ws4redis", ours), ("Channels", theirs)):
        for clients, r in results.items():
            if clients == "latency":
                continue
            print(f"| {name} | {clients} | {r['reach']:.3f} | {r['us']:.1f} | "
                  f"{r['rss_per_conn'] / 1024:.1f} |")  # fmt: skip
    print()
    print(f"| server | latency at {args.latency_clients} clients, {args.rate:g}/s for "
          f"{args.seconds:g} s, median of {args.runs} runs | p50 ms | p99 ms | max ms | "
          "reach (lowest) | server CPU µs/delivery |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, results in (("ws4redis", ours), ("Channels", theirs)):
        if "latency" in results:
            lat = results["latency"]
            print(f"| {name} | | {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | "
                  f"{lat['reach']:.3f} | {lat['us']:.1f} |")  # fmt: skip
    same = args.channels_clients
    if theirs and same in ours and same in theirs:
        ratio = theirs[same]["us"] / ours[same]["us"]
        print(f"\nChannels spends {ratio:.1f}x the server CPU per delivery of ws4redis "
              f"at {same} clients.")  # fmt: skip


if __name__ == "__main__":
    main()
