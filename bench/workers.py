"""Multi-worker benchmark: ``runwebsocket --workers N`` for each N, on this machine.

Not a test: it prints figures. For each worker count the server's processes run on the
``--server-cores`` and this process (clients and publisher) on one core; C websockets connect
and SO_REUSEPORT spreads them over the workers (how many each got is counted from the
workers' socket descriptors). Then

(a) bursts: M broadcasts published at once. Deliveries/s = C x M / the time from the first
    publish until every client has every message; server CPU per delivery is summed over the
    worker processes (the children of the supervisor), from ``schedstat``.
(b) steady: R broadcasts/s for S seconds; p50/p99 publish-to-receive latency.

Medians of ``--runs`` runs. The workloads are bench/broadcast.py's, so the figures compare
with its single-process ones. Run it through ``bench/run workers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import statistics
import time
from pathlib import Path

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
TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp


def worker_pids(server: Server, workers: int) -> list[int]:
    """The processes that serve: the supervisor's children, or the process itself when
    ``--workers 1`` runs the server in the process that was started (no supervisor)."""
    if workers == 1:
        return [server.process.pid]
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(child) for child in children)


def established_inodes(port: int) -> set[int]:
    """Socket inodes of the established TCP connections whose local port is ``port``: the
    server's ends of the websockets (its Redis connections and listening socket are not)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == TCP_ESTABLISHED:
                inodes.add(int(fields[9]))
    return inodes


def connections_per_worker(server: Server) -> list[int]:
    """How many websockets each worker holds: its descriptors that are such sockets."""
    inodes = established_inodes(server.port)
    counts = []
    for pid in server.pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed since it was listed
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                count += 1
        counts.append(count)
    return counts


def kill_leftovers(handles: dict[int, int]) -> None:
    """SIGKILL any worker still running after its supervisor stopped (it forwards SIGTERM
    and waits for them, so only if it had to be killed itself). Pidfds, opened while the
    workers ran, make sure that no other process that got a reused pid is hit."""
    for pid, handle in handles.items():
        exited = select.select([handle], [], [], 0)[0]
        if not exited:
            print(f"  worker {pid} outlived its supervisor; killing it", flush=True)
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                signal.pidfd_send_signal(handle, signal.SIGKILL)
        os.close(handle)


async def measure(workers: int, cores: str, args: argparse.Namespace) -> dict:
    """One server with ``workers`` processes: connect the clients, then bursts and steady
    runs. Everything started here is stopped before it returns, also on error."""
    server = ws4redis_server(workers, cores)
    tally = Tally()
    handles: dict[int, int] = {}
    try:
        server.pids = worker_pids(server, workers)
        handles = {pid: os.pidfd_open(pid) for pid in server.pids}
        await connect_clients(HOST, server.port, server.path, args.clients, tally)
        await asyncio.sleep(1)  # let the server settle after the handshakes
        spread = connections_per_worker(server)
        print(f"  {workers} worker(s), pids {server.pids}: websockets per worker {spread}",
              flush=True)  # fmt: skip
        bursts = []
        for _ in range(args.runs):
            # Timed around burst(): besides the publishing it only reads /proc twice.
            began, client_cpu = time.monotonic(), time.process_time()
            result = await burst(server, tally, args.clients, args.messages)
            took = time.monotonic() - began
            delivered = result["reach"] * args.clients * args.messages
            result["per_s"] = delivered / took
            result["client_busy"] = (time.process_time() - client_cpu) / took
            result["server_busy"] = result["us"] * result["per_s"] / 1e6
            bursts.append(result)
            print(f"    burst: {result}", flush=True)
        steadies = []
        for _ in range(args.runs):
            steadies.append(await steady(server, tally, args.clients, args.rate, args.seconds))
            print(f"    steady: {steadies[-1]}", flush=True)
        if worker_pids(server, workers) != server.pids:
            print("  WARNING: a worker was restarted during the run", flush=True)
    finally:
        for client in tally.clients:
            if client.transport is not None:
                client.transport.abort()
        stop_process(server.process)
        kill_leftovers(handles)
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    return {
        "spread": spread,
        "per_s": median(bursts, "per_s"),
        "us": median(bursts, "us"),
        "server_busy": median(bursts, "server_busy"),
        "client_busy": median(bursts, "client_busy"),
        "burst_reach": min(run["reach"] for run in bursts),
        "p50": median(steadies, "p50"),
        "p99": median(steadies, "p99"),
        "steady_reach": min(run["reach"] for run in steadies),
        "steady_us": median(steadies, "us"),
    }


