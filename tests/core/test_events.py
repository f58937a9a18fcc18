"""The event-stream transport without I/O (docs/reference.md#server-sent-events): how a
message becomes an event, what goes first and last, and where a stream with positions says
it stands."""

from __future__ import annotations

import json

import pytest

from ws4redis.core.events import EventStreamRelay, closing_event, event, named
from ws4redis.core.history import SERVER, Position, envelope
from ws4redis.core.relay import Delivery, Failure, Start
from ws4redis.core.stats import Stats

LIMITS = dict(max_size=100, max_buffer=10_000, max_pending=10, max_pending_bytes=1000)


def stream(**options) -> EventStreamRelay:
    return EventStreamRelay(echo=True, heartbeat=None, now=0.0, stats=Stats(), **LIMITS, **options)


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        (b"hello", b"data: hello\n\n"),
        (b"a\nb\r\nc\rd", b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        (b"", b"data: \n\n"),
        (b"\xff\xfe", b"event: bytes\ndata: //4=\n\n"),
        ("é".encode(), "data: é\n\n".encode()),
    ],
)
def test_a_message_is_one_event_whatever_its_lines_or_bytes(message, sent):
    assert event(message) == sent


def test_a_named_fragment_is_an_event_of_that_name():
    assert event(named("item", "<li>x</li>").encode()) == b"event: item\ndata: <li>x</li>\n\n"
    with pytest.raises(ValueError):
        named("two words", "<li>x</li>")
    # only a first line of exactly that form names the event
    assert event(b"<!-- event: x y -->\n<p>").startswith(b"data: <!-- event")


def test_the_head_goes_first_and_the_close_event_last():
    relay = stream()
    relay.opened(Start([b"stored"]))
    head, first = relay.data_to_send()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in head
    assert first == b"data: stored\n\n"
    relay.deliver(Delivery(b"ch", b"live"))
    relay.close(1001, "server shutting down")
    assert relay.data_to_send() == [
        b"data: live\n\n", closing_event(1001, "server shutting down"), b""
    ]  # fmt: skip
    relay.deliver(Delivery(b"ch", b"too late"))
    assert relay.data_to_send() == []


def test_a_failed_stream_ends_with_its_code():
    relay = stream()
    relay.opened(Start([]))
    relay.data_to_send()
    relay.deliver(Delivery(b"ch", b"unread"))
    relay.fail(Failure.TOO_SLOW)
    *_, last, end = relay.data_to_send()
    assert json.loads(last.split(b"data: ")[1]) == {"code": 1008, "reason": "client does not read"}
    assert end == b""


def test_with_positions_each_event_says_where_every_channel_stands():
    relay = stream(positions=True, enveloped=True)
    labels = {b"bc": "broadcast", b"us": "user"}
    positions = {b"bc": Position("e1", 3), b"us": Position("e1", 7)}
    relay.opened(Start([], labels=labels, positions=positions))
    _head, where = relay.data_to_send()
    assert where == b"id: broadcast:e1:3,user:e1:7\n\n"
    relay.deliver(Delivery(b"us", envelope(SERVER, Position("e1", 8), b"hi")))
    [sent] = relay.data_to_send()
    assert sent.startswith(b"id: broadcast:e1:3,user:e1:8\ndata: {")


def test_a_keepalive_comment_goes_out_when_nothing_else_did():
    relay = stream()
    relay.opened(Start([]))
    relay.data_to_send()
    assert not relay.tick(1.0)
    assert relay.tick(relay.next_tick())
    assert relay.data_to_send() == [b":\n\n"]
