"""One connection's relay fed bytes by hand: frames, limits, close codes, heartbeat."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl

import pytest
from websockets.datastructures import Headers
from websockets.frames import Close, Frame, Opcode

from ws4redis.core.handshake import HandshakeOptions, Rejection, Upgrade
from ws4redis.core.opening import (
    Accepted,
    Options,
    accept,
    requested_keys,
    requested_positions,
)
from ws4redis.core.relay import HEARTBEAT_INTERVAL, Delivery, Failure, PendingLimits, Relay, Start
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import FramedRelay, frame_message

HANDSHAKE = {
    "Host": "testserver",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
OPTIONS = Options(
    handshake=HandshakeOptions(
        websocket_url="/ws/",
        max_query_size=4096,
        max_facility_length=255,
        allowed_origins=None,
        trusted_origins=(),
        allowed_hosts=("testserver",),
    ),
    heartbeat=None,
    max_message_size=64 * 1024,
    max_buffer=1024 * 1024,
    max_backlog=16 * 1024 * 1024,
    max_pending=10_000,
    max_client_pending_bytes=1024 * 1024,
    ping_interval=20,
    ping_timeout=20,
)
"""The default settings, as plain values."""


def upgrade(target: str = "/ws/chat", method: str = "GET", **headers: str | None) -> Upgrade:
    """An upgrade request for ``target``; ``headers`` (underscores for dashes) replace the
    handshake's, None removes one."""
    path, _, query = target.partition("?")
    fields = dict(HANDSHAKE)
    for name, value in headers.items():
        name = name.replace("_", "-")
        fields.pop(next((k for k in fields if k.lower() == name.lower()), name), None)
        if value is not None:
            fields[name] = value
    return Upgrade(method, path, query, Headers(fields), fields.get("Host"), secure=False)


def opening(target: str = "/ws/chat", *, framing: bool = True, **options) -> Accepted | Rejection:
    """What the core makes of an anonymous upgrade to ``target`` with ``options`` (fields
    of :class:`Options`)."""
    request = upgrade(target)
    fields = dict(parse_qsl(request.query, keep_blank_values=True))
    channels, echo = requested_keys(fields)
    chosen = dataclasses.replace(OPTIONS, **options)
    facility = chosen.handshake.facility(request)
    accepted = Accepted(None, facility, channels, echo, chosen, requested_positions(fields))
    return accept(request, accepted, framing=framing)


def relay(query: str = "publish-broadcast", opened: bool = True, **options) -> FramedRelay:
    """A relay past its handshake, its 101 response already taken (unless not ``opened``)."""
    accepted = opening(f"/ws/chat?{query}", **options)
    assert isinstance(accepted, Accepted)
    framed = accepted.relay(0.0, Stats())
    assert isinstance(framed, FramedRelay)
    if not opened:
        return framed
    framed.opened(Start([]))
    (response,) = framed.data_to_send()
    assert response.startswith(b"HTTP/1.1 101")
    return framed


def client(opcode: Opcode, data: bytes = b"", fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True)


def sent_frames(framed: FramedRelay) -> list[bytes]:
    return [chunk for chunk in framed.data_to_send() if chunk]


def close_code(chunk: bytes) -> int:
    assert chunk[0] == 0x88
    return Close.parse(chunk[2:]).code


def test_text_and_binary_messages_are_published_in_order():
    framed = relay()
    data = client(Opcode.TEXT, b"one") + client(Opcode.BINARY, b"\xff\x00")
    assert framed.receive_data(data) == [b"one", b"\xff\x00"]


def test_message_split_across_reads_and_fragments_is_assembled():
    framed = relay()
    data = client(Opcode.TEXT, b"hel", fin=False) + client(Opcode.CONT, b"lo")
    assert framed.receive_data(data[:5]) == []
    assert framed.receive_data(data[5:]) == [b"hello"]


def test_empty_messages_and_the_heartbeat_are_not_published():
    framed = relay(heartbeat="--hb--")
    data = client(Opcode.TEXT) + client(Opcode.TEXT, b"--hb--") + client(Opcode.TEXT, b"x")
    assert framed.receive_data(data) == [b"x"]


def test_ping_is_answered_with_its_payload():
    framed = relay()
    framed.receive_data(client(Opcode.PING, b"are you there"))
    (pong,) = sent_frames(framed)
    assert pong == Frame(Opcode.PONG, b"are you there").serialize(mask=False)


