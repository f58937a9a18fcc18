"""How many websockets each facility has open, over every websocket process.

Each process counts its open websockets per facility (:meth:`~ws4redis.core.stats.Stats.change`)
and a thread of its own writes the counts to Redis when they change (at most once a
second) and every ``REPORT_EVERY`` seconds: the hash ``P:live:process:<name>`` (expiring
when the process stops writing) and its name in the sorted set ``P:live:processes``, scored
by that expiry. :func:`facilities` adds up the processes still alive; the admin's live page
(:mod:`ws4redis.admin`) shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any, cast

import redis

from ws4redis.bus.pool import REDIS_FAILED, get_redis
from ws4redis.bus.process import per_process, process_name
from ws4redis.core.names import live_registry, live_report
from ws4redis.core.stats import STATS, Stats
from ws4redis.settings import key_prefix

logger = logging.getLogger("ws4redis.live")

REPORT_EVERY = 10.0
"""Seconds between two reports of an unchanged process."""
EXPIRES = 3 * REPORT_EVERY
"""A process that has not reported for this long is taken for gone."""


class Reporter:
    """Writes this process's counts to Redis from a thread, started by the first change."""

    def __init__(self, stats: Stats = STATS) -> None:
        self.stats = stats
        self.name = process_name()
        self.changed = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def change(self, facility: str, delta: int) -> None:
        """A websocket on ``facility`` opened (+1, also counted as a 101) or closed (-1).
        Under the lock: websockets open in opener threads and close on the loop."""
        with self.lock:
            self.stats.change(facility, delta)
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name="ws4redis-live", daemon=True)
                self.thread.start()
        self.changed.set()

    def _work(self) -> None:
        failing = False
        while True:
            self.changed.wait(REPORT_EVERY)
            self.changed.clear()
            try:
                self._write(dict(self.stats.facilities))
                failing = False
            except REDIS_FAILED as exc:
                if not failing:
                    logger.warning("Cannot write the live counts, will retry: %s", exc)
                failing = True
            time.sleep(1.0)  # at most one write a second, however busy

    def _write(self, counts: dict[str, int]) -> None:
        prefix = key_prefix()
        key = live_report(prefix, self.name)
        with get_redis().pipeline(transaction=False) as pipe:
            pipe.delete(key)
            if counts:
                pipe.hset(key, mapping=dict[Any, int](counts))  # its keys' type is narrower
                pipe.expire(key, int(EXPIRES))
            pipe.zadd(live_registry(prefix), {self.name: time.time() + EXPIRES})
            pipe.execute()


def facilities(connection: redis.Redis | None = None) -> tuple[Counter[str], int]:
    """Open websockets per facility over every live process, and how many processes."""
    client = connection if connection is not None else get_redis()
    prefix = key_prefix()
    registry = live_registry(prefix)
    now = time.time()
    client.zremrangebyscore(registry, "-inf", now)
    # the client answers bytes (decode_responses is off); redis-py's annotations allow str too
    names = [cast(bytes, name).decode() for name in client.zrangebyscore(registry, now, "+inf")]
    total: Counter[str] = Counter()
    for name in names:
        for facility, count in client.hgetall(live_report(prefix, name)).items():
            total[cast(bytes, facility).decode()] += int(count)
    return total, len(names)


reporter = per_process(Reporter)
"""This process's reporter (a forked worker gets its own)."""
