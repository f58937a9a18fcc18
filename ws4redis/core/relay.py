"""What happens on one open websocket, without doing any I/O.

:class:`Relay` holds the rules of one connection (see ``docs/reference.md#relaying``): which
client messages are published, the echo rule, when the heartbeat is due, how much may wait
for a client that does not read, and which close code ends the connection.
:class:`FramedRelay` adds the ``websockets`` sans-I/O protocol for the runtimes that own the
socket: they feed it the bytes they read, publish what :meth:`FramedRelay.receive_data`
returns and write what :meth:`FramedRelay.data_to_send` hands out. Framing, ping/pong, the
close handshake and the frame size limit are the library's. ASGI servers frame for us, so
the ASGI runtime uses :class:`Relay` and sends what it takes from the outbox.
"""

from __future__ import annotations

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol

HEARTBEAT_INTERVAL = 4.0
"""Seconds without anything sent to the client after which the heartbeat string goes out."""

TOO_SLOW = "client does not read"


def is_text(message: bytes) -> bool:
    """Valid UTF-8 goes out as a text frame, anything else as binary."""
    if message.isascii():
        return True
    try:
        message.decode()
    except UnicodeDecodeError:
        return False
    return True


def frame_message(message: bytes) -> bytes:
    """The server-to-client frame of ``message``; built once per message, sent to many."""
    opcode = Opcode.TEXT if is_text(message) else Opcode.BINARY
    return Frame(opcode, message).serialize(mask=False)


class Relay:
    """Per-connection rules between a websocket and its Redis channels.

    ``outbox`` holds what waits for the client (messages here, frames in
    :class:`FramedRelay`); ``failure`` is the close code and reason once the connection must
    end, for runtimes whose server sends the close frame.
    """

    def __init__(
        self,
        *,
        echo: bool,
        heartbeat: str | None,
        now: float,
        max_size: int,
        max_buffer: int,
    ) -> None:
        self.echo = echo
        self.heartbeat = heartbeat.encode() if heartbeat else None
        self.max_size = max_size
        self.max_buffer = max_buffer
        self.last_sent_at = now
        self.last_received: bytes | None = None
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.failure: tuple[int, str] | None = None

    # -- from the client ---------------------------------------------------------------------

    def accept(self, message: bytes) -> bool:
        """Whether a message from the client is to be published (and remember it)."""
        if not message or message == self.heartbeat:
            return False
        self.last_received = message
        return True

    def receive_message(self, message: bytes) -> bytes | None:
        """A whole message the server assembled: the bytes to publish, or None.

        A message over ``max_size`` fails the connection with 1009 instead.
        """
        if len(message) > self.max_size:
            self.fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return None
        return message if self.accept(message) else None

    # -- to the client -----------------------------------------------------------------------

    def wants(self, message: bytes) -> bool:
        """The echo rule: without ``echo`` the author's own last message is not sent back."""
        return self.echo or message != self.last_received

    def push(self, data: bytes, frame: bytes) -> bool:
        """Queue a message Redis delivered (raw and framed); True when the outbox was empty,
        that is, when the runtime must schedule a write.

        The outbox is bounded by ``max_buffer``: past it the client is failed with 1008 and
        what it had not read is dropped, so one stalled reader never holds the others' data.
        """
        if self.failure is not None or not self.wants(data):
            return False
        was_empty = not self.outbox
        self._queue(data, frame)
        if self.outbox_bytes > self.max_buffer:
            self.fail(CloseCode.POLICY_VIOLATION, TOO_SLOW)
            return True
        return was_empty

    def send(self, message: bytes) -> None:
        """Queue a message for the client (persisted messages, heartbeats)."""
        if self.failure is None:
            self._queue(message, b"")

    def _queue(self, data: bytes, frame: bytes) -> None:
        self.outbox.append(data)
        self.outbox_bytes += len(data)

    def take_outbox(self) -> list[bytes]:
        """Hand over the queued messages, in order, and start a new queue."""
        messages, self.outbox, self.outbox_bytes = self.outbox, [], 0
        return messages

    def written(self, unsent: int, now: float) -> bool:
        """The runtime wrote to the client at ``now`` and ``unsent`` bytes still wait in its
        buffers; True when that is over ``max_buffer`` and the client was failed with 1008."""
        self.last_sent_at = now
        if unsent > self.max_buffer:
            self.fail(CloseCode.POLICY_VIOLATION, TOO_SLOW)
            return True
        return False

    def opened(self, persisted: list[bytes]) -> None:
        """The connection is subscribed: the persisted messages go first, then whatever
        Redis delivered while subscribing."""
        self.outbox[:0] = persisted
        self.outbox_bytes += sum(map(len, persisted))

    # -- heartbeat ---------------------------------------------------------------------------

    def next_heartbeat(self) -> float | None:
        """When the next heartbeat is due (monotonic seconds), or None without heartbeats."""
        if self.heartbeat is None:
            return None
        return self.last_sent_at + HEARTBEAT_INTERVAL

    def tick(self, now: float) -> bool:
        """Queue the heartbeat if nothing went to the client for ``HEARTBEAT_INTERVAL``;
        True when it did."""
        if self.heartbeat is None or now < self.last_sent_at + HEARTBEAT_INTERVAL:
            return False
        self.send(self.heartbeat)
        self.last_sent_at = now
        return True

    # -- ending ------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once the connection is to end."""
        return self.failure is not None

    def fail(self, code: int, reason: str = "") -> None:
        """End the connection with ``code``; what the client had not read is dropped."""
        if self.failure is None:
            self.failure = (code, reason)
            self.outbox, self.outbox_bytes = [], 0


