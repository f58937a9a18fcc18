"""The transport seam: a relay subclass that only says how a message is encoded gets every
rule of the relay (echo, bounds, heartbeat) and shares one encoding per message."""

from __future__ import annotations

import pytest

from tests.core.test_relay import relay as framed_relay
from ws4redis.core.relay import Delivery, Relay, SocketRelay, Start
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import FramedRelay, frame_message

made: list[bytes] = []


def event(message: bytes) -> bytes:
    """A made-up transport's encoding, counting how often it runs."""
    made.append(message)
    return b"data: " + message + b"\n\n"


class EventRelay(Relay):
    encode = staticmethod(event)


SETTINGS = dict(echo=False, heartbeat="--hb--", now=0.0, max_size=100, max_buffer=100,
                max_pending=10, max_pending_bytes=1000)  # fmt: skip


def open_relay(cls: type[Relay] = EventRelay, **options: object) -> Relay:
    relay = cls(**{**SETTINGS, "stats": Stats(), **options})  # type: ignore[arg-type]
    relay.opened(Start([b"kept"]))
    return relay


def test_a_transport_encodes_what_it_sends_and_keeps_the_relay_s_rules():
    made.clear()
    relay = open_relay()
    assert relay.receive_message(b"mine") == b"mine"
    relay.deliver(Delivery(b"broadcast:chat", b"mine"))  # the echo rule holds
    relay.deliver(Delivery(b"broadcast:chat", b"theirs"))
    relay.tick(10.0)  # the heartbeat goes out encoded too
    assert relay.take_outbox() == [b"data: kept\n\n", b"data: theirs\n\n", b"data: --hb--\n\n"]
    relay.deliver(Delivery(b"broadcast:chat", b"x" * 101))  # past max_buffer, never read
    relay.stall()
    assert relay.failure is not None and relay.failure.code == 1008


def test_one_message_is_encoded_once_for_every_client_of_a_transport():
    delivery = Delivery(b"broadcast:chat", b"hello")
    events = [open_relay() for _ in range(3)]
    made.clear()
    for relay in events:
        relay.deliver(delivery)
    assert made == [b"hello"]
    assert all(relay.take_outbox()[-1] == b"data: hello\n\n" for relay in events)
    plain = open_relay(Relay)  # another transport gets its own encoding of the same message
    plain.deliver(delivery)
    assert plain.take_outbox()[-1] == b"hello"


def test_the_websocket_transport_is_one_socket_transport_among_possible_others():
    assert framed_relay().encode is frame_message  # unless permessage-deflate (test_deflate.py)
    assert issubclass(FramedRelay, SocketRelay)  # what runserver, uWSGI and runwebsocket drive
    with pytest.raises(TypeError, match="abstract"):
        type("Half", (SocketRelay,), {"encode": staticmethod(event)})(**SETTINGS, stats=Stats())
