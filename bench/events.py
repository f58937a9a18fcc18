"""Transport benchmark: Server-Sent Events and compressed websockets beside plain ones, on
``runwebsocket``.

Not a test: it prints figures. The same server (``runwebsocket``, one process, pinned to
core 0 as ``bench/broadcast.py`` starts it, ``WS4REDIS_COMPRESSION`` on) gets N websockets
(``bench.harness``'s lean clients, offering nothing: plain frames), N websockets that offer
``permessage-deflate`` as browsers do ("deflate") or N event streams (a ``GET`` of the same
URL with ``Accept: text/event-stream``, read by raw asyncio streams), from this process on
core 1. Per transport and N: server CPU per delivery (``schedstat``) over bursts of
broadcasts (from the first publish until every client has every message) and over a
steady rate of them, the bytes a client reads per delivery in the bursts, publish-to-receive
p50 and p99 at that steady rate, and the server's RSS growth per connection ((RSS after -
RSS before) / N, idle). ``--payload`` makes each message that many bytes of chat-like JSON
longer (compression needs something to compress). Each measurement gets a freshly started
server; within a round the transports take turns, their order rotating from round to
round, so a drift of the machine hits all alike. Ratios are to plain websockets. Run it
through ``bench/run events``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from bench.harness import (
    CLIENT_CORE,
    Tally,
    burst,
    connect_clients,
    connect_event_streams,
    medians,
    open_websocket,
    prepare_clients,
    rss_bytes,
    steady,
    stop_process,
    summary,
    ws4redis_server,
)

DEFLATING = functools.partial(open_websocket, extensions=[ClientPerMessageDeflateFactory()])
CONNECT = {
    "websocket": connect_clients,
    "deflate": functools.partial(connect_clients, opener=DEFLATING),
    "sse": connect_event_streams,
}
METRICS = (  # key, column, format
    ("us", "µs/delivery, bursts", ".2f"),
    ("steady_us", "µs/delivery, steady", ".1f"),
    ("bytes", "bytes/delivery", ".0f"),
    ("p50", "p50 ms", ".2f"),
    ("p99", "p99 ms", ".2f"),
    ("kib", "KiB/connection", ".1f"),
    ("reach", "reach (lowest)", ".3f"),
)


async def measure(transport: str, clients: int, args: argparse.Namespace) -> dict[str, float]:
    """One run against a freshly started server: connect, settle, measure, stop."""
    os.environ["WS4REDIS_BENCH_COMPRESSION"] = "1"  # bench/settings.py, for the server
    server = ws4redis_server()
    tally = Tally()
    transports: list = []
    try:
        await asyncio.sleep(1)  # the server's start-up is done and its memory settled
        rss_before = rss_bytes(server.process.pid)
        transports = await CONNECT[transport]("127.0.0.1", server.port, server.path, clients, tally)
        await asyncio.sleep(2)  # idle: whatever the handshakes left behind is freed
        kib = (rss_bytes(server.process.pid) - rss_before) / clients / 1024
        payload = " " + chat_json(args.payload) if args.payload else ""
        bursts = [
            await burst(server, tally, clients, args.messages, payload=payload)
            for _ in range(args.bursts)
        ]
        # The same load of deliveries per second whatever N: the server stays well short of
        # its core's limit, so the latency is the transport's, not a queue's.
        rate = args.deliveries / clients
        latency = await steady(server, tally, clients, rate, args.seconds, payload=payload)
    finally:
        for each in transports:
            each.abort()
        stop_process(server.process)
    read = statistics.median(b["bytes"] for b in bursts)
    return summary(transport, clients, bursts, latency, kib=kib, bytes=read)


def chat_json(size: int) -> str:
    """About ``size`` bytes of JSON as a chat sends it: records of a few users' lines."""
    lines: list[dict] = []
    while len(text := json.dumps(lines, separators=(",", ":"))) < size:
        n = len(lines)
        lines.append({"id": n, "user": f"user{n % 7}", "text": f"line {n} of the chat"})
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=3, help="rounds (every transport each)")
    parser.add_argument(
        "--transports", nargs="+", choices=list(CONNECT), default=["websocket", "sse"],
        help="what to compare; the first is the baseline of the ratios",
    )  # fmt: skip
    parser.add_argument("--payload", type=int, default=0, help="bytes of JSON per message")
    parser.add_argument("--messages", type=int, default=200, help="broadcasts per burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts per run (median)")
    parser.add_argument(
        "--deliveries", type=float, default=20000.0,
        help="deliveries/s of the latency run: broadcasts/s = this / clients",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    args = parser.parse_args()

    runs: dict[tuple[str, int], list[dict[str, float]]] = {
        (transport, clients): [] for clients in args.clients for transport in args.transports
    }
    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
        for run in range(args.runs):
            print(f"round {run + 1} of {args.runs}:", flush=True)
            turn = run % len(args.transports)
            order = args.transports[turn:] + args.transports[:turn]
            for clients in args.clients:
                for transport in order:
                    runs[transport, clients].append(runner.run(measure(transport, clients, args)))
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[tuple[str, int], list[dict[str, float]]]) -> None:
    figures = medians(runs, METRICS)
    print()
    print(f"runwebsocket, 1 process on core 0, clients on core 1; medians of {args.runs} "
          f"rounds; bursts: median of {args.bursts} bursts of {args.messages} broadcasts; "
          f"steady and latency: {args.deliveries:g} deliveries/s, {args.seconds:g} s; "
          f"messages of {args.payload} bytes more")  # fmt: skip
    print()
    print("| transport | clients | " + " | ".join(label for _, label, _ in METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    baseline, *others = args.transports
    for clients in args.clients:
        for transport in args.transports:
            m = figures[transport, clients]
            cells = [format(m[name], spec) for name, _, spec in METRICS]
            print(f"| {transport} | {clients} | " + " | ".join(cells) + " |")
        base = figures[baseline, clients]
        for transport in others:
            m = figures[transport, clients]
            ratios = [f"{m[k] / base[k]:.2f}x" if base[k] else "-" for k, _, _ in METRICS]
            print(f"| **{transport} / {baseline}** | {clients} | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
