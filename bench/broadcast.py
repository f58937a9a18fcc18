"""Broadcast benchmark: ``runwebsocket`` against Django Channels, on this machine.

Not a test: it prints figures. The server under test runs pinned to core 0; this process
(clients and publisher) pins itself to core 1. Server CPU comes from ``schedstat``,
memory from ``/proc/<pid>/statm``. Run it through ``bench/run`` (it finds Redis and installs
Channels and uvicorn, which only the comparison needs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bench.harness import (
    CLIENT_CORE,
    Server,
    Tally,
    burst,
    channels_server,
    connect_clients,
    prepare_clients,
    rss_bytes,
    steady,
    stop_process,
    ws4redis_server,
)


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

    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
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
