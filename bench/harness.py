"""What every benchmark shares: lean websocket and event-stream clients, the servers under
test started pinned to their core, CPU and memory read from ``/proc``, and the burst and
steady workloads. Run the benchmarks through ``bench/run``, which runs them as modules of the
``bench`` package from the repository's root, so they import this one plainly."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.extensions import ClientExtensionFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SERVER_CORE, CLIENT_CORE = 0, 1


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` so far, user and system, to the nanosecond: the time its
    threads ran, from the scheduler (``/proc/<pid>/task/*/schedstat``). ``/proc/<pid>/stat``
    counts in clock ticks of 10 ms, and a burst to 1,000 clients costs a few of them, so
    its figures moved by ±20 %. Falls back to ticks where the kernel keeps no schedstat.
    (A thread that ends between two readings takes its time with it: the servers measured
    keep their threads.)"""
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (FileNotFoundError, ProcessLookupError):  # no schedstat, or a thread just ended
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def child_pids(pid: int) -> list[int]:
    """The processes that ``pid`` started (nginx's workers, say)."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


# -- clients -----------------------------------------------------------------------------


@dataclass
class Tally:
    """What all clients received: per message number, and publish-to-receive latencies."""

    opened: int = 0
    failed: int = 0
    wire: int = 0
    """Bytes the clients read, headers and framing included."""
    received: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    clients: list[LeanClient | EventStreamClient] = field(default_factory=list)
    stash: bool = False

    def total(self, numbers: range) -> int:
        return sum(self.received.get(n, 0) for n in numbers)

    def record(self, now: float, message: bytes) -> None:
        """A message ``"<number> <monotonic time published> ..."`` received at ``now``."""
        number, sent = message.split(b" ", 2)[:2]
        n = int(number)
        self.received[n] = self.received.get(n, 0) + 1
        self.latencies.append(now - float(sent))


class LeanClient(asyncio.Protocol):
    """One websocket client: ``websockets``' sans-I/O client protocol over a transport.

    With ``tally.stash`` set, arriving bytes are only timestamped and kept, and parsed later
    (:meth:`parse_stash`): then the time one client spends parsing does not show up as
    latency of the next.
    """

    def __init__(
        self,
        uri: str,
        tally: Tally,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.tally = tally
        self.protocol = ClientProtocol(parse_uri(uri), extensions=extensions)
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self.transport: asyncio.Transport | None = None
        self.stash: list[tuple[float, bytes]] = []
        tally.clients.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.writelines(self.protocol.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.tally.wire += len(data)
        if self.tally.stash:
            self.stash.append((time.monotonic(), data))
        else:
            self.parse(time.monotonic(), data)

    def parse_stash(self) -> None:
        stash, self.stash = self.stash, []
        for now, data in stash:
            self.parse(now, data)

    def text(self, now: float, data: bytes) -> None:
        """A text message arrived at ``now``: its latency is counted."""
        self.tally.record(now, data)

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
                self.text(now, event.data)
        pending = self.protocol.data_to_send()
        if pending and self.transport is not None:
            self.transport.writelines(pending)
        tally.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.changed.set()


async def open_websocket(
    host: str,
    port: int,
    path: str,
    tally: Tally,
    extensions: Sequence[ClientExtensionFactory] | None = None,
    headers: dict[str, str] | None = None,
) -> asyncio.Transport:
    """A :class:`LeanClient` to ``path``; offering ``extensions`` (``permessage-deflate``,
    say) and sending ``headers`` (a session cookie) if given."""
    uri = f"ws://{host}:{port}{path}"
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        lambda: LeanClient(uri, tally, extensions, headers), host, port
    )
    return transport


async def connect_clients(
    host: str,
    port: int,
    path: str,
    count: int,
    tally: Tally,
    opener: Callable[[str, int, str, Tally], Awaitable[asyncio.Transport]] = open_websocket,
    window: int = 200,
) -> list:
    """Open ``count`` more websockets (or what ``opener`` opens) to ``path``, at most
    ``window`` of them waiting for their handshake answer at a time: a new one starts as
    soon as one is answered, as independent browsers would. (Batches that each wait for
    their last answer would idle the client while the server works and the server while
    the client does, adding the server's time to the client's.) Return once every one of
    them has its answer (the tally may count earlier clients too)."""
    answered_before = tally.opened + tally.failed
    transports: list = []

    def waiting() -> int:
        return len(transports) - (tally.opened + tally.failed - answered_before)

    while len(transports) < count:
        room = min(window - waiting(), count - len(transports))
        if room > 0:
            transports.extend(
                await asyncio.gather(*(opener(host, port, path, tally) for _ in range(room)))
            )
        elif not await wait_for(lambda: waiting() < window, tally, 120):
            break
    await wait_for(lambda: waiting() <= 0, tally, 120)
    if tally.failed:
        raise SystemExit(f"{tally.failed} handshakes failed")
    if waiting() > 0:
        raise SystemExit(f"{waiting()} handshakes went unanswered")
    return transports


class StampedReader(asyncio.StreamReader):
    """An asyncio stream that notes when each chunk arrived, so that a line's latency ends
    when its bytes reached this process (as :class:`LeanClient`'s does), not when its reading
    task got its turn: with a thousand streams on one loop, that turn comes milliseconds
    later for the last of them."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally
        self.fed = 0
        self.arrivals: collections.deque[tuple[int, float]] = collections.deque()

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.tally.wire += len(data)
        self.arrivals.append((self.fed, time.monotonic()))
        super().feed_data(data)

    def arrived(self, upto: int) -> float:
        """When the stream's byte number ``upto`` (counted from 1) arrived."""
        while self.arrivals[0][0] < upto:
            self.arrivals.popleft()
        return self.arrivals[0][1]


class EventStreamClient:
    """One Server-Sent Events client: a raw asyncio stream that sends the ``GET`` and reads
    lines, counting each ``data:`` line as a message (the benchmark's messages are one line;
    comments and blank lines are passed over). ``tally.stash`` works as for
    :class:`LeanClient`."""

    def __init__(self, reader: StampedReader, tally: Tally) -> None:
        self.reader = reader
        self.tally = tally
        self.stash: list[tuple[float, bytes]] = []
        self.task = asyncio.ensure_future(self.read())
        tally.clients.append(self)

    async def read(self) -> None:
        reader, tally = self.reader, self.tally
        with contextlib.suppress(ConnectionError):
            status = await reader.readline()
            head = [status]
            while head[-1] not in (b"\r\n", b""):
                head.append(await reader.readline())
            if status.startswith(b"HTTP/1.1 200 ") and head[-1]:
                tally.opened += 1
            else:
                tally.failed += 1
                tally.changed.set()
                return
            tally.changed.set()
            read = sum(map(len, head))
            while line := await reader.readline():
                read += len(line)
                if line.startswith(b"data: "):
                    if tally.stash:
                        self.stash.append((reader.arrived(read), line))
                    else:
                        tally.record(reader.arrived(read), line[6:])
                        tally.changed.set()
        tally.changed.set()

    def parse_stash(self) -> None:
        stash, self.stash = self.stash, []
        for now, line in stash:
            self.tally.record(now, line[6:])
        self.tally.changed.set()


async def open_event_stream(host: str, port: int, path: str, tally: Tally) -> asyncio.Transport:
    """What ``asyncio.open_connection`` does, with a :class:`StampedReader`; then the
    request of an ``EventSource``."""
    loop = asyncio.get_running_loop()
    reader = StampedReader(tally)
    transport, _ = await loop.create_connection(
        lambda: asyncio.StreamReaderProtocol(reader), host, port
    )
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    transport.write(request.encode())
    EventStreamClient(reader, tally)
    return transport


async def connect_event_streams(host: str, port: int, path: str, count: int, tally: Tally) -> list:
    """As :func:`connect_clients`, with event streams (a ``200`` answer counts as opened)."""
    return await connect_clients(host, port, path, count, tally, opener=open_event_stream)


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
    # Whose CPU and memory count as the server's: the worker processes of ``runwebsocket
    # --workers N`` (bench/workers.py fills it in) or nginx's worker (bench/peers.py); empty
    # for a server that is one process.
    pids: list[int] = field(default_factory=list)
    # Called by stop(), after the server's process ended: a publisher's connection closed,
    # a configuration directory removed.
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    # A burst's messages all at once, pipelined (see :func:`bench_publishing`); without
    # it a burst is published one ``publish`` after the other.
    publish_burst: Callable[[list[str]], Awaitable[None]] | None = None

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far, over all its processes."""
        return sum(cpu_seconds(pid) for pid in self.pids or [self.process.pid])

    def rss_bytes(self) -> int:
        """Resident memory of the server, over all its processes."""
        return sum(rss_bytes(pid) for pid in self.pids or [self.process.pid])

    def stop(self) -> None:
        stop_process(self.process)
        for cleanup in self.cleanups:
            cleanup()


def start_process(
    command: list[str], ready_text: str, *, cores: str = str(SERVER_CORE), ready_lines: int = 1
) -> subprocess.Popen:
    """Start ``command`` on ``cores`` (a taskset list) and return once ``ready_text`` has
    appeared in ``ready_lines`` lines of its stderr (one per worker process, say)."""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="bench.settings", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        ["taskset", "-c", cores, *command],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in process.stderr:  # type: ignore[union-attr]
        if ready_text in line:
            ready_lines -= 1
        if ready_lines == 0:
            # Keep reading its log, or the server blocks once the pipe is full.
            threading.Thread(target=process.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            return process
    raise SystemExit(f"{command[0]} did not start: exit {process.wait()}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_channel() -> str:
    """The channel ``RedisPublisher(facility="bench", broadcast=True)`` publishes to, and
    that ``/ws/bench?subscribe-broadcast`` (or a yardstick) listens to."""
    from ws4redis.core.names import channel_name
    from ws4redis.settings import key_prefix

    return channel_name(key_prefix(), "broadcast", "bench")


def bench_publishing(*, pipelined_bursts: bool = False) -> dict[str, Any]:
    """How a server of the bench facility is published to (keyword arguments of
    :class:`Server`): each message with ``RedisPublisher.publish_message``, as a Django view
    does; with ``pipelined_bursts`` a burst as one pipeline of ``PUBLISH``es to
    :func:`bench_channel`. That is what ``publish_message`` sends for each under the bench's
    settings (``WS4REDIS_EXPIRE = 0``, no history), but in one round trip, as
    ``bench/peers.py`` sends nchan its burst: one call after the other, a burst of 50
    reaches the server over some 3 ms of round trips, about one flush to 1,000 sockets, so
    it coalesces less."""
    from ws4redis.bus.pool import get_redis
    from ws4redis.publisher import RedisPublisher

    publisher = RedisPublisher(facility="bench", broadcast=True)
    channel = bench_channel()

    async def publish(text: str) -> None:
        publisher.publish_message(text)

    async def publish_burst(texts: list[str]) -> None:
        pipeline = get_redis().pipeline(transaction=False)
        for text in texts:
            pipeline.publish(channel, text)
        pipeline.execute()

    return {"publish": publish, "publish_burst": publish_burst if pipelined_bursts else None}


def ws4redis_server(
    workers: int = 1, cores: str = str(SERVER_CORE), *, pipelined_bursts: bool = False
) -> Server:
    """``runwebsocket`` with ``workers`` processes on ``cores``; ready once each listens.
    Published to as :func:`bench_publishing` says."""
    port = free_port()
    command = [sys.executable, "-m", "django", "runwebsocket", f"127.0.0.1:{port}"]
    # e.g. WS4REDIS_BENCH_SERVER_ARGS="--metrics 127.0.0.1:9100" to watch the server's metrics
    command += os.environ.get("WS4REDIS_BENCH_SERVER_ARGS", "").split()
    if workers != 1:
        command += ["--workers", str(workers)]
    process = start_process(command, "listening on", cores=cores, ready_lines=workers)
    return Server(
        "ws4redis", process, port, "/ws/bench?subscribe-broadcast",
        **bench_publishing(pipelined_bursts=pipelined_bursts),
    )  # fmt: skip


def anchor_server(module: str, name: str, path: str, *, pipelined_bursts: bool = False) -> Server:
    """The yardstick ``module`` of ``bench/anchors`` (``python -m module PORT CHANNEL``)
    on :func:`bench_channel`, published to as :func:`ws4redis_server` is, so the publishing
    side costs the same; its clients open ``path``."""
    port = free_port()
    command = [sys.executable, "-m", module, str(port), bench_channel()]
    process = start_process(command, "listening on")
    return Server(name, process, port, path, **bench_publishing(pipelined_bursts=pipelined_bursts))


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


async def burst(
    server: Server,
    tally: Tally,
    clients: int,
    messages: int,
    limit: float = 600,
    payload: str = "",
) -> dict:
    """Publish ``messages`` at once (each with ``payload`` after its number and time);
    measure server CPU and the bytes clients read until every client has them all (or
    ``limit`` seconds have passed: then reach says what was missing)."""
    numbers = NUMBERS.take(messages)
    before, read = server.cpu_seconds(), tally.wire
    texts = [f"{n} {time.monotonic()} burst{payload}" for n in numbers]
    if server.publish_burst is not None:
        await server.publish_burst(texts)
    else:
        for text in texts:
            await server.publish(text)
    await wait_for(lambda: tally.total(numbers) >= clients * messages, tally, limit)
    used = server.cpu_seconds() - before
    received = tally.total(numbers)
    return {
        "reach": received / (clients * messages),
        "us": used * 1e6 / max(received, 1),
        "bytes": (tally.wire - read) / max(received, 1),
    }


async def steady(
    server: Server, tally: Tally, clients: int, rate: float, seconds: float, payload: str = ""
) -> dict:
    """Publish ``rate`` messages per second (with ``payload``, as :func:`burst`); collect
    publish-to-receive latencies."""
    tally.latencies.clear()
    count = int(rate * seconds)
    numbers = NUMBERS.take(count)
    before = server.cpu_seconds()
    began = time.monotonic()
    tally.stash = True
    gc.disable()  # a collection in this process would be counted as latency
    for i, n in enumerate(numbers):
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        await server.publish(f"{n} {time.monotonic()} steady{payload}")
    await asyncio.sleep(2)  # stragglers; whatever is still missing counts against reach
    used = server.cpu_seconds() - before
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


def prepare_clients(core: int) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Make this process the client side: on ``core``, with descriptors for every websocket
    (the hard limit; servers started afterwards inherit it), Django set up to publish.
    Returns uvloop's loop factory when installed: the clients must not be the bottleneck."""
    os.sched_setaffinity(0, {core})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def summary(
    name: str,
    clients: int,
    bursts: list[dict[str, float]],
    latency: dict[str, float],
    **extra: float,
) -> dict[str, float]:
    """One measurement's figures (medians of its bursts, its steady run, ``extra``), printed
    as a progress line."""
    result = {
        "us": statistics.median(b["us"] for b in bursts),
        "steady_us": latency["us"],
        "p50": latency["p50"],
        "p99": latency["p99"],
        **extra,
        "reach": min(latency["reach"], *(b["reach"] for b in bursts)),
    }
    print(f"  {name} {clients}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()),
          flush=True)  # fmt: skip
    return result


def medians(runs: dict, metrics: tuple[tuple[str, str, str], ...]) -> dict:
    """Per key of ``runs`` (a server or transport and N: its runs' figures), the median of
    each of ``metrics`` over the runs; for reach, the lowest."""
    return {
        key: {
            name: min(r[name] for r in results) if name == "reach" else
            statistics.median(r[name] for r in results)
            for name, _label, _format in metrics
        }
        for key, results in runs.items()
    }  # fmt: skip
