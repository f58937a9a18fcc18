"""What happens on one open websocket, without doing any I/O.

A runtime feeds the bytes it read (:meth:`Relay.receive_data`) and the messages Redis
delivered (:meth:`Relay.deliver`), publishes what ``receive_data`` returns, and writes what
:meth:`Relay.data_to_send` hands out. Framing, ping/pong, the close handshake and size limits
are the ``websockets`` sans-I/O protocol's; the rules of this project (echo, heartbeat,
text or binary) are here.
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


class Relay:
    """Per-connection rules between a websocket and its Redis channels."""

    def __init__(
        self, protocol: ServerProtocol, *, echo: bool, heartbeat: str | None, now: float
    ) -> None:
        self.protocol = protocol
        self.echo = echo
        self.heartbeat = heartbeat.encode() if heartbeat else None
        self.last_sent_at = now
        self._last_received: bytes | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None

    # -- client to Redis ------------------------------------------------------------------

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
            if message and message != self.heartbeat:
                self._last_received = message
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

    # -- Redis to client ------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        """Queue ``message`` for the client (persisted messages, anything a runtime sends)."""
        if self.protocol.state is not State.OPEN:
            return
        if is_text(message):
            self.protocol.send_text(message)
        else:
            self.protocol.send_binary(message)

    def deliver(self, message: bytes) -> None:
        """Queue a message Redis delivered; without ``echo`` the author's own is skipped."""
        if self.echo or message != self._last_received:
            self.send(message)

    # -- time -------------------------------------------------------------------------------

    def next_heartbeat(self) -> float | None:
        """When the next heartbeat is due (monotonic seconds), or None without heartbeats."""
        if self.heartbeat is None:
            return None
        return self.last_sent_at + HEARTBEAT_INTERVAL

    def tick(self, now: float) -> None:
        """Send the heartbeat if nothing went to the client for ``HEARTBEAT_INTERVAL``."""
        due = self.next_heartbeat()
        if due is not None and now >= due and self.heartbeat is not None:
            self.send(self.heartbeat)
            self.last_sent_at = now

    # -- output and state -------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Bytes to write, in order; an empty ``b""`` means: shut down the write side."""
        return self.protocol.data_to_send()

    def note_sent(self, now: float) -> None:
        """Tell the relay that frames went out at ``now`` (postpones the heartbeat)."""
        self.last_sent_at = now

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
