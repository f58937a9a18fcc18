"""History benchmark: what positions and recovery cost. Prints, asserts nothing.

1. Publishing: ``publish_message`` on a facility with history against one without, the
   same process and Redis, alternating rounds; median time per publish and the ratio.
2. Recovery: 1,000 websockets with ``recover`` on one channel of ``runwebsocket``; all are
   cut, 100 messages are published, all reconnect at once with their last position. Time
   until every client has its 100 missed messages (each exactly once, checked), and the
   server's CPU for it.
3. Presence: 1,000 websockets open on a facility with presence for a minute; the Redis
   commands that cost (from Redis's own command statistics), per connection and minute.

Run through ``bench/run history`` (it installs the bench extras and finds a Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time

from bench.harness import (
    CLIENT_CORE,
    LeanClient,
    Tally,
    cpu_seconds,
    free_port,
    start_process,
    stop_process,
    wait_for,
)

HOST = "127.0.0.1"
CLIENTS = 1000
BEHIND = 100
os.environ["WS4REDIS_BENCH_HISTORY"] = "1"  # bench.settings: history for facility "kept"


def publish_cost() -> None:
    import django

    django.setup()
    from ws4redis.publisher import RedisPublisher

    plain = RedisPublisher(facility="plain", broadcast=True)
    kept = RedisPublisher(facility="kept", broadcast=True)
    times: dict[str, list[float]] = {"plain": [], "kept": []}
    for _ in range(5):
        for name, publisher in (("plain", plain), ("kept", kept)):
            start = time.perf_counter()
            for n in range(2000):
                publisher.publish_message(f"message {n}", expire=0)
            times[name].append((time.perf_counter() - start) / 2000)
    plain_us = statistics.median(times["plain"]) * 1e6
    kept_us = statistics.median(times["kept"]) * 1e6
    print(f"1. publish: plain {plain_us:.1f} µs, with history {kept_us:.1f} µs "
          f"(ratio {kept_us / plain_us:.2f}; medians of 5 rounds of 2,000)")  # fmt: skip


class PositionedClient(LeanClient):
    """A client with ``recover``: counts the messages it gets and keeps its last position."""

    def __init__(self, uri: str, tally: Tally) -> None:
        super().__init__(uri, tally)
        self.offsets: list[int] = []
        self.position = ""

    def parse(self, now: float, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.tally.opened += event.status_code == 101
                self.tally.failed += event.status_code != 101
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                message = json.loads(event.data)
                if "offset" in message:
                    self.position = f"broadcast:{message['epoch']}:{message['offset']}"
                if "data" in message:
                    self.offsets.append(message["offset"])
        pending = self.protocol.data_to_send()
        if pending and self.transport is not None:
            self.transport.writelines(pending)
        self.tally.changed.set()


async def connect(port: int, query: str, count: int, tally: Tally) -> list[PositionedClient]:
    loop = asyncio.get_running_loop()
    uri = f"ws://{HOST}:{port}/ws/kept?{query}"
    made = await asyncio.gather(*(
        loop.create_connection(lambda: PositionedClient(uri, tally), HOST, port)
        for _ in range(count)
    ))  # fmt: skip
    return [client for _, client in made]


async def recovery(port: int, pid: int) -> None:
    import redis

    client = redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]))
    from ws4redis.publisher import RedisPublisher

    publisher = RedisPublisher(connection=client, facility="kept", broadcast=True)
    publisher.publish_message("start", expire=0)
    tally = Tally()
    first = await connect(port, "subscribe-broadcast&recover", CLIENTS, tally)
    await wait_for(lambda: all(c.position for c in first), tally, 60)
    positions = [c.position for c in first]
    for c in first:
        assert c.transport is not None
        c.transport.abort()
    await asyncio.sleep(1)
    for n in range(BEHIND):
        publisher.publish_message(f"missed {n}", expire=0)
    tally = Tally()
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    again = []
    loop = asyncio.get_running_loop()
    for position in positions:
        uri = f"ws://{HOST}:{port}/ws/kept?subscribe-broadcast&recover&since={position}"
        again.append(loop.create_connection(lambda u=uri: PositionedClient(u, tally), HOST, port))
    clients = [c for _, c in await asyncio.gather(*again)]
    done = await wait_for(lambda: all(len(c.offsets) >= BEHIND for c in clients), tally, 120)
    elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
    exact = sum(len(c.offsets) == BEHIND and c.offsets == sorted(set(c.offsets)) for c in clients)
    print(f"2. {CLIENTS} clients reconnecting at once, each {BEHIND} messages behind: all "
          f"recovered: {done}, in {elapsed:.2f} s; server CPU {cpu:.2f} s; "
          f"clients with every missed message exactly once, in order: {exact}")  # fmt: skip
    for c in clients:
        assert c.transport is not None
        c.transport.close()


async def presence_cost(port: int) -> None:
    import redis

    client = redis.Redis(host=os.environ["REDIS_HOST"], port=int(os.environ["REDIS_PORT"]))
    tally = Tally()
    loop = asyncio.get_running_loop()
    uri = f"ws://{HOST}:{port}/ws/present?subscribe-broadcast"
    made = await asyncio.gather(*(
        loop.create_connection(lambda: LeanClient(uri, tally), HOST, port) for _ in range(CLIENTS)
    ))  # fmt: skip
    await wait_for(lambda: tally.opened >= CLIENTS, tally, 60)
    await asyncio.sleep(2)  # the joins are written
    before = client.info("commandstats")
    await asyncio.sleep(60)
    after = client.info("commandstats")
    calls = {
        name[len("cmdstat_"):]: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
    }  # fmt: skip
    spent = {name: n for name, n in calls.items() if n and name not in ("info", "ping")}
    per_connection = sum(spent.values()) / CLIENTS
    print(f"3. presence, {CLIENTS} idle websockets for 60 s: Redis commands {spent} = "
          f"{per_connection:.1f} per connection and minute")  # fmt: skip
    for transport, _ in made:
        transport.close()


def main() -> None:
    os.sched_setaffinity(0, {CLIENT_CORE})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    print("History benchmark", flush=True)
    publish_cost()
    port = free_port()
    server = start_process(
        [sys.executable, "-m", "django", "runwebsocket", f"{HOST}:{port}"], "listening on"
    )
    try:
        asyncio.run(recovery(port, server.pid))
        asyncio.run(presence_cost(port))
    finally:
        stop_process(server)


if __name__ == "__main__":
    main()
