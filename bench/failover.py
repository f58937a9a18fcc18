"""Failover benchmark: cluster masters killed under a publish loop, many times over.

Not a test: it prints figures. Each round starts a private 3-master, 3-replica Redis
Cluster (``ws4redis.testing.redis_cluster``) and ``runwebsocket`` on it, opens one
websocket on each of 12 facilities (their channels spread over every master), and
publishes on all 12 (stored, ``expire=60``: the store is what a failing cluster refuses)
every 20 ms from Django's ``RedisPublisher``, catching ``PublishError``. After a few
rounds the master of the first facility is SIGKILLed. Reported per failover and as
medians: the time from the replica's promotion (as ``CLUSTER SLOTS`` shows it) to the first
message delivered on that facility again, duplicates received (must be 0), publishes the
caller was told went out that never arrived (must be 0), and the publishes that raised.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any

from bench.harness import stop_process, ws4redis_server

FACILITIES = [f"failover-{n}" for n in range(12)]
PERIOD = 0.02
"""Seconds between two rounds of publishing."""


class Reader(threading.Thread):
    """One websocket: what it received, with the time it arrived (open once it is started)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.opened = threading.Event()
        self.received: list[tuple[float, str]] = []

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(self.url) as ws:
            self.opened.set()
            try:
                while (text := ws.recv()) != "--end--":
                    self.received.append((time.monotonic(), str(text)))
            except ConnectionClosed:
                pass


def one_failover() -> dict:
    """Start a cluster and ``runwebsocket`` on it, and fail one master over under the loop."""
    from django.test import override_settings

    from ws4redis.testing import redis_cluster

    with redis_cluster(masters=3, replicas=1) as cluster:
        os.environ["WS4REDIS_BENCH_CONNECTION"] = json.dumps(cluster.connection)
        server = ws4redis_server()  # bench.settings reads the connection from there
        try:
            with override_settings(WS4REDIS_CONNECTION=cluster.connection):
                return measure(cluster, server.port)
        finally:
            stop_process(server.process)


def measure(cluster: Any, port: int) -> dict:
    """The publish loop, the kill, and what each websocket received."""
    from ws4redis.core.names import channel_name
    from ws4redis.publisher import RedisPublisher
    from ws4redis.redis_store import PublishError
    from ws4redis.settings import key_prefix

    channels = {f: channel_name(key_prefix(), "broadcast", f) for f in FACILITIES}
    doomed = cluster.master_of(channels[FACILITIES[0]])
    readers = {f: Reader(f"ws://127.0.0.1:{port}/ws/{f}?subscribe-broadcast") for f in FACILITIES}
    for reader in readers.values():
        reader.start()
    for reader in readers.values():
        reader.opened.wait(30)
    went_out: dict[str, set[str]] = {f: set() for f in FACILITIES}
    raised = 0
    promoted_at = None
    killed_at = None
    for round_ in range(100_000):
        if round_ == 10:
            cluster.processes[doomed].kill()
            killed_at = time.monotonic()
        for facility in FACILITIES:
            text = f"{facility}:{round_}"
            try:
                receivers = RedisPublisher(facility=facility, broadcast=True).publish_message(
                    text, expire=60
                )
            except PublishError as exc:
                raised += 1
                receivers = exc.outcome.published
            if receivers.get(channels[facility]) == 1:
                went_out[facility].add(text)
        if (
            killed_at is not None
            and promoted_at is None
            and cluster.master_of(channels[FACILITIES[0]]) not in (None, doomed)
        ):
            promoted_at = time.monotonic()
        if promoted_at is not None and time.monotonic() > promoted_at + 2:
            break
        if killed_at is not None and time.monotonic() > killed_at + 60:
            raise SystemExit("no replica was promoted within 60 s")
        time.sleep(PERIOD)
    for facility in FACILITIES:
        publisher = RedisPublisher(facility=facility, broadcast=True)
        while publisher.publish_message("--end--", expire=0) != {channels[facility]: 1}:
            time.sleep(0.05)
    duplicates = missing = 0
    for facility, reader in readers.items():
        reader.join(30)
        texts = [text for _, text in reader.received]
        duplicates += len(texts) - len(set(texts))
        missing += len(went_out[facility] - set(texts))
    back = [t for t, _ in readers[FACILITIES[0]].received if t > promoted_at]  # type: ignore[operator]
    return {
        "kill_to_promotion": promoted_at - killed_at,  # type: ignore[operator]
        "promotion_to_delivery": (back[0] - promoted_at) if back else float("nan"),  # type: ignore[operator]
        "duplicates": duplicates,
        "missing": missing,
        "raised": raised,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--failovers", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    results = []
    for n in range(args.failovers):
        result = one_failover()
        results.append(result)
        print(
            f"failover {n + 1}: promoted {result['kill_to_promotion']:.2f} s after the kill, "
            f"delivering again {result['promotion_to_delivery']:.2f} s after the promotion; "
            f"duplicates {result['duplicates']}, missing {result['missing']}, "
            f"publishes that raised {result['raised']}",
            flush=True,
        )
    print(
        f"\n{len(results)} failovers: median promotion -> delivery "
        f"{statistics.median(r['promotion_to_delivery'] for r in results):.2f} s "
        f"(max {max(r['promotion_to_delivery'] for r in results):.2f} s); "
        f"duplicates {sum(r['duplicates'] for r in results)}, "
        f"missing {sum(r['missing'] for r in results)}"
    )


if __name__ == "__main__":
    main()
