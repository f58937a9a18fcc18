"""Pending-publish benchmark: what a client that floods a server whose Redis is down costs.

Not a test: it prints figures. A private Redis, ``runwebsocket`` on it, and one client with
``publish-broadcast``. Redis is killed; the client then sends ``--messages`` messages of
``--size`` bytes as fast as it can. Reported: how many the server took before it closed the
client (and with which code), and the server's resident memory before and at its peak
(``VmHWM``): what waits for Redis is bounded in bytes (``WS4REDIS_MAX_CLIENT_PENDING_BYTES``,
``WS4REDIS_MAX_PENDING_BYTES``), so the growth stays near those bounds however much is sent.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.harness import rss_bytes, stop_process, ws4redis_server

MIB = 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--size", type=int, default=60_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from ws4redis.testing import redis_server

    with redis_server() as redis:
        os.environ["REDIS_HOST"], os.environ["REDIS_PORT"] = "127.0.0.1", str(redis.port)
        server = ws4redis_server()  # bench.settings reads the Redis from there
        try:
            pid = server.process.pid
            url = f"ws://127.0.0.1:{server.port}/ws/flood?publish-broadcast"
            with connect(url, max_size=None) as ws:
                before = rss_bytes(pid)
                redis.process.kill()
                redis.process.wait()
                payload = "x" * args.size
                sent = 0
                try:
                    for _ in range(args.messages):
                        ws.send(payload)
                        sent += 1
                    ws.recv(timeout=30)
                except (ConnectionClosed, TimeoutError):
                    pass
                code = ws.close_code
            peak = peak_rss(pid)
        finally:
            stop_process(server.process)
    print(
        f"{sent} of {args.messages} messages of {args.size} bytes sent while Redis was down; "
        f"closed with {code}; server RSS {before / MIB:.1f} MiB before, peak "
        f"{peak / MIB:.1f} MiB (+{(peak - before) / MIB:.1f} MiB, "
        f"{(peak - before) / (args.messages * args.size):.3f} of what was offered)"
    )


if __name__ == "__main__":
    main()
