"""The history rules: which facilities keep history, the envelope, continuing a position."""

from __future__ import annotations

from django.test import override_settings

from ws4redis.core.history import (
    ENVELOPE,
    HistoryOptions,
    Position,
    Window,
    enveloped,
    options,
    unwrap,
)
from ws4redis.core.relay import Delivery, frame_message


def test_facilities_keep_history_by_name_or_by_the_wildcard():
    with override_settings(WS4REDIS_HISTORY={"chat": {"size": 5, "ttl": 60}}):
        assert options("chat") == HistoryOptions(5, 60)
        assert options("other") is None
    with override_settings(WS4REDIS_HISTORY={"*": {"size": 1, "ttl": 2}}):
        assert options("other") == HistoryOptions(1, 2)
    assert options("chat") is None  # off by default


def test_envelope_gives_position_and_payload_and_plain_messages_pass():
    assert unwrap(ENVELOPE + b"e1f2:17:hello: world") == (Position("e1f2", 17), b"hello: world")
    assert unwrap(b"plain") == (None, b"plain")
    delivery = Delivery(b"ws4redis:broadcast:chat", ENVELOPE + b"e1:3:hi")
    assert delivery.data == b"hi" and delivery.position == Position("e1", 3)
    assert delivery.frame == frame_message(b"hi")  # clients without positions get the payload


def test_a_position_continues_only_within_its_epoch_and_the_window_kept():
    window = Window("ep", first=11, last=20, messages=[])
    assert window.continues(Position("ep", 10))  # everything after 10 is kept
    assert window.continues(Position("ep", 20))  # nothing missed
    assert not window.continues(Position("ep", 9))  # 10 was trimmed away
    assert not window.continues(Position("other", 15))  # history was lost meanwhile
    assert not window.continues(Position("ep", 21))  # ahead of what exists
    assert not Window("", first=1, last=0, messages=[]).continues(Position("ep", 0))


def test_an_envelope_made_here_is_what_unwrap_reads():
    position = Position("ab12cd34", 42)
    assert unwrap(enveloped(position, b"x:y")) == (position, b"x:y")