@pytest.mark.parametrize(
    "data, code",
    [
        (client(Opcode.CONT, b"abc"), 1002),  # nothing to continue
        (client(Opcode.TEXT, b"\xff\xfe"), 1007),
        (client(Opcode.TEXT, b"x" * 2048), 1009),
        (client(Opcode.TEXT, b"x" * 1000, fin=False) + client(Opcode.CONT, b"x" * 1000), 1009),
        (bytes([0x81, 0x03]) + b"abc", 1002),  # a client frame must be masked
        (bytes([0x89, 0xFE, 0, 126, 0, 0, 0, 0]) + b"x" * 126, 1002),  # ping over 125 bytes
    ],
    ids=["stray-cont", "bad-utf8", "too-big", "too-big-fragmented", "unmasked", "long-ping"],
)
def test_bad_input_fails_the_connection_with_its_close_code(data, code):
    framed = relay(max_message_size=1024)
    assert framed.receive_data(data) == []
    assert framed.closing
    chunks = framed.data_to_send()
    assert close_code(chunks[0]) == code
    assert chunks[-1] == b""  # then the server closes the TCP connection


def test_client_close_is_answered_with_its_code():
    framed = relay()
    framed.receive_data(client(Opcode.CLOSE, Close(3000, "bye").serialize()))
    chunks = framed.data_to_send()
    assert close_code(chunks[0]) == 3000 and chunks[-1] == b""


def test_echo_rule_keeps_the_author_s_own_message_from_it():
    framed = relay()
    framed.receive_data(client(Opcode.TEXT, b"mine"))
    assert not framed.push(b"mine", frame_message(b"mine"))
    assert framed.push(b"theirs", frame_message(b"theirs"))
    echoing = relay("publish-broadcast&echo")
    echoing.receive_data(client(Opcode.TEXT, b"mine"))
    assert echoing.push(b"mine", frame_message(b"mine"))


def test_messages_queued_while_subscribing_follow_the_handshake_and_persisted_ones():
    framed = relay("", opened=False)
    framed.push(b"live", frame_message(b"live"))
    framed.opened(Start([b"persisted"]))
    response, persisted, live = framed.data_to_send()
    assert response.startswith(b"HTTP/1.1 101")
    assert persisted.endswith(b"persisted") and live.endswith(b"live")


def test_client_that_does_not_read_is_failed_with_1008_and_its_backlog_dropped():
    framed = relay(max_buffer=100)
    assert not framed.stall()  # its socket takes nothing more
    assert framed.push(b"a" * 60, frame_message(b"a" * 60))  # first message: the runtime must write
    assert not framed.push(b"b" * 30, frame_message(b"b" * 30))  # already waiting for that write
    assert framed.push(
        b"c" * 30, frame_message(b"c" * 30)
    )  # over the limit: write (the close frame)
    assert framed.outbox == [] and framed.closing
    (close,) = sent_frames(framed)
    assert close_code(close) == 1008
    assert not framed.push(b"d", frame_message(b"d"))  # nothing queues after the failure


def test_unsent_bytes_in_the_runtime_count_against_the_limit():
    """Past the bound the client is failed and marked behind, which the runtimes cut off
    (it would not take its close frame); a client failed for another reason is not."""
    framed = relay(max_buffer=100)
    assert not framed.backlogged(100) and not framed.behind
    assert framed.backlogged(101) and framed.behind
    assert close_code(sent_frames(framed)[0]) == 1008
    other = relay()
    other.fail(Failure.TOO_BIG)
    assert not other.behind


def test_heartbeat_goes_out_only_after_an_idle_interval():
    framed = relay(heartbeat="--hb--", ping_interval=None)
    assert framed.next_tick() == HEARTBEAT_INTERVAL
    assert not framed.tick(HEARTBEAT_INTERVAL - 0.1)
    framed.written(now=3.0)  # something went out: the heartbeat waits again
    assert not framed.tick(HEARTBEAT_INTERVAL + 0.1)
    assert framed.tick(3.0 + HEARTBEAT_INTERVAL)
    assert sent_frames(framed) == [Frame(Opcode.TEXT, b"--hb--").serialize(mask=False)]
    assert relay(ping_interval=None).next_tick() is None