class FramedRelay(Relay):
    """A :class:`Relay` that also frames: for runtimes that read and write the socket."""

    def __init__(self, protocol: ServerProtocol, response: Response, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.protocol = protocol
        self.response = response
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed bytes read from the client; return the messages to publish, in order."""
        self.protocol.receive_data(data)
        return self._messages()

    def receive_eof(self) -> None:
        """The client closed its side of the TCP connection."""
        self.protocol.receive_eof()
        self._messages()

    def _messages(self) -> list[bytes]:
        messages = []
        for frame in self.protocol.events_received():
            message = self._assemble(frame)
            if message is None:
                continue
            if self._fragment_opcode is Opcode.TEXT and not is_text(message):
                self.fail(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
                break
            if self.accept(message):
                messages.append(message)
        return messages

    def _assemble(self, frame: Frame) -> bytes | None:
        """Join fragmented messages; control frames are handled by the protocol."""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode = frame.opcode
            self._fragments = [frame.data]
        elif frame.opcode is Opcode.CONT:
            self._fragments.append(frame.data)
        else:
            return None
        if not frame.fin:
            return None
        message = b"".join(self._fragments)
        self._fragments = []
        return message

    def _queue(self, data: bytes, frame: bytes) -> None:
        if self.protocol.state is State.CLOSING or self.protocol.state is State.CLOSED:
            return
        frame = frame or frame_message(data)
        self.outbox.append(frame)
        self.outbox_bytes += len(frame)

    def opened(self, persisted: list[bytes]) -> None:
        """The connection is subscribed: the handshake response goes first, then the
        persisted messages, then whatever Redis delivered while subscribing."""
        self.protocol.send_response(self.response)
        response = self.protocol.data_to_send()
        frames = [frame_message(message) for message in persisted]
        self.outbox[:0] = response + frames
        self.outbox_bytes += sum(map(len, frames))

    def flush_outbox(self) -> bytes:
        """The queued frames as one chunk, and an empty queue (the delivery hot path: the
        list is emptied in place, so delivering allocates no containers)."""
        outbox = self.outbox
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        self.outbox_bytes = 0
        return data

    def data_to_send(self) -> list[bytes]:
        """Bytes to write, in order; an empty ``b""`` means: shut down the write side.

        Queued messages go before the protocol's own output, so a close frame is always last.
        """
        if not self.outbox:
            return self.protocol.data_to_send()
        return self.take_outbox() + self.protocol.data_to_send()

    @property
    def closing(self) -> bool:
        """True once either side started the closing handshake or the connection failed."""
        return self.protocol.state is not State.OPEN

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake from the server side."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)

    def fail(self, code: int, reason: str = "") -> None:
        """Close at once (the client gets ``code``, no handshake awaited); what the client
        had not read is dropped."""
        super().fail(code, reason)
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
