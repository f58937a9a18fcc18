"""Peer benchmark: ``runwebsocket`` against nginx's nchan module, on this machine.

Not a test: it prints figures. In one run, four servers (and a floor, below), each
pinned to core 0 as ``bench/broadcast.py`` starts ``runwebsocket``: ws4redis
(``runwebsocket``, one process; "ws4redis-session" is the same server whose clients all
send the session cookie of a logged-in user, so that every opening looks up the session
and the user in the database, SQLite, as a page's websocket does),
nchan with its memory store and nchan with Redis (``nchan_redis_storage_mode nostore`` with
``nchan_redis_nostore_fastpublish on``: each publish is one Redis ``PUBLISH``, nothing
stored), both nginx with ``worker_processes 1``. nchan keeps no messages either
(``nchan_message_buffer_length 0``): like ws4redis without history, a broadcast goes to
whoever is connected. The same lean websocket clients (``bench.harness``) on core 1
subscribe: to ``/ws/bench?subscribe-broadcast``, or to an ``nchan_subscriber websocket``
location. ws4redis is published to through Redis (``RedisPublisher``), nchan through its
``nchan_publisher`` location: ``POST``s pipelined on one keep-alive connection, answers read
as they come, so that publishing never waits for the server. A burst reaches both at once:
nchan's ``POST``s in one stream, ws4redis's (and the floor's) ``PUBLISH``es in one Redis
pipeline (``bench.harness.bench_publishing``: what ``publish_message`` sends under the
bench's settings, without a round trip each).

Per server and N: the time to connect N clients and the server's CPU per opening meanwhile;
the server's RSS growth per connection
((RSS after - RSS before) / N, idle; for nginx its worker's, shared memory it touched
included); server CPU per delivery (``schedstat``: ``runwebsocket``'s process,
nginx's worker) over bursts of broadcasts (from the first publish until every client has
every message) and over a steady rate of them; publish-to-receive p50 and p99 at that rate.
Redis's own CPU counts for nobody: it relays one ``PUBLISH`` to one subscriber in both
Redis cases. Each measurement gets a freshly started server; within a round the servers
take turns, their order rotating from round to round, so a drift of the machine hits all
alike. A fifth, "python-floor" (``bench/anchors/transport_floor.py``), is not a server but
the least Python on uvloop can do: the ``websockets`` library's parse and accept per
opening, one ``write()`` per connection per message, nothing else; its ratios say how much
of a gap to nchan is Python's own and how much is ws4redis's work. Needs nginx and its nchan
module (Debian: ``apt-get install nginx libnginx-mod-nchan``). Run it through
``bench/run peers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.handshakes import logged_in
from bench.harness import (
    CLIENT_CORE,
    Server,
    Tally,
    anchor_server,
    burst,
    child_pids,
    connect_clients,
    free_port,
    medians,
    open_websocket,
    prepare_clients,
    start_process,
    steady,
    summary,
    ws4redis_server,
)

NGINX = os.environ.get("WS4REDIS_BENCH_NGINX", "nginx")
NCHAN_MODULES = [
    Path(path)
    for path in (
        os.environ.get("WS4REDIS_BENCH_NCHAN_MODULE"),  # where another build put it
        "/usr/lib/nginx/modules/ngx_nchan_module.so",  # Debian's libnginx-mod-nchan
        "/usr/lib64/nginx/modules/ngx_nchan_module.so",
        "/usr/local/nginx/modules/ngx_nchan_module.so",
    )
    if path
]
SERVERS = ("ws4redis", "ws4redis-session", "nchan-memory", "nchan-redis", "python-floor")
FLOORS = ("python-floor",)
"""Yardsticks, not peers: what Python itself costs (``bench/anchors/transport_floor.py``)."""
STEADY_RATES = {1000: 20.0, 10000: 5.0}  # broadcasts/s; otherwise 20,000 deliveries/s
METRICS = (  # key, label, format
    ("us", "CPU µs/delivery, bursts", ".2f"),
    ("steady_us", "CPU µs/delivery, steady", ".2f"),
    ("p50", "p50 ms, steady", ".2f"),
    ("p99", "p99 ms, steady", ".2f"),
    ("connect", "connect N clients, s", ".2f"),
    ("open_us", "server CPU µs/opening", ".0f"),
    ("kib", "RSS KiB/connection", ".1f"),
    ("reach", "reach (lowest)", ".3f"),
)

NGINX_CONF = """\
load_module {module};
worker_processes 1;
daemon off;
master_process on;
{user}
pid {prefix}/nginx.pid;
error_log stderr notice;
worker_rlimit_nofile {nofile};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # the publisher's one connection carries every POST of the run
    keepalive_requests 100000000;
    keepalive_timeout 1h;
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        location = /sub {{
            nchan_subscriber websocket;
            nchan_channel_id bench;
            nchan_message_buffer_length 0;
            {redis}
        }}
        location = /pub {{
            nchan_publisher;
            nchan_channel_id bench;
            nchan_message_buffer_length 0;
            {redis}
        }}
    }}
}}
"""
REDIS_UPSTREAM = """upstream bench_redis {{
        nchan_redis_server redis://{host}:{port};
        nchan_redis_storage_mode nostore;
        nchan_redis_nostore_fastpublish on;
        nchan_redis_namespace {namespace};
    }}"""


def nchan_module() -> Path:
    """The nchan module's file, or exit saying what to install."""
    if shutil.which(NGINX) is None:
        raise SystemExit(
            f"bench/peers.py needs nginx ({NGINX!r} is not on the PATH) and its nchan module: "
            "apt-get install nginx libnginx-mod-nchan (or WS4REDIS_BENCH_NGINX=/path/to/nginx)"
        )
    for module in NCHAN_MODULES:
        if module.is_file():
            return module
    raise SystemExit(
        "bench/peers.py needs nginx's nchan module, found at none of "
        + ", ".join(map(str, NCHAN_MODULES))
        + ": apt-get install libnginx-mod-nchan (or WS4REDIS_BENCH_NCHAN_MODULE=/path/to/"
        "ngx_nchan_module.so)"
    )


