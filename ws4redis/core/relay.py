"""What happens on one open websocket, without doing any I/O.

:class:`Relay` holds this project's rules (drop empty messages and heartbeats from the
client, the echo rule, when to send a heartbeat, text or binary). :class:`FramedRelay` adds
the ``websockets`` sans-I/O protocol for runtimes that own the socket: they feed it the bytes
they read, publish what :meth:`FramedRelay.receive_data` returns and write what
:meth:`FramedRelay.data_to_send` hands out. Framing, ping/pong, the close handshake and size
limits are the library's. ASGI servers frame for us, so the ASGI runtime uses :class:`Relay`.
"""

from __future__ import annotations

from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

HEARTBEAT_INTERVAL = 4.0
"""Seconds without anything sent to the client after which the heartbeat string goes out."""


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
    """Per-connection rules between a websocket and its Redis channels."""

    def __init__(self, *, echo: bool, heartbeat: str | None, now: float) -> None:
        self.echo = echo
        self.heartbeat = heartbeat.encode() if heartbeat else None
        self.last_sent_at = now
        self.last_received: bytes | None = None
        self.outbox: list[bytes] = []

    def accept(self, message: bytes) -> bool:
        """Whether a message from the client is to be published (and remember it)."""
        if not message or message == self.heartbeat:
            return False
        self.last_received = message
        return True

    def wants(self, message: bytes) -> bool:
        """The echo rule: without ``echo`` the author's own last message is not sent back."""
        return self.echo or message != self.last_received

    def send(self, message: bytes) -> None:
        """Queue a message for the client (persisted messages, heartbeats)."""
        self.outbox.append(message)

    def take_outbox(self) -> list[bytes]:
        """Hand over the queued messages, in order, and start a new queue."""
        messages, self.outbox = self.outbox, []
        return messages

    def deliver(self, message: bytes) -> None:
        """Queue a message Redis delivered, if the echo rule lets it through."""
        if self.wants(message):
            self.send(message)

    def next_heartbeat(self) -> float | None:
        """When the next heartbeat is due (monotonic seconds), or None without heartbeats."""
        if self.heartbeat is None:
            return None
        return self.last_sent_at + HEARTBEAT_INTERVAL

    def tick(self, now: float) -> None:
        """Send the heartbeat if nothing went to the client for ``HEARTBEAT_INTERVAL``."""
        if self.heartbeat is not None and now >= self.last_sent_at + HEARTBEAT_INTERVAL:
            self.send(self.heartbeat)
            self.last_sent_at = now

    def note_sent(self, now: float) -> None:
        """Tell the relay that something went out at ``now`` (postpones the heartbeat)."""
        self.last_sent_at = now


class FramedRelay(Relay):
    """A :class:`Relay` that also frames: for runtimes that read and write the socket."""

    def __init__(
        self, protocol: ServerProtocol, *, echo: bool, heartbeat: str | None, now: float
    ) -> None:
        super().__init__(echo=echo, heartbeat=heartbeat, now=now)
        self.protocol = protocol
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
                self.protocol.fail(CloseCode.INVALID_DATA, "text message is not valid UTF-8")
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

    def send(self, message: bytes) -> None:
        if self.protocol.state is not State.OPEN:
            return
        if is_text(message):
            self.protocol.send_text(message)
        else:
            self.protocol.send_binary(message)

    def data_to_send(self) -> list[bytes]:
        """Bytes to write, in order; an empty ``b""`` means: shut down the write side."""
        return self.protocol.data_to_send()

    @property
    def closing(self) -> bool:
        """True once either side started the closing handshake or the connection failed."""
        return self.protocol.state is not State.OPEN

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake from the server side."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)

    def fail(self, code: int, reason: str = "") -> None:
        """Close at once after an error (the client gets ``code``, no handshake awaited)."""
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
