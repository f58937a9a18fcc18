"""The websocket transport: a relay that frames, for the runtimes that own the socket.

They feed :class:`FramedRelay` the bytes they read, publish what
:meth:`FramedRelay.receive_data` returns and write what :meth:`FramedRelay.frames_to_write`
and :meth:`FramedRelay.data_to_send` hand out. Framing, ping/pong, the close handshake and
the frame size limit are the ``websockets`` sans-I/O protocol's; the rules of the
connection are :class:`~ws4redis.core.relay.Relay`'s, untouched.
"""

from __future__ import annotations

from functools import cache
from typing import cast

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from ws4redis.core.deflate import SharedDeflate, negotiated_window
from ws4redis.core.relay import Encoder, Failure, SocketRelay, Start

OPEN = State.OPEN
NOTHING: tuple[bytes, ...] = ()
"""What a relay holds where it has no fragments or control frames waiting."""


def is_text(message: bytes) -> bool:
    """Valid UTF-8 goes out as a text frame, anything else as binary."""
    if message.isascii():
        return True
    try:
        message.decode()
    except UnicodeDecodeError:
        return False
    return True


def message_frame(message: bytes) -> Frame:
    """The frame that carries ``message`` to a client."""
    return Frame(Opcode.TEXT if is_text(message) else Opcode.BINARY, message)


def frame_message(message: bytes) -> bytes:
    """The server-to-client frame of ``message``; built once per message, sent to many."""
    return message_frame(message).serialize(mask=False)


@cache  # one per window and size: a few for the life of the process
def deflated_encoder(window_bits: int, min_size: int) -> Encoder:
    """The encoder of websockets that negotiated ``permessage-deflate`` with
    ``window_bits``: a message of at least ``min_size`` bytes goes compressed unless that
    would not make it smaller, a shorter one as it is (each frame says which it is). The
    same function for the same arguments, so that a message is compressed once for all
    the websockets that share them (:func:`~ws4redis.core.relay.encoded`)."""
    extensions = [SharedDeflate(window_bits)]

    def encoder(message: bytes) -> bytes:
        if len(message) < min_size:
            return frame_message(message)
        frame = message_frame(message)
        compressed = frame.serialize(mask=False, extensions=extensions)
        return compressed if len(compressed) < len(message) else frame.serialize(mask=False)

    return encoder


