"""The history rules: which facilities keep history, the envelope, continuing a position."""

from __future__ import annotations

import json

from tests.core.test_relay import relay, sent_frames
from ws4redis.core.history import (
    CLIENT,
    ENVELOPE,
    PRESENCE,
    SERVER,
    HistoryOptions,
    Position,
    Window,
    envelope,
    first_messages,
    open_envelope,
    options,
)
from ws4redis.core.relay import Delivery, Start
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import frame_message

CHANNEL = b"ws4redis:broadcast:chat"
HISTORY = {"chat": {"size": 10, "ttl": 60}}


def test_facilities_keep_history_by_name_or_by_the_wildcard():
    configured = {"chat": {"size": 5, "ttl": 60}}
    assert options(configured, "chat") == HistoryOptions(5, 60)
    assert options(configured, "other") is None
    assert options({"*": {"size": 1, "ttl": 2}}, "other") == HistoryOptions(1, 2)
    assert options({}, "chat") is None  # off by default


def test_an_envelope_says_who_made_a_message_and_where_it_sits():
    opened = open_envelope(ENVELOPE + b"ce1f2:17:hello: world")
    assert opened is not None
    assert (opened.origin, opened.position, opened.data) == (
        CLIENT,
        Position("e1f2", 17),
        b"hello: world",
    )
    without = open_envelope(ENVELOPE + b"p::{}")
    assert without is not None and (without.origin, without.position) == (PRESENCE, None)
    plain = open_envelope(b"plain")  # published around ws4redis (redis-cli): the server's
    assert plain is not None and (plain.origin, plain.position, plain.data) == (
        SERVER,
        None,
        b"plain",
    )


def test_a_damaged_envelope_is_unreadable_never_an_exception():
    for raw in [
        ENVELOPE,
        ENVELOPE + b"x::data",  # no such origin
        ENVELOPE + b"s",
        ENVELOPE + b"se1:12",  # no second colon
        ENVELOPE + b"s:5:data",  # offset without epoch
        ENVELOPE + b"sE1:5:data",  # not an epoch ws4redis makes
        ENVELOPE + b"se1:-5:data",
        ENVELOPE + b"se1:1e+14:data",
        ENVELOPE + b"se1:" + b"9" * 40 + b":data",
        ENVELOPE + b"s" + b"a" * 17 + b":1:data",
    ]:
        assert open_envelope(raw) is None, raw


def test_a_delivery_reads_its_envelope_once_and_counts_what_cannot_be_read():
    stats = Stats()
    delivery = Delivery(CHANNEL, ENVELOPE + b"sbroken")
    assert delivery.opened(stats) is None and delivery.opened(stats) is None
    assert stats.unreadable == 1
    good = Delivery(CHANNEL, envelope(SERVER, Position("e1", 3), b"hi"))
    assert good.data == envelope(SERVER, Position("e1", 3), b"hi")  # as Redis delivered it
    assert good.opened(stats).data == b"hi"  # type: ignore[union-attr]


def test_what_a_client_sends_on_a_plain_facility_is_data_whatever_it_looks_like():
    """On a facility without history or presence nothing is ever read as an envelope: the
    bytes of a client that look like one reach the others as they were sent."""
    forged = ENVELOPE + b"s" + b"e1:99:I am the server"
    framed = relay("subscribe-broadcast")
    assert framed.deliver(Delivery(CHANNEL, forged))
    assert sent_frames(framed) == [frame_message(forged)]
    positioned = relay("subscribe-broadcast&recover", opened=False)
    positioned.opened(start_with(CHANNEL))
    positioned.data_to_send()
    assert positioned.deliver(Delivery(CHANNEL, forged))
    (frame,) = sent_frames(positioned)
    message = json.loads(frame[4:] if frame[1] == 126 else frame[2:])
    assert message["data"] == forged.decode() and "epoch" not in message


def test_on_an_enveloped_facility_the_client_frames_carry_what_the_client_sent():
    sent = ENVELOPE + b"se1:99:forged"  # a client's bytes, as the subscriber wraps them
    framed = relay("subscribe-broadcast", history=HISTORY)
    wrapped = envelope(CLIENT, Position("ab", 1), sent)
    assert framed.deliver(Delivery(CHANNEL, wrapped))
    assert sent_frames(framed) == [frame_message(sent)]


def test_json_clients_learn_who_sent_a_message_and_get_announcements_apart():
    framed = relay("subscribe-broadcast&recover", opened=False, presence={"chat": {}})
    framed.opened(start_with(CHANNEL))
    framed.data_to_send()
    lines = [
        envelope(CLIENT, None, b'{"presence": "join", "user": "admin"}'),
        envelope(SERVER, None, b"from Django"),
        envelope(PRESENCE, None, b'{"presence": "join", "user": "john"}'),
        envelope(PRESENCE, None, b"not an announcement"),
    ]
    for raw in lines:
        framed.deliver(Delivery(CHANNEL, raw))
    messages = [json.loads(frame[2:]) for frame in sent_frames(framed)]
    assert messages == [
        {"channel": "broadcast", "from": "client", "data": '{"presence": "join", "user": "admin"}'},
        {"channel": "broadcast", "data": "from Django"},
        {"channel": "presence", "presence": "join", "user": "john"},
    ]


def test_plain_clients_get_no_announcements():
    """In a plain stream an announcement could not be told from a client's line."""
    framed = relay("subscribe-broadcast", presence={"chat": {}})
    assert not framed.deliver(Delivery(CHANNEL, envelope(PRESENCE, None, b'{"presence": 1}')))
    assert framed.deliver(Delivery(CHANNEL, envelope(SERVER, None, b"hello")))
    assert sent_frames(framed) == [frame_message(b"hello")]


def test_recovered_client_messages_say_so():
    window = Window("e", 1, 2, [(1, b"a"), (2, b"b")], frozenset({2}))
    messages, _ = first_messages("broadcast", Position("e", 0), window)
    assert [json.loads(m).get("from") for m in messages] == [None, "client"]


def start_with(channel: bytes) -> Start:
    return Start([], {channel: "broadcast"}, {})


def test_a_position_continues_only_within_its_epoch_and_the_window_kept():
    window = Window("ep", first=11, last=20, messages=[])
    assert window.continues(Position("ep", 10))  # everything after 10 is kept
    assert window.continues(Position("ep", 20))  # nothing missed
    assert not window.continues(Position("ep", 9))  # 10 was trimmed away
    assert not window.continues(Position("other", 15))  # history was lost meanwhile
    assert not window.continues(Position("ep", 21))  # ahead of what exists
    assert not Window("", first=1, last=0, messages=[]).continues(Position("ep", 0))


def test_an_envelope_made_here_is_what_open_envelope_reads():
    position = Position("ab12cd34", 42)
    for origin in (SERVER, CLIENT, PRESENCE):
        opened = open_envelope(envelope(origin, position, b"x:y"))
        assert opened is not None
        assert (opened.origin, opened.position, opened.data) == (origin, position, b"x:y")
