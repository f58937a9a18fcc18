"""Cluster benchmark: ``runwebsocket`` on a Redis Cluster against one Redis, in one run.

Not a test: it prints figures. A private 3-master Redis Cluster is started from the server
binary (``ws4redis.testing.redis_cluster``) next to the standalone Redis that ``bench/run``
found. For each topology: ``runwebsocket`` pinned to core 0; C clients (core 1) spread over
F facilities, whose channels land on every master; each broadcast is published on all F
facilities, so every client gets each one once. Reported: bursts (deliveries/s and server
CPU per delivery), steady latency (p50/p99), and the CPU each Redis node spent on the
bursts (``INFO cpu``): with sharded pub/sub each master carries only its own channels,
where plain ``PUBLISH`` would copy every message to every node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from bench.harness import (
    CLIENT_CORE,
    Server,
    Tally,
    burst,
    connect_clients,
    prepare_clients,
    steady,
    stop_process,
    ws4redis_server,
)

HOST = "127.0.0.1"


def redis_cpu(connection: dict) -> float:
    """CPU seconds one Redis node has used so far."""
    import redis

    kwargs = {k: v for k, v in connection.items() if k != "cluster_nodes"}
    with redis.Redis(**kwargs) as node:
        cpu = node.info("cpu")
    return cpu["used_cpu_sys"] + cpu["used_cpu_user"]


def topology_server(connection: dict, facilities: list[str]) -> Server:
    """``runwebsocket`` on ``connection``, with a publish that broadcasts on every facility
    in one pipeline (``SPUBLISH`` on the cluster, one round trip per master), so that the
    publisher's round trips do not weigh on the latency of the last facilities. The
    pipeline is redis-py's, as a Django view's would be: its cluster pipeline costs more
    client CPU, which shows in the latency."""
    from ws4redis.bus.pool import is_cluster, make_client
    from ws4redis.core.names import channel_name
    from ws4redis.settings import key_prefix

    os.environ["WS4REDIS_BENCH_CONNECTION"] = json.dumps(connection)  # read by bench.settings
    server = ws4redis_server()
    client = make_client(connection)
    verb = "SPUBLISH" if is_cluster(client) else "PUBLISH"
    channels = [channel_name(key_prefix(), "broadcast", facility) for facility in facilities]

    def publish_all(text: str) -> None:
        with client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.execute_command(verb, channel, text)
            pipe.execute()

    async def publish(text: str) -> None:
        # In a thread: the clients on this loop keep reading while it waits for Redis.
        await asyncio.to_thread(publish_all, text)

    server.publish = publish
    return server


async def measure(name: str, connection: dict, nodes: list[dict], args) -> dict:
    facilities = [f"bench-{n}" for n in range(args.facilities)]
    server = topology_server(connection, facilities)
    tally = Tally()
    transports: list = []
    try:
        for n, facility in enumerate(facilities):
            count = args.clients // len(facilities) + (n < args.clients % len(facilities))
            path = f"/ws/{facility}?subscribe-broadcast"
            transports += await connect_clients(HOST, server.port, path, count, tally)
        await asyncio.sleep(1)
        bursts, node_cpu = [], [0.0] * len(nodes)
        for _ in range(args.runs):
            before = [redis_cpu(node) for node in nodes]
            began = time.monotonic()
            result = await burst(server, tally, args.clients, args.messages)
            result["per_s"] = args.clients * args.messages / (time.monotonic() - began)
            for i, node in enumerate(nodes):
                node_cpu[i] += redis_cpu(node) - before[i]
            bursts.append(result)
            print(f"  {name} burst: {result}", flush=True)
        steadies = []
        for _ in range(args.runs):
            steadies.append(await steady(server, tally, args.clients, args.rate, args.seconds))
            print(f"  {name} steady: {steadies[-1]}", flush=True)
    finally:
        for transport in transports:
            transport.abort()
        stop_process(server.process)
    deliveries = args.clients * args.messages * args.runs
    return {
        "reach": min(b["reach"] for b in bursts),
        "per_s": statistics.median(b["per_s"] for b in bursts),
        "us": statistics.median(b["us"] for b in bursts),
        "p50": statistics.median(s["p50"] for s in steadies),
        "p99": statistics.median(s["p99"] for s in steadies),
        "steady_reach": min(s["reach"] for s in steadies),
        "node_us": [cpu * 1e6 / deliveries for cpu in node_cpu],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--facilities", type=int, default=30, help="channels, over all shards")
    parser.add_argument("--messages", type=int, default=20, help="broadcasts per burst")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4.0, help="broadcasts/s (steady)")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady run length")
    args = parser.parse_args()

    loop_factory = prepare_clients(CLIENT_CORE)
    from ws4redis.testing import redis_cluster

    standalone = {"host": os.environ.get("REDIS_HOST", HOST)}
    standalone["port"] = int(os.environ.get("REDIS_PORT", "6379"))
    results = {}
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        print("one Redis:", flush=True)
        results["one Redis"] = runner.run(measure("one", standalone, [standalone], args))
        with redis_cluster(masters=3, replicas=0) as cluster:
            nodes = [{"host": HOST, "port": port} for port in cluster.masters]
            print(f"Redis Cluster, 3 masters {cluster.masters}:", flush=True)
            results["cluster"] = runner.run(measure("cluster", cluster.connection, nodes, args))
    report(args, results)


def report(args: argparse.Namespace, results: dict) -> None:
    print()
    print(f"{args.clients} clients on {args.facilities} facilities, server on core 0; bursts "
          f"of {args.messages} broadcasts, steady {args.rate:g}/s for {args.seconds:g} s; "
          f"medians of {args.runs} runs")  # fmt: skip
    print()
    print("| Redis | reach | deliveries/s | server CPU µs/delivery | steady p50 ms | "
          "steady p99 ms | Redis CPU µs/delivery, per node |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        nodes = " / ".join(f"{us:.2f}" for us in r["node_us"])
        print(f"| {name} | {r['reach']:.3f} | {r['per_s']:,.0f} | {r['us']:.2f} | "
              f"{r['p50']:.1f} | {r['p99']:.1f} | {nodes} |")  # fmt: skip


if __name__ == "__main__":
    main()
