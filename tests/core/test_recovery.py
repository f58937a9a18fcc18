"""The seam between recovered and live messages, for a client that asked for positions."""

from __future__ import annotations

import json

from tests.core.test_relay import relay
from ws4redis.core.history import SERVER, Position, Window, envelope, first_messages, parse_since
from ws4redis.core.relay import Delivery, Start

CHANNEL = b"ws4redis:broadcast:chat"


def live(epoch: str, offset: int, data: str) -> Delivery:
    return Delivery(CHANNEL, envelope(SERVER, Position(epoch, offset), data.encode()))


HISTORY = {"chat": {"size": 10, "ttl": 60}}


def payloads(chunks: list[bytes]) -> list[dict]:
    """The JSON of server frames (unmasked, each under 126 bytes)."""
    data, messages = b"".join(chunks), []
    while data:
        assert data[0] == 0x81  # a whole text frame
        end = 2 + data[1]
        messages.append(json.loads(data[2:end]))
        data = data[end:]
    return messages


def sent(framed) -> list[dict]:
    return payloads(framed.data_to_send())


def test_live_messages_during_the_opening_wait_and_duplicates_of_the_recovered_are_dropped():
    framed = relay("subscribe-broadcast&recover", opened=False, history=HISTORY)
    for offset in (4, 5, 6):  # delivered while the history was read: 4 and 5 are in it
        assert not framed.deliver(live("e", offset, f"m{offset}"))
    recovered = [b'{"channel":"broadcast","epoch":"e","offset":4,"data":"m4"}',
                 b'{"channel":"broadcast","epoch":"e","offset":5,"data":"m5"}']  # fmt: skip
    framed.opened(Start(recovered, {CHANNEL: "broadcast"}, {CHANNEL: Position("e", 5)}))
    response, *rest = framed.data_to_send()
    assert response.startswith(b"HTTP/1.1 101")
    assert payloads(rest) == [
        {"channel": "broadcast", "epoch": "e", "offset": n, "data": f"m{n}"} for n in (4, 5, 6)
    ]
    assert not framed.deliver(live("e", 6, "m6"))  # a repeat is never sent twice
    assert framed.deliver(live("f", 1, "new epoch"))  # history lost and begun again
    assert sent(framed) == [
        {"channel": "broadcast", "epoch": "f", "offset": 1, "data": "new epoch"}
    ]


def test_a_client_is_told_when_a_new_epoch_or_a_trimmed_history_skips_messages():
    """Positions must run on without a hole: a message of another epoch that is not its first,
    or one that skips offsets, comes after a ``recovered: false`` for the position before."""
    framed = relay("subscribe-broadcast&recover", opened=False, history=HISTORY)
    framed.opened(Start([], {CHANNEL: "broadcast"}, {CHANNEL: Position("e", 5)}))
    framed.data_to_send()
    for delivery in (live("f", 3, "third of a new epoch"), live("f", 4, "next")):
        framed.deliver(delivery)
    assert sent(framed) == [
        {"channel": "broadcast", "epoch": "f", "offset": 2, "recovered": False},
        {"channel": "broadcast", "epoch": "f", "offset": 3, "data": "third of a new epoch"},
        {"channel": "broadcast", "epoch": "f", "offset": 4, "data": "next"},  # no hole
    ]
    assert framed.deliver(live("f", 9, "after a trim"))
    assert sent(framed) == [
        {"channel": "broadcast", "epoch": "f", "offset": 8, "recovered": False},
        {"channel": "broadcast", "epoch": "f", "offset": 9, "data": "after a trim"},
    ]


def test_first_messages_resume_or_say_they_cannot():
    window = Window("e", first=3, last=5, messages=[(4, b"m4"), (5, b"m5")])
    resumed, position = first_messages("broadcast", Position("e", 3), window)
    assert [json.loads(m)["offset"] for m in resumed] == [4, 5] and position == Position("e", 5)
    (told,), _ = first_messages("broadcast", Position("e", 1), window)
    assert json.loads(told) == {
        "channel": "broadcast",
        "epoch": "e",
        "offset": 5,
        "recovered": False,
    }
    (last,), _ = first_messages("broadcast", None, Window("e", 5, 5, [(5, b"m5")]))
    assert json.loads(last)["data"] == "m5"  # a new client: the last message, positioned


def test_positions_are_parsed_by_channel_and_bad_ones_named():
    assert parse_since("broadcast:e1:7,group:a:b:e2:3") == {
        "broadcast": Position("e1", 7),
        "group:a:b": Position("e2", 3),
    }
    assert parse_since(f"broadcast::0,user:e:{10**13}") == {
        "broadcast": Position("", 0),
        "user": Position("e", 10**13),
    }
    out_of_range = (f"broadcast:e:{10**13 + 1}", "broadcast:e:100000000000000", "broadcast:e:-1")
    not_epochs = ("broadcast:e-1:1", "broadcast:é:1", f"broadcast:{'a' * 33}:1")
    for bad in (
        "broadcast",
        "broadcast:e1:x",
        ":e1:1",
        "broadcast:e:٣",
        *out_of_range,
        *not_epochs,
    ):
        try:
            parse_since(bad)
        except ValueError as exc:
            assert "since" in str(exc)
        else:
            raise AssertionError(bad)


def test_held_through_a_resubscription_the_history_goes_out_before_what_arrived_meanwhile():
    """Redis was lost at offset 2; offset 5 arrives live before the history read after the
    resubscription returns 3..5: the client gets 3, 4, 5 once, in order."""
    framed = relay("subscribe-broadcast&recover", opened=False, history=HISTORY)
    framed.opened(Start([], {CHANNEL: "broadcast"}, {CHANNEL: Position("e", 2)}))
    framed.data_to_send()  # the 101
    framed.hold()
    assert not framed.deliver(live("e", 5, "m5"))  # held, not sent ahead of 3 and 4
    assert framed.position_of(CHANNEL) == Position("e", 2)  # where the history read starts
    for delivery in [live("e", n, f"m{n}") for n in (3, 4, 5)] + framed.release_held():
        framed.deliver(delivery)
    assert [m["offset"] for m in sent(framed)] == [3, 4, 5]
    assert framed.deliver(live("e", 6, "m6"))  # and live again