class PipelinedPublisher:
    """``POST``s to nchan's publisher location over one keep-alive connection, each written
    at once, not waiting for the answer to the one before; a task reads the answers and
    counts those that are not 2xx (an answer nchan gives to a publish that failed)."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task | None = None
        self.sent = self.answered = self.refused = 0

    async def publish(self, text: str) -> None:
        if self.writer is None:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.reader_task = asyncio.ensure_future(self.read_answers(reader))
        body = text.encode()
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.path.encode(), len(body), body)
        )
        self.sent += 1

    async def read_answers(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while status := await reader.readline():
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.answered += 1
                if not status.split()[1].startswith(b"2"):
                    self.refused += 1

    def close(self) -> None:
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            self.writer.close()


def nchan_server(store: str, module: Path, clients: int) -> Server:
    """nginx with nchan, one worker, on core 0: ``/sub`` a websocket subscriber location,
    ``/pub`` the publisher's; ``store`` "memory" or "redis" (the benchmark's Redis)."""
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="ws4redis-bench-nchan-"))
    redis = store == "redis"
    upstream = REDIS_UPSTREAM.format(
        host=os.environ.get("REDIS_HOST", "localhost"),
        port=os.environ.get("REDIS_PORT", "6379"),
        namespace=f"ws4redis-bench-{os.getpid()}",  # never the keys of another nchan
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            module=module,
            # as root, nginx's worker would become "nobody", who may not read the prefix
            user="user root;" if os.geteuid() == 0 else "",
            prefix=prefix,
            nofile=clients + 1000,
            # nchan takes connection slots beyond one per websocket: with N + 500, 10,000
            # websockets got "worker_connections are not enough" and 160 handshakes went
            # unanswered; twice N leaves room to spare
            connections=2 * clients + 1000,
            upstream=upstream if redis else "",
            port=port,
            redis="nchan_redis_pass bench_redis;" if redis else "",
        )
    )
    command = [NGINX, "-p", str(prefix), "-c", str(conf)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    if check.returncode:
        raise SystemExit(f"nginx refused {conf}:\n{check.stderr}")
    # With Redis, nchan is ready once its worker has connected to it.
    ready = "Redis upstream bench_redis: ready" if redis else "start worker process"
    process = start_process(command, ready)
    publisher = PipelinedPublisher(port, "/pub")
    workers = child_pids(process.pid)
    while not workers:  # the master logs the worker's start before its fork returns
        time.sleep(0.01)
        workers = child_pids(process.pid)

    def cleanup() -> None:
        publisher.close()
        if publisher.refused:
            print(f"  nchan refused {publisher.refused} of {publisher.sent} publishes")
        shutil.rmtree(prefix, ignore_errors=True)

    return Server(
        f"nchan-{store}", process, port, "/sub", publisher.publish, pids=workers,
        cleanups=[cleanup],
    )  # fmt: skip


async def measure(name: str, clients: int, rate: float, args: argparse.Namespace) -> dict:
    """One run against a freshly started server: connect, settle, measure, stop."""
    opener = open_websocket
    if name.startswith("ws4redis"):
        server = ws4redis_server(pipelined_bursts=True)
        if name == "ws4redis-session":  # each opening looks up the session, then the user
            opener = functools.partial(open_websocket, headers={"Cookie": args.cookie})
    elif name == "python-floor":
        server = anchor_server(
            "bench.anchors.transport_floor", name, "/ws/bench", pipelined_bursts=True
        )
    else:
        server = nchan_server(name.removeprefix("nchan-"), args.module, clients)
    tally = Tally()
    transports: list = []
    try:
        await asyncio.sleep(1)  # the server's start-up is done and its memory settled
        rss_before, cpu_before = server.rss_bytes(), server.cpu_seconds()
        began = time.monotonic()
        transports = await connect_clients(
            "127.0.0.1", server.port, server.path, clients, tally, opener
        )
        connect = time.monotonic() - began
        open_us = (server.cpu_seconds() - cpu_before) / clients * 1e6
        await asyncio.sleep(2)  # idle: whatever the handshakes left behind is freed
        kib = (server.rss_bytes() - rss_before) / clients / 1024
        bursts = [
            await burst(server, tally, clients, args.messages, limit=60) for _ in range(args.bursts)
        ]
        latency = await steady(server, tally, clients, rate, args.seconds)
    finally:
        for transport in transports:
            transport.abort()
        server.stop()
    return summary(name, clients, bursts, latency, connect=connect, open_us=open_us, kib=kib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=3, help="rounds (every server each)")
    parser.add_argument("--messages", type=int, default=50, help="broadcasts per burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per run (median)")
    parser.add_argument(
        "--rates", type=float, nargs="+",
        help="steady broadcasts/s, one per --clients (default 20/s at 1,000, 5/s at 10,000, "
        "else 20,000 deliveries/s)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="steady run length")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    args = parser.parse_args()
    args.module = nchan_module()
    if args.rates and len(args.rates) != len(args.clients):
        parser.error("--rates needs one rate per --clients")
    args.rates = dict(
        zip(args.clients, args.rates or [STEADY_RATES.get(n, 20000 / n) for n in args.clients],
            strict=True)
    )  # fmt: skip

    runs: dict[tuple[str, int], list[dict]] = {
        (name, clients): [] for clients in args.clients for name in args.servers
    }
    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
        if "ws4redis-session" in args.servers:  # Django is set up now
            args.cookie = f"sessionid={logged_in()[1]}"
        for run in range(args.runs):
            print(f"round {run + 1} of {args.runs}:", flush=True)
            turn = run % len(args.servers)
            order = args.servers[turn:] + args.servers[:turn]
            for clients in args.clients:
                for name in order:
                    result = runner.run(measure(name, clients, args.rates[clients], args))
                    runs[name, clients].append(result)
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[tuple[str, int], list[dict]]) -> None:
    figures = medians(runs, METRICS)
    ours = [name for name in args.servers if name.startswith("ws4redis")]
    floors = [name for name in args.servers if name in FLOORS]
    peers = [name for name in args.servers if name not in ours and name not in floors]
    # ws4redis against nchan and against the floor; the floor against nchan
    pairs = [(a, b) for a in ours for b in peers + floors] + [(a, b) for a in floors for b in peers]
    print()
    print(f"each server on core 0 (runwebsocket: 1 process; nginx: 1 worker), clients on "
          f"core 1; medians of {args.runs} rounds; bursts: median of {args.bursts} bursts of "
          f"{args.messages} broadcasts; steady: {args.seconds:g} s at the rate shown")  # fmt: skip
    for clients in args.clients:
        print()
        header = [*args.servers, *(f"{mine} / {peer}" for mine, peer in pairs)]
        print(f"| {clients} clients, steady {args.rates[clients]:g}/s | " + " | ".join(header)
              + " |")  # fmt: skip
        print("|---|" + "---|" * len(header))
        for key, label, spec in METRICS:
            cells = [format(figures[name, clients][key], spec) for name in args.servers]
            for mine, peer in pairs:
                theirs = figures[peer, clients][key]
                cells.append(f"{figures[mine, clients][key] / theirs:.2f}x" if theirs else "-")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