class FramedRelay(SocketRelay):
    """A :class:`Relay` that also frames: for runtimes that read and write the socket.

    ``compress_min_size``: the smallest message compressed where the handshake negotiated
    ``permessage-deflate`` (:mod:`ws4redis.core.deflate`).
    """

    __slots__ = (
        "_close_counted",
        "_control",
        "_control_bytes",
        "_fragment_opcode",
        "_fragments",
        "encode",
        "heard",
        "ping_interval",
        "ping_timeout",
        "pong_due",
        "protocol",
        "quiet_since",
        "response",
    )

    def __init__(
        self,
        protocol: ServerProtocol,
        response: Response,
        *,
        ping_interval: float | None,
        ping_timeout: float,
        compress_min_size: int = 0,
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.protocol = protocol
        window = negotiated_window(protocol)
        self.encode = (
            frame_message if window is None else deflated_encoder(window, compress_min_size)
        )
        self.response: Response | None = response
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.heard = False
        self.quiet_since: float = options["now"]  # type: ignore[assignment]
        self.pong_due: float | None = None
        # Empty ones shared: a process holds many thousands of relays, and most of them never
        # see a fragmented message or a control frame.
        self._fragments: list[bytes] = NOTHING  # type: ignore[assignment]
        self._fragment_opcode: Opcode | None = None
        self._control: list[bytes] = NOTHING  # type: ignore[assignment]
        self._control_bytes = 0
        self._close_counted = False
        self.sending = False  # until the handshake response is out

    def _open(self) -> bool:
        """Whether the websocket is open: the handshake response is out (the protocol is
        made open, see :func:`~ws4redis.core.handshake.negotiate`) and no close began."""
        return self.response is None and self.protocol.state is OPEN

    def _track_state(self) -> None:
        """``sending`` mirrors the protocol's state after everything that may change it, so
        the delivery path reads one attribute instead of the protocol's state property."""
        self.sending = self.failure is None and self._open()
        self._count_close()

    def _count_close(self) -> None:
        """Count a close the server started (its decision, or the protocol's: a frame too
        big, bad UTF-8...), once; not the answer to a client's close."""
        sent = self.protocol.close_sent
        if sent is not None and not self._close_counted:
            self._close_counted = True
            if self.protocol.close_rcvd is None or not self.protocol.close_rcvd_then_sent:
                self.stats.closes[sent.code] += 1

    def _take_control(self) -> None:
        """Keep the protocol's replies (pongs, close frames) where they count against
        ``max_buffer``: a client that sends pings and never reads is failed with 1008
        instead of growing the process."""
        replies = self.protocol.data_to_send()
        if replies:
            self._control = [*self._control, *replies]
            self._control_bytes += sum(map(len, replies))
            if self.failure is None and self._control_bytes + self.outbox_bytes > self.max_buffer:
                self.fail(Failure.TOO_SLOW)

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed bytes read from the client; return the messages to publish, in order."""
        self.heard = True
        self.protocol.receive_data(data)
        messages = self._messages()
        self._take_control()
        self._track_state()
        return messages

    def receive_eof(self) -> None:
        """The client closed its side of the TCP connection."""
        self.protocol.receive_eof()
        self._messages()
        self._take_control()
        self._track_state()

    def _messages(self) -> list[bytes]:
        messages = []
        for frame in self.protocol.events_received():
            message = self._assemble(cast(Frame, frame))  # open: the protocol parses frames
            if message is None:
                continue
            if self._fragment_opcode is Opcode.TEXT and not is_text(message):
                self.fail(Failure.INVALID_DATA)
                break
            if self.accept(message):
                messages.append(message)
        return messages

    def _assemble(self, frame: Frame) -> bytes | None:
        """Join fragmented messages; control frames are handled by the protocol."""
        data = cast(bytes, frame.data)  # a parsed frame holds bytes
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode = frame.opcode
            if frame.fin:
                return data
            self._fragments = [data]
        elif frame.opcode is Opcode.CONT:  # the protocol let it through: a message is begun
            self._fragments.append(data)
        else:
            return None
        if not frame.fin:
            return None
        message = b"".join(self._fragments)
        self._fragments = NOTHING  # type: ignore[assignment]
        return message

    # -- keepalive ---------------------------------------------------------------------------

    def next_tick(self) -> float | None:
        heartbeat = super().next_tick()
        if self.ping_interval is None:
            return heartbeat
        keepalive = self.pong_due or self.quiet_since + self.ping_interval
        return keepalive if heartbeat is None else min(heartbeat, keepalive)

    def tick(self, now: float) -> bool:
        """Queue the heartbeat when due, and keep the connection alive: a client silent for
        ``ping_interval`` gets a ping, and one that still says nothing for ``ping_timeout``
        is failed with 1011. A vanished peer (no FIN, no RST: a cut network, a suspended
        laptop) is only found this way; it would otherwise hold its subscriptions forever.
        True when there is something to write."""
        due = super().tick(now)
        if self.ping_interval is None or not self.sending:
            return due
        if self.heard:
            self.heard, self.quiet_since, self.pong_due = False, now, None
        elif self.pong_due is not None:
            if now >= self.pong_due:
                self.fail(Failure.SILENT)
                return True
        elif now >= self.quiet_since + self.ping_interval:
            self.protocol.send_ping(b"")
            self._take_control()
            self.pong_due = now + self.ping_timeout
            return True
        return due

    def opened(self, start: Start) -> None:
        """The connection is subscribed: the handshake response goes first, then the
        persisted messages, then whatever Redis delivered while subscribing."""
        assert self.response is not None
        response = [self.response.serialize()]
        self.response = None  # kept by nobody: a process holds many thousands of relays
        self._track_state()
        frames = [self.encode(message) for message in start.messages]
        self.outbox[:0] = response + frames
        self.outbox_bytes += sum(map(len, frames))
        self._started(start)
        if self.failure is not None:  # Django ended it while it subscribed: 101, then close
            self._control = [*response, *self._control]

    def frames_to_write(self, now: float) -> bytes | None:
        """The queued frames as one chunk, written at ``now``; None once the connection is
        closing (the runtime then writes :meth:`data_to_send`).

        The delivery hot path: one call per websocket and write, and the queue is emptied
        in place, so delivering allocates no containers.
        """
        if not self.sending:
            return None
        outbox = self.outbox
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        self.outbox_bytes = 0
        self.last_sent_at = now
        self.stats.bytes_out += len(data)
        return data

    def data_to_send(self) -> list[bytes]:
        """Bytes to write, in order; an empty ``b""`` means: shut down the write side.

        Queued messages go before the protocol's own output while the connection is open;
        once it is closing they are dropped, since nothing may follow a close frame.
        """
        queued = self.take_outbox()
        if not self.sending:
            queued = []
        control, self._control, self._control_bytes = self._control, NOTHING, 0  # type: ignore[assignment]
        return [*queued, *control, *self.protocol.data_to_send()]

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake from the server side."""
        if self._open():
            self.protocol.send_close(code, reason)
        self._track_state()

    def fail(self, failure: Failure) -> None:
        """Close at once (the client gets ``failure``'s code, no handshake awaited); what
        the client had not read is dropped."""
        super().fail(failure)
        if self._open():  # else the closing handshake's frames stay queued
            self._control, self._control_bytes = NOTHING, 0  # type: ignore[assignment]
            self.protocol.fail(failure.code, failure.reason)
        self._count_close()

    def _failed(self, code: int) -> None:
        """Counted by :meth:`_count_close`, from the close frame the protocol sends."""
