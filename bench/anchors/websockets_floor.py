"""A raw asyncio websocket server: the floor ``bench/connections.py`` compares against.

No Django, no sessions, no hub bookkeeping: the ``websockets`` library's own asyncio
server, one shared ``redis.asyncio`` pub/sub subscription, and every message Redis delivers
sent to every open connection with :func:`websockets.broadcast`. What ``runwebsocket``
costs beyond this (per handshake, per idle connection, per delivery) is what ws4redis
adds; the figures of this yardstick say how far that could still come down on this machine.

Run as ``python -m bench.anchors.websockets_floor PORT CHANNEL``; it logs ``listening on``
to stderr once it accepts connections.
"""

from __future__ import annotations

import os
import sys

import redis.asyncio
import websockets
from websockets.asyncio.server import ServerConnection, serve

from bench.anchors import run


async def main(port: int, channel: str) -> None:
    connections: set[ServerConnection] = set()

    async def handler(websocket: ServerConnection) -> None:
        connections.add(websocket)
        try:
            await websocket.wait_closed()
        finally:
            connections.discard(websocket)

    client = redis.asyncio.Redis(
        host=os.environ.get("REDIS_HOST", "localhost"), port=int(os.environ.get("REDIS_PORT", 6379))
    )
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    # As the bench configures runwebsocket: no keepalive pings during the measurements.
    async with serve(handler, "127.0.0.1", port, ping_interval=None, backlog=4096):
        print(f"yardstick listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        async for message in pubsub.listen():
            # Text frames, as runwebsocket sends valid UTF-8.
            websockets.broadcast(connections, message["data"].decode())


if __name__ == "__main__":
    run(main, __doc__)
