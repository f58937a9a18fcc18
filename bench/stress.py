"""The manual's stress test at full size: 1,000 subscribers on one facility, one publish,
every subscriber must receive it. Runs against ``runwebsocket`` and against uWSGI + gevent
and prints how long the delivery took. Not a test
(tests/operations/test_stress.py is, with fewer)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.harness import (
    CLIENT_CORE,
    Tally,
    connect_clients,
    free_port,
    start_process,
    stop_process,
    wait_for,
)


def servers(port: int) -> dict[str, tuple[list[str], str]]:
    uwsgi = Path(sys.executable).with_name("uwsgi")
    return {
        "runwebsocket": (
            [sys.executable, "-m", "django", "runwebsocket", f"127.0.0.1:{port}"],
            "listening on",
        ),
        "uwsgi+gevent": (
            [
                str(uwsgi), "--http-socket", f"127.0.0.1:{port}", "--gevent", "2000",
                "--http-websockets", "--gevent-early-monkey-patch", "--listen", "1024",
                "--module", "bench.wsgi_websocket", "--master", "--die-on-term",
            ],
            "WSGI app 0",
        ),
    }  # fmt: skip


async def stress(name: str, subscribers: int) -> None:
    from ws4redis.publisher import RedisPublisher

    port = free_port()
    command, ready = servers(port)[name]
    process = start_process(command, ready)
    tally = Tally()
    try:
        transports = await connect_clients(
            "127.0.0.1", port, "/ws/stress?subscribe-broadcast", subscribers, tally
        )
        began = time.monotonic()
        RedisPublisher(facility="stress", broadcast=True).publish_message(f"0 {began} stress")
        await wait_for(lambda: tally.total(range(1)) >= subscribers, tally, 60)
        took = time.monotonic() - began
        received = tally.total(range(1))
        verdict = "ok" if received == subscribers else "FAILED"
        print(f"{name}: {received}/{subscribers} subscribers received the message "
              f"in {took * 1e3:.1f} ms ({verdict})", flush=True)  # fmt: skip
        for transport in transports:
            transport.abort()
    finally:
        stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    import django

    django.setup()
    for name in ("runwebsocket", "uwsgi+gevent"):
        asyncio.run(stress(name, args.subscribers))


if __name__ == "__main__":
    main()
