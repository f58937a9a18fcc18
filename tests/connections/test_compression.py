"""``permessage-deflate`` over real sockets on the runtimes that frame
(docs/reference.md#compression): what goes out compressed and what a client may make the
server inflate."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from django.test import override_settings
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.uri import parse_uri

from tests.support.clients import FACILITY, Server, connected
from ws4redis.publisher import RedisPublisher

MESSAGE = json.dumps(
    [{"id": n, "user": f"user{n % 7}", "text": f"message {n} of the chat"} for n in range(17)]
)
"""About 1 KB of JSON."""


class Client:
    """A websocket client on a real socket, the ``websockets`` sans-I/O protocol offering
    ``permessage-deflate`` as browsers do; ``wire`` keeps the bytes as they arrived."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock, self.protocol, self.wire = sock, protocol, b""

    def send(self, frame: Frame) -> None:
        self.protocol.send_frame(frame)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def next_frame(self) -> Frame:
        while True:
            for event in self.protocol.events_received():
                assert isinstance(event, Frame)
                return event
            data = self.sock.recv(65536)
            self.wire += data
            self.protocol.receive_data(data)
            if not data:
                raise EOFError


@contextmanager
def deflating(
    server: Server, query: str = "subscribe-broadcast&publish-broadcast"
) -> Iterator[Client]:
    url = urlsplit(server.url(query))
    protocol = ClientProtocol(
        parse_uri(server.url(query)), extensions=[ClientPerMessageDeflateFactory()]
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        protocol.send_request(protocol.connect())
        sock.sendall(b"".join(protocol.data_to_send()))
        while protocol.handshake_exc is None and not protocol.events_received():
            protocol.receive_data(sock.recv(65536))
        assert protocol.handshake_exc is None, protocol.handshake_exc
        yield Client(sock, protocol)


def test_messages_go_out_compressed_by_default(socket_server):
    with deflating(socket_server) as client:
        assert client.protocol.extensions, "permessage-deflate was not negotiated"
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
        frame = client.next_frame()
        assert frame.data == MESSAGE.encode()
        assert client.wire[0] == 0xC1  # FIN, RSV1 (compressed), text
        assert len(client.wire) < len(MESSAGE) / 2


def test_compression_can_be_turned_off(socket_server):
    with override_settings(WS4REDIS_COMPRESSION=False), deflating(socket_server) as client:
        assert not client.protocol.extensions
        RedisPublisher(facility=FACILITY, broadcast=True).publish_message(MESSAGE)
        assert client.next_frame().data == MESSAGE.encode()
        assert client.wire[0] == 0x81


def test_what_a_client_compresses_reaches_others_as_sent(socket_server):
    with (
        connected(socket_server, "subscribe-broadcast") as plain,
        deflating(socket_server) as client,
    ):
        assert client.protocol.extensions  # what it sends goes compressed
        client.send(Frame(Opcode.TEXT, MESSAGE.encode()))
        assert plain.recv() == MESSAGE


def test_a_message_that_inflates_past_the_limit_closes_with_1009_and_spares_others(socket_server):
    """Ten megabytes of zeros are ten kilobytes on the wire, within the limit: the limit is
    on what they inflate to, and the server stops inflating there."""
    with override_settings(WS4REDIS_MAX_MESSAGE_SIZE=16 * 1024):
        with (
            connected(socket_server, "subscribe-broadcast") as neighbour,
            deflating(socket_server) as client,
        ):
            assert client.protocol.extensions
            client.send(Frame(Opcode.TEXT, b"0" * 10_000_000))
            close = client.next_frame()
            assert close.opcode is Opcode.CLOSE and Close.parse(close.data).code == 1009
            RedisPublisher(facility=FACILITY, broadcast=True).publish_message("still here")
            assert neighbour.recv() == "still here"
