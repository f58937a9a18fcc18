"""The least a Python server on uvloop can do per opening and per delivery: the floor that
``bench/peers.py`` sets beside nchan and ``runwebsocket``.

Not a server anyone should run: no limits, no slow-client handling, no channels, no close
handshake. Each connection's request is parsed by the ``websockets`` library's request
parser and answered by its ``ServerProtocol.accept()`` (the same library calls every
``runwebsocket`` opening makes); one ``redis.asyncio`` subscription receives the
broadcasts; each message is framed once and written to every open transport with one
``write()`` each. Whatever ``runwebsocket`` costs above this is its own work (identity,
channels, bounds, bookkeeping); whatever this costs above nchan is what Python and uvloop
cost against C on this machine.

Run as ``python -m bench.anchors.transport_floor PORT CHANNEL``; it logs ``listening on``
to stderr once it accepts connections.
"""

from __future__ import annotations

import asyncio
import os
import sys

import redis.asyncio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from bench.anchors import run

OPEN_TRANSPORTS: set[asyncio.Transport] = set()


class Handshake(asyncio.Protocol):
    """One client: its request parsed as it arrives, answered 101, then only written to."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.reader = StreamReader()
        self.parser = Request.parse(self.reader.read_line)
        self.open = False

    def data_received(self, data: bytes) -> None:
        if self.open:
            return  # what clients send is not read: the benchmark's clients send nothing
        self.reader.feed_data(data)
        try:
            next(self.parser)
        except StopIteration as parsed:
            response = ServerProtocol(state=OPEN).accept(parsed.value)
            self.transport.write(response.serialize())
            self.open = True
            OPEN_TRANSPORTS.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        OPEN_TRANSPORTS.discard(self.transport)


async def main(port: int, channel: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(Handshake, "127.0.0.1", port, backlog=4096)
    client = redis.asyncio.Redis(
        host=os.environ.get("REDIS_HOST", "localhost"), port=int(os.environ.get("REDIS_PORT", 6379))
    )
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    print(f"floor listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async for message in pubsub.listen():
        frame = Frame(Opcode.TEXT, message["data"]).serialize(mask=False)
        for transport in OPEN_TRANSPORTS:
            transport.write(frame)


if __name__ == "__main__":
    run(main, __doc__)
