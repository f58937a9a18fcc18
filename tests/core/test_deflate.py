"""``permessage-deflate`` fed by hand: what is negotiated, a message compressed once for every
websocket that negotiated it, each compressed message readable on its own, and what a
client's compressed messages may inflate to."""

from __future__ import annotations

import dataclasses
import json
import zlib

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from tests.core.test_relay import OPTIONS, close_code, upgrade
from ws4redis.core.handshake import negotiate
from ws4redis.core.opening import Accepted, accept
from ws4redis.core.relay import Delivery, Start
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import FramedRelay, frame_message

OFFER = "permessage-deflate; client_max_window_bits"
"""What browsers offer."""
MESSAGE = json.dumps(
    [{"id": n, "user": f"user{n % 7}", "text": f"message {n} of the chat"} for n in range(17)]
).encode()
"""A JSON message of about 1 KB, as a chat or a dashboard sends them."""


def relay(offer: str | None = OFFER, **options: object) -> FramedRelay:
    """An opened relay of a websocket whose client offered ``offer``."""
    request = upgrade("/ws/chat?subscribe-broadcast", Sec_WebSocket_Extensions=offer)
    chosen = dataclasses.replace(OPTIONS, **options)  # type: ignore[arg-type]
    accepted = accept(request, Accepted(None, "chat", ["broadcast"], False, chosen))
    assert isinstance(accepted, Accepted)
    framed = accepted.relay(0.0, Stats())
    assert isinstance(framed, FramedRelay)
    framed.opened(Start([]))
    (response,) = framed.data_to_send()
    assert response.startswith(b"HTTP/1.1 101")
    return framed


def client_of(window: int = 15) -> ClientProtocol:
    """A client that decodes with a fresh window for every message, as the server asked."""
    protocol = ClientProtocol(parse_uri("ws://testserver/ws/chat"), state=OPEN)
    protocol.extensions = [PerMessageDeflate(True, True, window, 15)]
    return protocol


def received(protocol: ClientProtocol, data: bytes) -> list[bytes]:
    protocol.receive_data(data)
    return [bytes(frame.data) for frame in protocol.events_received()]  # type: ignore[union-attr]


def test_compression_is_negotiated_without_context_takeover_only_when_enabled():
    request = upgrade("/ws/chat", Sec_WebSocket_Extensions=OFFER)
    _, answer = negotiate(request, 1024, compression=True)
    extensions = answer.headers["Sec-WebSocket-Extensions"]
    assert extensions.startswith("permessage-deflate")
    assert "server_no_context_takeover" in extensions and "client_no_context_takeover" in extensions
    _, plain = negotiate(request, 1024)
    assert "Sec-WebSocket-Extensions" not in plain.headers
    # a client that offers nothing gets plain frames from a server that compresses
    assert relay(None, compression=True).encode is frame_message
    assert relay(compression=False).encode is frame_message


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",  # zlib cannot: refused
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "x-webkit-deflate-frame",
    ],
)
def test_an_offer_that_cannot_be_taken_gets_plain_frames_not_an_error(offer):
    _, answer = negotiate(
        upgrade("/ws/chat", Sec_WebSocket_Extensions=offer), 1024, compression=True
    )
    assert answer.status_code == 101 and "Sec-WebSocket-Extensions" not in answer.headers
    assert relay(offer, compression=True).encode is frame_message


def test_a_message_is_compressed_once_for_every_websocket_and_each_reads_it_alone():
    compressed = [relay(compression=True) for _ in range(3)]
    plain = relay(compression=False)
    deliveries = [Delivery(b"broadcast:chat", MESSAGE + b" " * n) for n in range(3)]
    for delivery in deliveries:
        for framed in (compressed[0], plain, *compressed[1:]):  # taking turns
            framed.deliver(delivery)
    # one compressed frame per message, the same object in every outbox
    assert all(a is b for a, b in zip(compressed[0].outbox, compressed[2].outbox, strict=True))
    assert all(a is b for a, b in zip(compressed[0].outbox, compressed[1].outbox, strict=True))
    wires = [framed.frames_to_write(1.0) for framed in compressed]
    assert wires[0] == wires[1] == wires[2]
    client = client_of()
    assert received(client, wires[0] or b"") == [d.data for d in deliveries]
    wire = plain.frames_to_write(1.0) or b""
    assert len(wires[0] or b"") < 0.5 * len(wire)  # the aim for a 1 KB JSON message
    assert received(client_of(), wire) == [d.data for d in deliveries]  # plain frames pass too


def test_short_or_incompressible_messages_go_uncompressed():
    framed = relay(compression=True, compress_min_size=64)
    noise = zlib.compress(MESSAGE)  # compressed already
    framed.deliver(Delivery(b"broadcast:chat", b"short"))
    framed.deliver(Delivery(b"broadcast:chat", noise))
    wire = framed.frames_to_write(1.0) or b""
    assert wire == frame_message(b"short") + frame_message(noise)  # RSV1 clear on both
    assert received(client_of(), wire) == [b"short", noise]


def test_a_smaller_window_asked_by_the_client_is_used():
    framed = relay("permessage-deflate; server_max_window_bits=10", compression=True)
    framed.deliver(Delivery(b"broadcast:chat", MESSAGE * 4))
    wire = framed.frames_to_write(1.0) or b""
    assert wire[0] & 0x40  # compressed
    assert received(client_of(window=10), wire) == [MESSAGE * 4]
    assert framed.encode is not relay(compression=True).encode


def compressed_by_client(message: bytes) -> bytes:
    sender = ClientProtocol(parse_uri("ws://testserver/ws/chat"), state=OPEN)
    sender.extensions = [PerMessageDeflate(True, True, 15, 15)]
    sender.send_frame(Frame(Opcode.TEXT, message))
    (data,) = sender.data_to_send()
    return data


def test_what_a_client_compresses_is_published_as_it_inflates():
    framed = relay(compression=True)
    assert framed.receive_data(compressed_by_client(MESSAGE)) == [MESSAGE]


@pytest.mark.parametrize("size", [16 * 1024 + 1, 10 * 1024 * 1024], ids=["just-over", "zip-bomb"])
def test_a_client_message_that_inflates_past_the_limit_is_closed_with_1009(size):
    """The limit is on what a message inflates to: 10 MB of zeros are 10 KB on the wire,
    within the limit, and inflating stops at the limit."""
    framed = relay(compression=True, max_message_size=16 * 1024)
    data = compressed_by_client(b"0" * size)
    assert len(data) < 16 * 1024  # what arrives is within the limit
    assert framed.receive_data(data) == []
    chunks = framed.data_to_send()
    assert close_code(chunks[0]) == 1009 and chunks[-1] == b""
    assert relay(compression=True, max_message_size=16 * 1024).receive_data(
        compressed_by_client(b"0" * 16 * 1024)
    ) == [b"0" * 16 * 1024]  # and one at the limit passes


def test_a_compressed_frame_that_was_not_negotiated_or_cannot_inflate_is_a_protocol_error():
    data = compressed_by_client(MESSAGE)
    plain = relay(compression=False)
    assert plain.receive_data(data) == []
    assert close_code(plain.data_to_send()[0]) == 1002
    garbage = bytes([0xC1, 0x80 | 40, 0, 0, 0, 0]) + b"\xff" * 40  # FIN, RSV1, text; mask 0
    framed = relay(compression=True)
    assert framed.receive_data(garbage) == []
    assert close_code(framed.data_to_send()[0]) == 1002