def choose_server_cores(requested: list[int] | None, client_core: int) -> tuple[list[int], str]:
    """The server's cores and a sentence saying where everything runs. By default all cores
    but the client's; on a machine where that leaves one core the workers get all of them
    and share the client's (else a second worker would only ever share the first's)."""
    available = sorted(os.sched_getaffinity(0))
    if requested:
        cores = sorted(requested)
    else:
        others = [core for core in available if core != client_core]
        cores = others if len(others) >= 2 else available
    where = f"clients on core {client_core}, server workers on cores {cores}"
    if client_core in cores:
        where += (f" (shared: the clients' core is one of them, as this machine has only "
                  f"{len(available)} cores for both)")  # fmt: skip
    return cores, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--server-cores", type=int, nargs="+", help="default: all but the client's")
    parser.add_argument("--client-core", type=int, default=CLIENT_CORE)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=50, help="broadcasts per burst")
    parser.add_argument("--runs", type=int, default=3, help="bursts and steady runs per count")
    # 4/s to 5,000 clients is 20,000 deliveries/s, as broadcast.py's 20/s to 1,000: below
    # what two cores shared by server and clients sustain, so that p99 is the time to fan one
    # message out, not a queue that grows for as long as the run lasts (20/s here does that).
    parser.add_argument("--rate", type=float, default=4.0, help="broadcasts/s (steady)")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady run length")
    args = parser.parse_args()

    cores, where = choose_server_cores(args.server_cores, args.client_core)
    print(f"This machine has {len(os.sched_getaffinity(0))} cores (nproc): more workers than "
          "server cores only shows overhead.", flush=True)  # fmt: skip
    print(f"{args.clients} clients; {where}.", flush=True)
    results = {}
    with asyncio.Runner(loop_factory=prepare_clients(args.client_core)) as runner:
        for workers in args.workers:
            print(f"runwebsocket --workers {workers}:", flush=True)
            results[workers] = runner.run(measure(workers, ",".join(map(str, cores)), args))
    report(args, cores, results)


def report(args: argparse.Namespace, cores: list[int], results: dict[int, dict]) -> None:
    print()
    print(f"{args.clients} clients on core {args.client_core}, server on cores {cores}; "
          f"bursts of {args.messages} broadcasts, steady {args.rate:g}/s for {args.seconds:g} s; "
          f"medians of {args.runs} runs each.")  # fmt: skip
    print()
    print("| workers | websockets per worker | deliveries/s | server CPU µs/delivery "
          "(all workers) | server cores busy | client core busy | reach (lowest) | "
          "steady p50 ms | steady p99 ms | steady reach (lowest) | steady server CPU "
          "µs/delivery |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for workers, r in results.items():
        spread = " / ".join(str(count) for count in r["spread"])
        print(f"| {workers} | {spread} | {r['per_s']:,.0f} | {r['us']:.2f} | "
              f"{r['server_busy']:.2f} | {r['client_busy']:.2f} | {r['burst_reach']:.3f} | "
              f"{r['p50']:.2f} | {r['p99']:.2f} | {r['steady_reach']:.3f} | "
              f"{r['steady_us']:.2f} |")  # fmt: skip
    busiest = max(results.values(), key=lambda r: r["client_busy"])
    if busiest["client_busy"] > 2 * busiest["server_busy"] / len(cores):
        # One client core parses every frame, at a few times the server's cost per delivery.
        print(f"\nIn the bursts the clients' core was up to {busiest['client_busy']:.0%} busy "
              f"while the server used {busiest['server_busy']:.2f} of its {len(cores)} core(s): "
              "deliveries/s is what one client core takes in, not what the server can send; "
              "the server's figure is its CPU per delivery.")  # fmt: skip


if __name__ == "__main__":
    main()