def test_silent_client_is_pinged_then_failed_with_1011():
    framed = relay(ping_interval=10, ping_timeout=5)
    assert framed.next_tick() == 10
    assert not framed.tick(9.9)
    assert framed.tick(10.0)  # silent for the interval: a ping
    (ping,) = sent_frames(framed)
    assert ping[0] == 0x89
    assert framed.next_tick() == 15.0
    assert not framed.tick(14.9)
    assert framed.tick(15.0)  # no answer within the timeout
    assert framed.closing and framed.failure is Failure.SILENT
    (close,) = sent_frames(framed)[:1]
    assert close_code(close) == 1011


def test_a_client_that_answers_the_ping_stays():
    framed = relay(ping_interval=10, ping_timeout=5)
    assert framed.tick(10.0)
    sent_frames(framed)
    assert framed.receive_data(client(Opcode.PONG)) == []
    assert not framed.tick(15.0)  # heard: the clock starts again from here
    assert framed.next_tick() == 25.0
    assert not framed.closing
    framed.receive_data(client(Opcode.TEXT, b"anything counts"))
    assert not framed.tick(26.0) and framed.next_tick() == 36.0


def test_unframed_relay_limits_size_and_backlog_for_asgi_servers():
    def unframed_relay() -> Relay:
        return Relay(
            echo=False,
            heartbeat=None,
            now=0.0,
            max_size=10,
            max_buffer=10,
            max_pending=2,
            max_pending_bytes=10,
            stats=Stats(),
        )

    unframed = unframed_relay()
    assert unframed.receive_message(b"hello") == b"hello"
    assert unframed.receive_message(b"") is None
    assert unframed.receive_message(b"x" * 11) is None
    assert unframed.failure is Failure.TOO_BIG
    slow = unframed_relay()
    slow.push(b"x" * 11, b"x" * 11)
    assert slow.failure is Failure.TOO_SLOW and slow.outbox == []


def test_backlog_counts_against_the_client_only_while_its_socket_takes_nothing():
    """Past ``max_buffer`` a client is failed only once the runtime says its hand-over is
    blocked (stall); the server's own backlog in a burst may reach ``max_backlog``."""
    LIMITS = {"echo": True, "heartbeat": None, "now": 0.0, "max_size": 100, "max_buffer": 100,
              "max_pending": 2, "max_pending_bytes": 100, "max_backlog": 300}  # fmt: skip

    def reading(stalled: bool) -> Relay:
        relay = Relay(**LIMITS, stats=Stats())
        relay.opened(Start([]))
        if stalled:
            assert not relay.stall()  # nothing waits yet
        return relay

    burst = reading(stalled=False)
    for _ in range(3):
        burst.push(b"x" * 100, b"x" * 100)
    assert burst.failure is None and burst.outbox_bytes == 300
    assert burst.stall()  # now its socket is full: what waits is the client's
    assert burst.failure is Failure.TOO_SLOW and burst.outbox == []
    caught_up = reading(stalled=True)
    caught_up.written(1.0)
    caught_up.push(b"x" * 150, b"x" * 150)
    assert caught_up.failure is None
    behind = reading(stalled=True)
    behind.push(b"x" * 150, b"x" * 150)
    assert behind.failure is Failure.TOO_SLOW
    over = reading(stalled=False)
    over.push(b"x" * 301, b"x" * 301)
    assert over.failure is Failure.TOO_SLOW
    opening = Relay(**LIMITS, stats=Stats())
    opening.deliver(Delivery(b"ws4redis:broadcast:chat", b"x" * 150))  # before it opened
    assert opening.failure is Failure.TOO_SLOW


def test_a_command_that_arrives_while_subscribing_closes_once_open():
    """What Redis delivers before the relay knows its control channels waits: a command
    among it closes the websocket right after its 101, and nothing else goes out."""
    framed = relay(opened=False)
    assert not framed.deliver(Delivery(b"ws4redis:broadcast:chat", b"before"))
    assert not framed.deliver(Delivery(b"ws4redis:control:k:session", b"4001 session ended"))
    framed.opened(Start([b"persisted"], control=frozenset({b"ws4redis:control:k:session"})))
    response, close = sent_frames(framed)
    assert response.startswith(b"HTTP/1.1 101") and close_code(close) == 4001


def test_unread_pongs_count_against_the_limit():
    framed = relay(max_buffer=1000)
    framed.receive_data(client(Opcode.PING, b"p" * 100) * 5)  # 510 bytes of pongs: kept
    assert not framed.closing
    framed.receive_data(client(Opcode.PING, b"p" * 100) * 5)  # past 1000: failed
    assert framed.failure is Failure.TOO_SLOW
    (close,) = sent_frames(framed)  # the pongs are dropped, the close frame goes out
    assert close_code(close) == 1008


