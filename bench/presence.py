"""Presence benchmark: what announcing joins costs while a crowd connects to ``runwebsocket``.

Not a test: it prints figures. ``runwebsocket`` (one process, pinned to core 0 as
``bench/broadcast.py`` starts it) runs with ``WS4REDIS_BENCH_PRESENCE`` set, so that
facility ``crowd`` has presence with ``"announce": True``, ``quiet`` presence without
announcing and ``plain`` none (``bench/settings.py``). N clients (``bench.harness``'s lean
clients, on core 1) connect with ``subscribe-broadcast&recover``: with ``recover`` they get
JSON messages, so the announcements are really fanned out to every one of them (plain
clients get none, see ``docs/reference.md#presence``). Cases:

- ``plain``: the N clients connect to ``plain`` (no presence);
- ``tracked``: to ``quiet``: presence kept in Redis, no announcements (what presence costs
  besides announcing: the enveloped facility, the worker's writes);
- ``presence``: to ``crowd``, announcing at most once per ``WS4REDIS_PRESENCE_INTERVAL``
  (1 s, the default), a crowd in one diff;
- ``per-join`` (only at ``--per-join-clients``, 1,000 by default): to ``crowd`` with
  ``WS4REDIS_PRESENCE_INTERVAL=0.001``, which announces (nearly) every join on its own, the
  old quadratic behaviour.

Per case: the time to connect all N (every handshake answered), the server's CPU seconds
during it (``schedstat``), and, once no frame has arrived for ``--quiet`` seconds,
how long the announcements took to stop arriving, the server's CPU until then and the
announcements each client received (median over clients; the slowest announcing is still
counted). Each case gets a freshly started server; within a round the cases alternate, their
order rotating from round to round, so a drift of the machine hits all alike. Run it
through ``bench/run presence``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass

from bench.harness import (
    CLIENT_CORE,
    LeanClient,
    Tally,
    connect_clients,
    medians,
    prepare_clients,
    stop_process,
    ws4redis_server,
)

QUERY = "?subscribe-broadcast&recover"
CASES = {  # case: (facility, WS4REDIS_PRESENCE_INTERVAL)
    "plain": ("plain", "1"),
    "tracked": ("quiet", "1"),
    "presence": ("crowd", "1"),
    "per-join": ("crowd", "0.001"),
}
ANNOUNCEMENT = b'{"channel":"presence",'  # ws4redis.core.presence.announcement_wire
METRICS = (  # key, column, format
    ("connect", "connect s", ".2f"),
    ("cpu", "server CPU s (connect)", ".2f"),
    ("settled", "last announcement s", ".2f"),
    ("cpu_settled", "server CPU s (to last)", ".2f"),
    ("announcements", "announcements/client (median)", ".0f"),
    ("most", "announcements/client (max)", ".0f"),
)


@dataclass
class Crowd(Tally):
    """A tally that also notes when the last frame of any kind arrived."""

    last_frame: float = 0.0


class CountingClient(LeanClient):
    """A lean client that counts the presence announcements it receives (messages of the
    benchmark's own format are never published here)."""

    def __init__(self, uri: str, tally: Crowd) -> None:
        super().__init__(uri, tally)
        self.announcements = 0

    def text(self, now: float, data: bytes) -> None:
        self.tally.last_frame = now  # type: ignore[attr-defined]
        if data.startswith(ANNOUNCEMENT):
            self.announcements += 1


async def open_counting(host: str, port: int, path: str, tally: Tally) -> asyncio.Transport:
    uri = f"ws://{host}:{port}{path}"
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(
        lambda: CountingClient(uri, tally),  # type: ignore[arg-type]
        host,
        port,
    )
    return transport  # type: ignore[return-value]


def forget_presence() -> None:
    """Remove what earlier servers left of ``crowd``'s presence in Redis."""
    from ws4redis.bus.pool import get_redis
    from ws4redis.core.names import presence_keys
    from ws4redis.settings import key_prefix

    get_redis().delete(*presence_keys(key_prefix(), "crowd"))


async def measure(case: str, clients: int, args: argparse.Namespace) -> dict[str, float]:
    """One run against a freshly started server: connect, wait for quiet, count, stop."""
    facility, interval = CASES[case]
    forget_presence()
    os.environ["WS4REDIS_BENCH_PRESENCE"] = interval
    server = ws4redis_server()
    tally = Crowd()
    transports: list = []
    try:
        await asyncio.sleep(1)  # the server's start-up is done
        cpu_before = server.cpu_seconds()
        began = time.monotonic()
        transports = await connect_clients(
            "127.0.0.1", server.port, f"/ws/{facility}{QUERY}", clients, tally, open_counting
        )
        connected = time.monotonic()
        cpu = server.cpu_seconds() - cpu_before
        limit = connected + args.limit
        while time.monotonic() < limit:
            if time.monotonic() - max(tally.last_frame, connected) >= args.quiet:
                break
            await asyncio.sleep(0.1)
        else:
            print(f"  {case} {clients}: frames still arriving after {args.limit:g} s")
        cpu_settled = server.cpu_seconds() - cpu_before
        counts = sorted(client.announcements for client in tally.clients)  # type: ignore[union-attr]
    finally:
        for transport in transports:
            transport.abort()
        stop_process(server.process)
    result = {
        "connect": connected - began,
        "cpu": cpu,
        "settled": max(tally.last_frame, connected) - began,
        "cpu_settled": cpu_settled,
        "announcements": statistics.median(counts),
        "most": counts[-1],
    }
    print(f"  {case} {clients}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()),
          flush=True)  # fmt: skip
    return result


def cases_for(clients: int, args: argparse.Namespace) -> list[str]:
    return [c for c in CASES if c != "per-join" or clients in args.per_join_clients]


def ratio(figures: dict, case: str, clients: int, name: str) -> float:
    return figures[case, clients][name] / figures["plain", clients][name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[10000, 1000])
    parser.add_argument(
        "--per-join-clients", type=int, nargs="*", default=[1000],
        help="crowd sizes that also run the per-join case (interval 0.001 s)",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=3, help="rounds (every case each)")
    parser.add_argument("--quiet", type=float, default=2.5, help="s without a frame: settled")
    parser.add_argument("--limit", type=float, default=300.0, help="s to wait for quiet at most")
    args = parser.parse_args()

    runs: dict[tuple[str, int], list[dict[str, float]]] = {
        (case, clients): [] for clients in args.clients for case in cases_for(clients, args)
    }
    with asyncio.Runner(loop_factory=prepare_clients(CLIENT_CORE)) as runner:
        for run in range(args.runs):
            print(f"round {run + 1} of {args.runs}:", flush=True)
            for clients in args.clients:
                order = cases_for(clients, args)
                order = order[run % len(order) :] + order[: run % len(order)]
                for case in order:
                    runs[case, clients].append(runner.run(measure(case, clients, args)))
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[tuple[str, int], list[dict[str, float]]]) -> None:
    figures = medians(runs, METRICS)
    print()
    print(f"runwebsocket, 1 process on core 0, clients on core 1, query {QUERY}; medians of "
          f"{args.runs} rounds; 'to last': until the last frame, {args.quiet:g} s of quiet "
          f"after it")  # fmt: skip
    print()
    print("| case | clients | " + " | ".join(label for _, label, _ in METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for clients in args.clients:
        for case in cases_for(clients, args):
            m = figures[case, clients]
            cells = [format(m[name], spec) for name, _, spec in METRICS]
            print(f"| {case} | {clients} | " + " | ".join(cells) + " |")
        plain = figures["plain", clients]
        for case in cases_for(clients, args)[1:]:
            m = figures[case, clients]
            ratios = [
                f"{m[name] / plain[name]:.2f}x" if plain[name] else "-"
                for name, _, _ in METRICS[:4]
            ]
            print(f"| **{case} / plain** | {clients} | " + " | ".join(ratios) + " | | |")
    print()
    for clients in args.clients:
        connect = ratio(figures, "presence", clients, "connect")
        cpu = ratio(figures, "presence", clients, "cpu")
        verdict = "met" if connect <= 1.5 else "NOT met"
        print(f"goal, connect with presence <= 1.5x without, {clients} clients: "
              f"{connect:.2f}x, {verdict} (server CPU {cpu:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
