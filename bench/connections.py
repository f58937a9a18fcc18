"""Connection benchmark: what a websocket costs ``runwebsocket`` against a raw asyncio floor.

Not a test: it prints figures. In one run, for ``runwebsocket`` (one process) and for the
yardstick of ``bench/anchors/websockets_floor.py`` (the ``websockets`` library's own server
with one Redis subscription, no Django), both pinned to core 0 as ``bench/broadcast.py``
starts them, with the clients on core 1: the time to connect N clients, the server's RSS
per idle connection ((RSS after - RSS before) / N) and the publish-to-receive latency of
broadcasts at a low rate with all N connected. Each server is started afresh for each
run; runs alternate between the two, so a drift of the machine hits both alike. Run it
through ``bench/run connections``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.harness import (
    CLIENT_CORE,
    Server,
    Tally,
    anchor_server,
    connect_clients,
    prepare_clients,
    rss_bytes,
    steady,
    stop_process,
    ws4redis_server,
)

METRICS = (
    ("connect", "connect N clients, s"),
    ("rss", "RSS per idle connection, KiB"),
    ("p50", "publish→receive p50, ms"),
    ("p99", "publish→receive p99, ms"),
    ("reach", "reach (lowest)"),
)


def yardstick_server() -> Server:
    return anchor_server("bench.anchors.websockets_floor", "yardstick", "/")


async def measure(server: Server, args: argparse.Namespace) -> dict[str, float]:
    """One run against a freshly started server: connect, settle, measure, stop."""
    tally = Tally()
    transports: list = []
    try:
        await asyncio.sleep(1)  # the server's start-up is done and its memory settled
        rss_before = rss_bytes(server.process.pid)
        began = time.monotonic()
        transports = await connect_clients(
            "127.0.0.1", server.port, server.path, args.clients, tally
        )
        connect = time.monotonic() - began
        await asyncio.sleep(2)  # idle: whatever the handshakes left behind is freed
        rss = (rss_bytes(server.process.pid) - rss_before) / args.clients
        latency = await steady(server, tally, args.clients, args.rate, args.seconds)
    finally:
        for transport in transports:
            transport.abort()
        stop_process(server.process)
    result = {"connect": connect, "rss": rss / 1024, **latency}
    print(f"  {server.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3, help="runs per server")
    parser.add_argument("--rate", type=float, default=5.0, help="broadcasts/s (latency)")
    parser.add_argument("--seconds", type=float, default=6.0, help="latency run length")
    args = parser.parse_args()

    starters = {"ws4redis": ws4redis_server, "yardstick": yardstick_server}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in starters}
    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}:", flush=True)
            for name, start in starters.items():
                runs[name].append(runner.run(measure(start(), args)))
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    medians = {
        name: {
            key: min(r[key] for r in results) if key == "reach" else
            statistics.median(r[key] for r in results)
            for key, _label in METRICS
        }
        for name, results in runs.items()
    }  # fmt: skip
    ours, floor = medians["ws4redis"], medians["yardstick"]
    print()
    print(f"{args.clients} clients, server pinned to one core; latency at {args.rate:g} "
          f"broadcasts/s for {args.seconds:g} s; medians of {args.runs} runs")  # fmt: skip
    print()
    print("| figure | runwebsocket | yardstick | ours / yardstick |")
    print("|---|---|---|---|")
    for key, label in METRICS:
        ratio = ours[key] / floor[key] if floor[key] else float("nan")
        print(f"| {label} | {ours[key]:.3f} | {floor[key]:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
