"""The ws4redis.v1 protocol without I/O (docs/reference.md#many-facilities-on-one-websocket):
what a client's request may say, the answers, the facilities' messages as the connection
sends them, and how a facility's failure reaches its connection."""

from __future__ import annotations

import json

import pytest

from ws4redis.core.facilities import (
    FacilityRelay,
    Multiplex,
    RequestError,
    answer,
    facility_encoder,
    forward,
    parse_request,
)
from ws4redis.core.relay import Control, Delivery, Failure, FailureKind, Relay, Start, as_is
from ws4redis.core.stats import Stats

CONTROL = b"control:john:user"
LIMITS = dict(max_size=100, max_buffer=1000, max_pending=10, max_pending_bytes=1000)


def parse(request: object) -> object:
    return parse_request(json.dumps(request).encode(), max_facility_length=20, max_since=50)


def test_a_subscribe_request_is_read_with_its_keys_and_position():
    keys = ["subscribe-broadcast", "echo"]
    fields = {"type": "subscribe", "id": 7, "facility": "chat", "keys": keys}
    request = parse({**fields, "since": "broadcast:e1:3"})
    assert (request.kind, request.id, request.facility) == ("subscribe", 7, "chat")
    assert request.keys == ("subscribe-broadcast", "echo") and request.since == "broadcast:e1:3"


@pytest.mark.parametrize(
    ("request_fields", "says"),
    [
        ({"type": "subscribe", "facility": "x" * 21}, "at most 20 bytes"),
        ({"type": "subscribe", "facility": ""}, "non-empty"),
        ({"type": "subscribe", "facility": 5}, "non-empty"),
        ({"type": "subscribe", "facility": "x", "keys": ["k"] * 17}, "at most 16"),
        ({"type": "subscribe", "facility": "x", "keys": [{"a": 1}]}, "channel keys"),
        ({"type": "subscribe", "facility": "x", "since": "s" * 51}, "at most 50"),
        ({"type": "subscribe", "id": True, "facility": "x"}, "id is"),
        ({"type": "subscribe", "id": "i" * 65, "facility": "x"}, "id is"),
        ({"type": "publish", "facility": "x", "data": {"not": "text"}}, "data is a text"),
        ({"type": "call", "facility": "x", "name": "n" * 101}, "name is"),
        ({"facility": "x"}, "type is one of"),
    ],
)
def test_what_a_client_cannot_ask_is_an_error_of_400(request_fields, says):
    with pytest.raises(RequestError) as refused:
        parse(request_fields)
    assert refused.value.status == 400 and says in refused.value.reason
    error = json.loads(refused.value.answer())
    assert error["type"] == "error" and error["status"] == 400


def test_an_answer_names_its_request_and_facility():
    assert json.loads(answer("subscribed", 3, "chat")) == {
        "type": "subscribed", "id": 3, "facility": "chat"
    }  # fmt: skip


def test_a_facility_message_carries_its_facility_and_is_encoded_once_per_transport():
    encode = facility_encoder("chat", as_is)
    assert facility_encoder("chat", as_is) is encode  # shared by every connection
    message = json.loads(encode(b'{"channel":"broadcast","data":"hi"}'))
    assert message == {"type": "message", "facility": "chat", "channel": "broadcast", "data": "hi"}
    quoted = json.loads(facility_encoder('say "hi"', as_is)(b'{"channel":"x"}'))
    assert quoted["facility"] == 'say "hi"'


def test_requests_wait_in_order_and_within_the_bound():
    multiplex: Multiplex[object] = Multiplex(2, 20, 50)
    first, second = (
        parse({"type": "subscribe", "facility": "a"}),
        parse({"type": "unsubscribe", "facility": "a"}),
    )
    multiplex.take(first)
    multiplex.take(second)
    with pytest.raises(RequestError) as refused:
        multiplex.take(first)
    assert refused.value.status == 429
    assert multiplex.next() is first and multiplex.next() is None  # one at a time
    multiplex.done()
    assert multiplex.next() is second


def test_subscribing_twice_or_beyond_the_bound_and_publishing_unsubscribed_are_refused():
    multiplex: Multiplex[str] = Multiplex(1, 20, 50)
    request = parse({"type": "subscribe", "facility": "a"})
    multiplex.check_subscribe(request)
    multiplex.facilities["a"] = "sink"
    with pytest.raises(RequestError) as twice:
        multiplex.check_subscribe(request)
    assert twice.value.status == 409
    with pytest.raises(RequestError) as beyond:
        multiplex.check_subscribe(parse({"type": "subscribe", "facility": "b"}))
    assert beyond.value.status == 429
    with pytest.raises(RequestError) as unknown:
        multiplex.subscribed(parse({"type": "publish", "facility": "b", "data": ""}))
    assert unknown.value.status == 404


def relays(facility: str = "chat") -> tuple[Relay, FacilityRelay]:
    stats = Stats()
    connection = Relay(echo=True, heartbeat=None, now=0.0, stats=stats, **LIMITS)
    connection.opened(Start([]))
    child = FacilityRelay(echo=True, heartbeat=None, now=0.0, stats=stats, facility=facility,
                          positions=True, **LIMITS)  # fmt: skip
    child.encode = facility_encoder(facility, as_is)
    child.opened(Start([], labels={b"bc:chat": "broadcast"}, control=frozenset({CONTROL})))
    return connection, child


def test_what_a_facility_queues_goes_on_to_its_connection():
    connection, child = relays()
    assert child.deliver(Delivery(b"bc:chat", b"hello"))
    assert forward(connection, child, ended=lambda: pytest.fail("not ended"))
    assert child.outbox == []
    [sent] = connection.take_outbox()
    assert json.loads(sent) == {"type": "message", "facility": "chat", "channel": "broadcast",
                                "data": "hello"}  # fmt: skip


def test_an_unsubscribed_facility_ends_alone_and_a_disconnect_ends_the_connection():
    connection, child = relays()
    ended = []
    unsubscribe = Control(Failure(4004, "bye", FailureKind.UNSUBSCRIBED), "chat").encode()
    assert child.deliver(Delivery(CONTROL, unsubscribe))
    forward(connection, child, ended=lambda: ended.append(True))
    assert ended == [True] and connection.failure is None
    connection, child = relays()
    child.deliver(
        Delivery(CONTROL, Control(Failure(4003, "out", FailureKind.ENDED), "chat").encode())
    )
    forward(connection, child, ended=lambda: pytest.fail("not ended alone"))
    assert connection.failure == Failure(4003, "out", FailureKind.ENDED)