def test_client_messages_backed_up_behind_redis_fail_the_client_with_1013():
    framed = relay(max_pending=5)
    assert framed.admit([b"m" * 10], PendingLimits(1000, waiting=4)) == 1
    assert framed.admit([b"m" * 10], PendingLimits(1000, waiting=5)) == 0
    assert close_code(sent_frames(framed)[0]) == 1013


def test_what_one_read_brought_is_cut_at_the_bound_not_refused_whole():
    """Three messages arrive together and two fit: those two are queued (and counted as
    the client's), the third is not, and the client is failed with 1013."""
    framed = relay(max_pending=5)
    assert framed.admit([b"a" * 10, b"b" * 20, b"c" * 30], PendingLimits(1000, waiting=3)) == 2
    assert framed.pending_bytes == 30
    assert framed.failure is Failure.BACKED_UP


@pytest.mark.parametrize(
    "process", [PendingLimits(100, waiting_bytes=60), PendingLimits(1000)], ids=["process", "own"]
)
def test_client_messages_are_bounded_in_bytes_per_process_and_per_client(process):
    """Bytes count, not only messages: past the process's bound, or past this client's own
    (40 bytes already pending here), the client is failed with 1013."""
    framed = relay(max_client_pending_bytes=80, max_message_size=50)
    assert framed.admit([b"m" * 40], PendingLimits(100)) == 1
    assert framed.pending_bytes == 40
    assert framed.admit([b"m" * 41], process) == 0
    assert framed.pending_bytes == 40
    assert framed.failure is Failure.BACKED_UP


def test_a_message_redis_did_not_take_is_told_with_1013():
    framed = relay()
    assert framed.admit([b"m" * 10, b"m" * 20], PendingLimits(100)) == 2
    framed.published(10, None)
    assert framed.pending_bytes == 20 and not framed.closing
    framed.published(20, 1013)
    assert framed.pending_bytes == 0
    assert framed.failure is Failure.NOT_PUBLISHED
    (close,) = sent_frames(framed)
    assert close_code(close) == 1013 and b"not published" in close


def test_one_message_of_the_largest_size_always_fits_the_client_bound():
    framed = relay(max_client_pending_bytes=80, max_message_size=1000)
    assert framed.admit([b"m" * 1000], PendingLimits(10_000)) == 1
    assert framed.admit([b"m"], PendingLimits(10_000)) == 0  # but nothing more meanwhile


def test_a_lone_message_goes_out_at_once_only_where_no_other_rule_applies():
    """``direct`` hands the frame of a message alone in its round to write at once (and
    counts it as sent); where anything else must be decided (something waits before it,
    the echo, a command of Django's, the bounds, a failure) it changes nothing and says
    None, so that ``deliver`` decides."""
    channel, command = b"ws4redis:broadcast:chat", b"ws4redis:control:k:session"
    framed = relay(opened=False)
    framed.opened(Start([], control=frozenset({command})))
    framed.data_to_send()  # the 101
    frame = framed.direct(Delivery(channel, b"one"), 5.0)
    assert frame == frame_message(b"one") and framed.outbox == []
    assert framed.last_sent_at == 5.0 and framed.stats.bytes_out == len(frame)

    framed.receive_data(client(Opcode.TEXT, b"mine"))  # the author's own: not sent back
    assert framed.direct(Delivery(channel, b"mine"), 6.0) is None
    assert not framed.deliver(Delivery(channel, b"mine"))

    framed.send(b"first")  # something waits: what comes next goes after it
    assert framed.direct(Delivery(channel, b"second"), 6.0) is None
    framed.deliver(Delivery(channel, b"second"))
    assert framed.frames_to_write(6.0) == frame_message(b"first") + frame_message(b"second")

    assert framed.direct(Delivery(command, b"4001 session ended"), 7.0) is None
    assert framed.last_sent_at == 6.0 and framed.outbox == []
    framed.deliver(Delivery(command, b"4001 session ended"))
    assert framed.direct(Delivery(channel, b"after"), 8.0) is None  # failed: nothing more
    assert close_code(sent_frames(framed)[0]) == 4001

    small = relay(max_buffer=100)  # over the bound: the rules of deliver() apply
    assert small.direct(Delivery(channel, b"x" * 200), 1.0) is None
    assert small.direct(Delivery(channel, b"x" * 50), 1.0) == frame_message(b"x" * 50)
