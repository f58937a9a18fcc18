"""Restart benchmark: what a stopping ``runwebsocket`` sends to the server that stays.

Not a test: it prints figures. Two ``runwebsocket`` processes, A and B, run on the server
core and C clients on the client core connect to A. Then A gets SIGTERM and every client
A closes connects to B at once (as behind a load balancer, or with ``--workers``: the
clients of the stopping worker come back to the others; no backoff, the worst case). B's
handshakes are timestamped as they are answered, and binned in 100 ms steps:

- peak reconnections/s: the busiest bin (x10);
- median reconnections/s: the median bin from the first to the last reconnection;
- back after: median and p99 time from a client's close by A to its open at B (what a
  burst costs the clients: waiting in B's accept queue and handshakes);
- all back: the time from the SIGTERM until the last client is open at B.

For each drain window (``--windows``, A's ``--drain``; 0 is the behaviour before drains,
everything closed at once), medians of ``--runs`` runs, and the ratio of each window's peak
to window 0's. Run it through ``bench/run restarts``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable

from bench.harness import (
    CLIENT_CORE,
    LeanClient,
    Server,
    Tally,
    connect_clients,
    prepare_clients,
    stop_process,
    wait_for,
    ws4redis_server,
)

HOST = "127.0.0.1"
BIN = 0.1
"""Seconds per bin of reconnections."""


class Arrival(LeanClient):
    """A client that came back, to B: remembers when A had closed it and when B opened it."""

    def __init__(self, uri: str, tally: Tally, lost_at: float, back: list[tuple[float, float]]):
        super().__init__(uri, tally)
        self.lost_at = lost_at
        self.back = back

    def parse(self, now: float, data: bytes) -> None:
        opened = self.tally.opened
        super().parse(now, data)
        if self.tally.opened > opened:
            self.back.append((self.lost_at, now))


def reconnect_on_loss(tally: Tally, onward: Callable[[], None]) -> None:
    """Make every client of ``tally`` call ``onward`` once its connection is lost."""
    for client in tally.clients:
        lost = client.connection_lost

        def connection_lost(exc: Exception | None, lost: Callable = lost) -> None:
            lost(exc)
            onward()

        client.connection_lost = connection_lost  # type: ignore[method-assign]


def server_with_drain(window: float) -> Server:
    """``runwebsocket --drain window`` (the harness's server, its arguments from the
    environment, as for a manual run)."""
    extra = os.environ.get("WS4REDIS_BENCH_SERVER_ARGS", "")
    os.environ["WS4REDIS_BENCH_SERVER_ARGS"] = f"{extra} --drain {window:g}"
    try:
        return ws4redis_server()
    finally:
        os.environ["WS4REDIS_BENCH_SERVER_ARGS"] = extra


async def measure(window: float, clients: int) -> dict:
    """One run: A (draining over ``window``) and B started, the clients on A moved to B by
    A's SIGTERM. Both servers are stopped before it returns, also on error."""
    loop = asyncio.get_running_loop()
    a, b = server_with_drain(window), server_with_drain(0)
    on_a, on_b = Tally(), Tally()
    back: list[tuple[float, float]] = []
    reconnecting: set[asyncio.Task] = set()  # referenced until done, as asyncio asks
    try:
        await connect_clients(HOST, a.port, a.path, clients, on_a)
        uri = f"ws://{HOST}:{b.port}{b.path}"

        def onward() -> None:
            lost_at = time.monotonic()
            connecting = loop.create_connection(
                lambda: Arrival(uri, on_b, lost_at, back), HOST, b.port
            )
            task = loop.create_task(connecting)
            reconnecting.add(task)
            task.add_done_callback(reconnecting.discard)

        reconnect_on_loss(on_a, onward)
        await asyncio.sleep(1)  # let A settle after the handshakes
        stopped_at = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        if not await wait_for(lambda: len(back) >= clients, on_b, window + 120):
            raise SystemExit(f"only {len(back)} of {clients} clients came back to B")
    finally:
        for client in on_a.clients + on_b.clients:
            if client.transport is not None:
                client.transport.abort()
        stop_process(a.process)
        stop_process(b.process)
    if on_b.failed:
        raise SystemExit(f"{on_b.failed} reconnections to B were refused")
    opened = sorted(at for _, at in back)
    bins = Counter(int((at - opened[0]) / BIN) for at in opened)
    per_bin = [bins.get(i, 0) for i in range(max(bins) + 1)]
    waits = sorted(at - lost for lost, at in back)
    return {
        "peak": max(per_bin) / BIN,
        "median": statistics.median(per_bin) / BIN,
        "back_p50": waits[len(waits) // 2] * 1e3,
        "back_p99": waits[int(len(waits) * 0.99)] * 1e3,
        "all_back": opened[-1] - stopped_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--windows", type=float, nargs="+", default=[0, 5], help="A's --drain")
    parser.add_argument("--runs", type=int, default=3, help="runs per window")
    parser.add_argument("--client-core", type=int, default=CLIENT_CORE)
    args = parser.parse_args()

    results: dict[float, dict] = {}
    with asyncio.Runner(loop_factory=prepare_clients(args.client_core)) as runner:
        for window in args.windows:
            runs = []
            for _ in range(args.runs):
                runs.append(runner.run(measure(window, args.clients)))
                print(f"  --drain {window:g}: {runs[-1]}", flush=True)
            results[window] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    report(args, results)


def report(args: argparse.Namespace, results: dict[float, dict]) -> None:
    print()
    print(f"{args.clients} websockets on A move to B when A gets SIGTERM; both servers on the "
          f"server core, clients on core {args.client_core}; medians of {args.runs} runs; "
          f"rates from {BIN * 1e3:g} ms bins.")  # fmt: skip
    print()
    print("| A's drain window | peak reconnections/s at B | median reconnections/s | "
          "peak against window 0 | back after p50 ms | back after p99 ms | "
          "all back after s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    baseline = results.get(0.0)
    for window, r in results.items():
        ratio = f"{r['peak'] / baseline['peak']:.3f}" if baseline else "-"
        print(f"| {window:g} s | {r['peak']:,.0f} | {r['median']:,.0f} | {ratio} | "
              f"{r['back_p50']:.1f} | {r['back_p99']:.1f} | {r['all_back']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
