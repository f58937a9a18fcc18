"""Control messages: what Django sends its websockets through Redis, and what a relay makes
of them (the facility it is meant for, the close it asks for, bytes it cannot read)."""

from __future__ import annotations

import pytest

from ws4redis.core.relay import Control, Delivery, Failure, FailureKind, Relay, Start
from ws4redis.core.stats import Stats

CONTROL = b"control:john:user"


def relay(facility: str) -> Relay:
    limits = dict(max_size=100, max_buffer=1000, max_pending=10, max_pending_bytes=1000)
    relay = Relay(echo=True, heartbeat=None, now=0.0, stats=Stats(), facility=facility, **limits)
    relay.opened(Start([], control=frozenset({CONTROL})))
    return relay


def test_a_control_message_reads_back_as_written():
    command = Control(Failure(4003, "removed by staff", FailureKind.ENDED), "chat")
    assert Control.decode(command.encode()) == command
    everywhere = Control(Failure.SESSION_ENDED)
    assert Control.decode(everywhere.encode()) == everywhere


@pytest.mark.parametrize(
    "data",
    [b"garbage", b"4001 old style", b"[]", b'{"code": 1000, "reason": "", "facility": null}',
     b'{"code": "4001", "reason": "", "facility": null}',
     b'{"code": 4001, "reason": 7, "facility": null}',
     b'{"code": 4001, "reason": "", "facility": 3}', b"\xff\xfe"],
)  # fmt: skip
def test_what_cannot_be_read_still_ends_the_websocket_everywhere(data):
    assert Control.decode(data) == Control(Failure.SESSION_ENDED)


def test_a_long_reason_is_cut_to_what_a_close_frame_holds():
    decoded = Control.decode(Control(Failure(4001, "é" * 100, FailureKind.ENDED)).encode())
    assert len(decoded.failure.reason.encode()) <= 120
    assert decoded.failure.reason == "é" * 60


def test_a_command_for_another_facility_passes_the_websocket_by():
    chat, news = relay("chat"), relay("news")
    command = Control(Failure(4003, "removed", FailureKind.ENDED), "chat").encode()
    assert chat.deliver(Delivery(CONTROL, command))
    assert not news.deliver(Delivery(CONTROL, command))
    assert chat.failure == Failure(4003, "removed", FailureKind.ENDED)
    assert news.failure is None and not news.closing
    news.deliver(Delivery(CONTROL, Control(Failure.SESSION_ENDED).encode()))  # every facility
    assert news.failure == Failure.SESSION_ENDED


def test_an_unsubscribe_reads_back_and_needs_a_facility():
    command = Control(Failure(4004, "unsubscribed", FailureKind.UNSUBSCRIBED), "chat")
    assert Control.decode(command.encode()) == command
    # an unsubscribe of no facility is not one: it ends the websocket, as a disconnect
    data = b'{"code": 4004, "reason": "", "facility": null, "unsubscribe": true}'
    assert Control.decode(data).failure.kind is FailureKind.ENDED
