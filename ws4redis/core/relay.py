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

import enum
import logging
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from ws4redis.core.history import (
    PRESENCE,
    SERVER,
    Opened,
    Position,
    marker,
    open_envelope,
    wire,
)
from ws4redis.core.presence import announcement_wire
from ws4redis.core.stats import Stats

logger = logging.getLogger("ws4redis")

HEARTBEAT_INTERVAL = 4.0
"""Seconds without anything sent to the client after which the heartbeat string goes out."""

SESSION_ENDED = 4001
"""Close code when Django ended the websocket's session or user (logout, a deleted session):
see :func:`ws4redis.disconnect`."""
NO_CONTROL: frozenset[bytes] = frozenset()
"""The control channels of every websocket without a session or user: none."""


class FailureKind(enum.Enum):
    """Why the server ends a connection: what the runtimes act on (a client that does not
    read is cut off after a grace period), independent of the close reason's wording."""

    TOO_SLOW = enum.auto()
    """The client does not read what it is sent (1008)."""
    BACKED_UP = enum.auto()
    """The client sends faster than Redis takes its messages (1013)."""
    NOT_PUBLISHED = enum.auto()
    """Redis refused, or could not take, a message of the client (1013)."""
    TOO_BIG = enum.auto()
    """A message over ``max_size`` (1009)."""
    INVALID_DATA = enum.auto()
    """A text message that is not UTF-8 (1007)."""
    SILENT = enum.auto()
    """No answer to the keepalive ping (1011)."""
    SERVER_ERROR = enum.auto()
    """Something on the server side failed (1011)."""
    ENDED = enum.auto()
    """Django ended the websocket's session or user (a 4000-4999 code, :func:`control_close`)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """The close code and reason a failed connection ends with, and its :class:`FailureKind`."""

    code: int
    reason: str
    kind: FailureKind

    TOO_SLOW: ClassVar[Failure]
    BACKED_UP: ClassVar[Failure]
    NOT_PUBLISHED: ClassVar[Failure]
    TOO_BIG: ClassVar[Failure]
    INVALID_DATA: ClassVar[Failure]
    SILENT: ClassVar[Failure]
    SERVER_ERROR: ClassVar[Failure]
    SESSION_ENDED: ClassVar[Failure]


Failure.TOO_SLOW = Failure(CloseCode.POLICY_VIOLATION, "client does not read", FailureKind.TOO_SLOW)
Failure.BACKED_UP = Failure(
    CloseCode.TRY_AGAIN_LATER, "Redis is not keeping up", FailureKind.BACKED_UP
)
Failure.NOT_PUBLISHED = Failure(
    CloseCode.TRY_AGAIN_LATER,
    "Redis is unavailable, message not published",
    FailureKind.NOT_PUBLISHED,
)
Failure.TOO_BIG = Failure(CloseCode.MESSAGE_TOO_BIG, "message too big", FailureKind.TOO_BIG)
Failure.INVALID_DATA = Failure(
    CloseCode.INVALID_DATA, "text message is not valid UTF-8", FailureKind.INVALID_DATA
)
Failure.SILENT = Failure(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", FailureKind.SILENT)
Failure.SERVER_ERROR = Failure(CloseCode.INTERNAL_ERROR, "server error", FailureKind.SERVER_ERROR)
Failure.SESSION_ENDED = Failure(SESSION_ENDED, "session ended", FailureKind.ENDED)


def control_close(data: bytes) -> Failure:
    """The close a control message asks for (``b"4001 session ended"``); what cannot be
    read, or a code outside 4000-4999, closes with :data:`Failure.SESSION_ENDED`."""
    code, _, reason = data.partition(b" ")
    try:
        number = int(code)
    except ValueError:
        number = 0
    if not 4000 <= number <= 4999:
        return Failure.SESSION_ENDED
    # a close reason has 123 bytes
    return Failure(number, reason.decode("utf-8", "replace")[:120], FailureKind.ENDED)


OPEN = State.OPEN
NO_POSITIONS: dict[bytes, Position] = {}
"""The positions of every relay without positions (see :meth:`Relay._deliver_positioned`)."""
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


def frame_message(message: bytes) -> bytes:
    """The server-to-client frame of ``message``; built once per message, sent to many."""
    opcode = Opcode.TEXT if is_text(message) else Opcode.BINARY
    return Frame(opcode, message).serialize(mask=False)


class Delivery:
    """One message Redis delivered on one channel, prepared once for every local websocket.

    ``data`` is what Redis delivered, byte for byte: on a facility without history or
    presence that is what its websockets get, whatever it looks like. On the others, where
    every message travels in an envelope, :meth:`opened` reads it once, for all of them.
    Nothing here raises on what arrived: the hubs build one per message of their reader.
    """

    __slots__ = ("_frame", "_opened", "channel", "data")

    origin = SERVER
    position: Position | None = None

    def __init__(self, channel: bytes, raw: bytes) -> None:
        self.channel = channel
        self.data = raw
        self._frame: bytes | None = None
        self._opened: Opened | bool | None = False  # False: not read yet

    @property
    def frame(self) -> bytes:
        """The frame of ``data``, built once, when the first websocket needs it."""
        if self._frame is None:
            self._frame = frame_message(self.data)
        return self._frame

    def opened(self, stats: Stats) -> Opened | None:
        """The message out of its envelope, or None (logged and counted once, in ``stats``)
        when it cannot be read."""
        if self._opened is False:
            self._opened = open_envelope(self.data)
            if self._opened is None:
                stats.unreadable += 1
                logger.warning(
                    "Skipped a message on %r that cannot be read: %r", self.channel, self.data[:64]
                )
        return self._opened  # type: ignore[return-value]


Message = Delivery | Opened
"""A message as a relay queues it: a delivery as it arrived, or what its envelope held."""


def frame_of(message: Message) -> bytes:
    """The shared frame of ``message``."""
    if isinstance(message, Delivery):
        return message.frame
    if message.frame is None:
        message.frame = frame_message(message.data)
    return message.frame


@dataclass(slots=True)
class PendingLimits:
    """What waits for Redis in one process (client messages handed to its publishing
    thread) and the bound in bytes on it (``WS4REDIS_MAX_PENDING_BYTES``)."""

    max_bytes: int
    waiting: int = 0
    waiting_bytes: int = 0


@dataclass(slots=True)
class Start:
    """What a websocket gets first once it is subscribed: its persisted (or, with positions,
    recovered) messages; for a client that asked for positions, the names it knows its
    channels by and the position each channel's live messages continue from."""

    messages: list[bytes]
    labels: dict[bytes, str] | None = None
    positions: dict[bytes, Position] = field(default_factory=dict)
    control: frozenset[bytes] = NO_CONTROL
    """Its control channels: a message there closes it (:func:`control_close`)."""


class Relay:
    """Per-connection rules between a websocket and its Redis channels.

    ``outbox`` holds what waits for the client (messages here, frames in
    :class:`FramedRelay`); ``failure`` is the :class:`Failure` once the connection must
    end, for runtimes whose server sends the close frame. ``stats`` is where it counts
    (the runtime's; the core imports no process-wide counts). Slots: a process holds one
    relay per websocket, tens of thousands of them.
    """

    framed = False
    """Whether the outbox holds frames (the runtime owns the socket) or messages (ASGI)."""

    __slots__ = (
        "control",
        "early",
        "echo",
        "enveloped",
        "failure",
        "heartbeat",
        "held",
        "labels",
        "last_received",
        "last_sent_at",
        "max_backlog",
        "max_buffer",
        "max_pending",
        "max_pending_bytes",
        "max_size",
        "outbox",
        "outbox_bytes",
        "pending_bytes",
        "positions",
        "sending",
        "stalled",
        "stats",
    )  # fmt: skip

    def __init__(
        self,
        *,
        echo: bool,
        heartbeat: str | None,
        now: float,
        max_size: int,
        max_buffer: int,
        max_pending: int,
        max_pending_bytes: int,
        stats: Stats,
        max_backlog: int = 0,
        positions: bool = False,
        enveloped: bool = False,
    ) -> None:
        self.stats = stats
        self.echo = echo
        # Whether its facility's messages travel in the envelope (history or presence): only
        # then is what Redis delivers read as one; elsewhere it is the payload, as sent.
        self.enveloped = enveloped
        self.heartbeat = heartbeat.encode() if heartbeat else None
        self.max_size = max_size
        self.max_buffer = max_buffer
        # What may wait while the client takes everything it is handed: the server's own
        # backlog in a burst, not the client's (see stall()).
        self.max_backlog = max(max_backlog, max_buffer)
        # Until it opens nothing is handed to the client: what waits is bounded by max_buffer.
        self.stalled = True
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        """Bytes of this client's messages handed over for publishing and not yet done."""
        self.last_sent_at = now
        self.last_received: bytes | None = None
        self.outbox: list[bytes] = []
        self.outbox_bytes = 0
        self.failure: Failure | None = None
        self.sending = True
        self.labels: dict[bytes, str] | None = {} if positions else None
        # Without positions nothing is ever stored in it: all such relays share one.
        self.positions: dict[bytes, Position] = {} if positions else NO_POSITIONS
        # What Redis delivers while subscribing waits in ``early`` until the connection is
        # subscribed: with positions, until the recovered messages are known, so the seam
        # between the two has no duplicate; and for every relay until its control channels
        # are known, so that a command Django sent meanwhile closes it.
        self.early: list[Delivery] | None = []
        # While its process subscribes again after losing Redis: what arrives waits here, so
        # that what the history gives back goes out first (see hold()).
        self.held: list[Delivery] | None = None
        # Channels only Django publishes on; set once subscribed (see opened()).
        self.control = NO_CONTROL

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
            self.fail(Failure.TOO_BIG)
            return None
        return message if self.accept(message) else None

    def backed_up(self, count: int, size: int, limits: PendingLimits) -> bool:
        """``count`` messages of ``size`` bytes from this client would join what waits for
        Redis: the ``waiting`` messages and ``waiting_bytes`` of the whole process, and this
        client's own ``pending_bytes``. True when that is over a bound (messages or bytes
        per process, bytes per client): the client is failed with 1013 (try again later)
        and its messages are not queued, so a stalled Redis cannot grow the process, nor
        one client take the whole queue. Otherwise they count as this client's until
        :meth:`published`."""
        if (
            limits.waiting + count > self.max_pending
            or limits.waiting_bytes + size > limits.max_bytes
            or self.pending_bytes + size > self.max_pending_bytes
        ):
            self.fail(Failure.BACKED_UP)
            return True
        self.pending_bytes += size
        return False

    def published(self, size: int, failure: int | None) -> None:
        """Messages of ``size`` bytes handed over by :meth:`backed_up` are done: published,
        or not (``failure``: the close code, 1013 when Redis refused them or was away). A
        client whose message could not be published is told so by that close, never left
        to believe it went out."""
        self.pending_bytes -= size
        if failure is not None:
            refused = failure == CloseCode.TRY_AGAIN_LATER
            self.fail(Failure.NOT_PUBLISHED if refused else Failure.SERVER_ERROR)

    # -- to the client -----------------------------------------------------------------------

    def push(self, data: bytes, item: bytes) -> bool:
        """Queue ``item`` for a message ``data`` Redis delivered (the runtime queues the
        message itself, or its frame); True when the outbox was empty, that is, when the
        runtime must schedule a write.

        The echo rule applies: without ``echo`` the author's own last message is not sent
        back. The outbox is bounded: past ``max_buffer`` while the client takes nothing
        (:meth:`stall`), or past ``max_backlog`` in any case, the client is failed with 1008
        and what it had not read is dropped, so one stalled reader never holds the others'
        data. The delivery hot path: one call per message and websocket.
        """
        if self.failure is not None or (not self.echo and data == self.last_received):
            return False
        outbox = self.outbox
        outbox.append(item)
        self.outbox_bytes += len(item)
        if self.outbox_bytes > self.max_buffer and self._over_bound():
            return True
        return len(outbox) == 1

    def _over_bound(self) -> bool:
        """With more than ``max_buffer`` waiting: whether that fails the client (it is
        stalled, or even a reading client may not have that much wait)."""
        if self.stalled or self.outbox_bytes > self.max_backlog:
            self.fail(Failure.TOO_SLOW)
            return True
        return False

    def stall(self) -> bool:
        """The runtime's hand-over is blocked: the client's socket (or the ASGI server's
        flow control) takes nothing more for now. Until :meth:`written`, what waits is the
        client's backlog, bounded by ``max_buffer``; before, it was the server's own (a
        burst faster than one hand-over), which may reach ``max_backlog``: a client that
        reads at full speed is never blamed for it. True when this fails the client."""
        self.stalled = True
        return self.outbox_bytes > self.max_buffer and self._over_bound()

    def deliver(self, delivery: Delivery) -> bool:
        """Queue what Redis delivered (see :meth:`push`): its frame, or for an ASGI server,
        which frames itself, the message. Presence announcements go only to clients that
        get JSON messages, where they are told apart by their channel name: in a plain
        stream they could not be told from a client's message of the same text."""
        if self.control and delivery.channel in self.control:  # Django ended its session
            self.fail(control_close(delivery.data))
            return True
        if self.labels is not None or self.early is not None:
            return self._deliver_positioned(delivery)  # with positions, or still subscribing
        message = self._read(delivery)
        if message is None or message.origin == PRESENCE:
            return False
        return self.push(message.data, frame_of(message) if self.framed else message.data)

    def _read(self, delivery: Delivery) -> Message | None:
        """What ``delivery`` carries for this websocket (None: it cannot be read)."""
        return delivery.opened(self.stats) if self.enveloped else delivery

    def _item(self, message: bytes) -> bytes:
        """What the outbox holds for ``message``."""
        return frame_message(message) if self.framed else message

    def _deliver_positioned(self, delivery: Delivery) -> bool:
        """For a client that asked for positions: a message at or before the last position
        of its channel (within the same epoch) was delivered already, at the seam between
        recovered and live messages, and is dropped; the others go out as JSON."""
        waiting = self.early if self.early is not None else self.held
        if waiting is not None:
            waiting.append(delivery)
            self.outbox_bytes += len(delivery.data)
            if self.outbox_bytes > self.max_buffer and self._over_bound():
                waiting.clear()
            return False
        message = self._read(delivery)
        if message is None:
            return False
        position = message.position
        gap = False
        if position is not None:
            known = self.positions.get(delivery.channel)
            if known is not None:
                same = known.epoch == position.epoch
                if same and position.offset <= known.offset:
                    return False
                # what came before this message is not all with the client: another epoch
                # begun (Redis lost the history) or offsets skipped (trimmed meanwhile)
                gap = position.offset > (known.offset + 1 if same else 1)
            self.positions[delivery.channel] = position
        name = self.labels.get(delivery.channel)  # type: ignore[union-attr]
        if name is None:
            return False
        wake = False
        if gap:
            before = Position(position.epoch, position.offset - 1)  # type: ignore[union-attr]
            wake = self.push(b"", self._item(marker(name, before)))
        if message.origin == PRESENCE:
            payload = announcement_wire(message.data)
        else:
            payload = wire(name, message.data, position, message.origin)
        if payload is None:
            return wake
        return self.push(message.data, self._item(payload)) or wake

    def hold(self) -> None:
        """Its process lost the Redis connection of its channels: keep what arrives from now
        on until :meth:`release_held`, so that what the history gives back for the time between
        goes out first, and in order (only for an open websocket with positions)."""
        if self.labels is not None and self.early is None and self.held is None:
            self.held = []

    def release_held(self) -> list[Delivery]:
        """End :meth:`hold`: what arrived meanwhile, to deliver again after the history."""
        held, self.held = self.held or [], None
        self.outbox_bytes -= sum(len(delivery.data) for delivery in held)
        return held

    def position_of(self, channel: bytes) -> Position | None:
        """The last position this websocket got on ``channel``, if it asked for positions
        and has opened; what Redis delivers after that is new to it, and the rest is
        dropped here, so it can be handed what a resubscription may have missed."""
        if self.labels is None or self.early is not None:
            return None
        return self.positions.get(channel)

    def _started(self, start: Start) -> None:
        """Deliver what Redis delivered while the connection subscribed: past the seam with
        positions, and a command on its control channels closes it."""
        self.control = start.control
        self.stalled = False  # from now on the runtime says when its hand-over is blocked
        if self.early is None:
            return
        early, self.early = self.early, None
        self.outbox_bytes -= sum(len(delivery.data) for delivery in early)
        if self.labels is not None:
            self.labels, self.positions = start.labels or {}, dict(start.positions)
        for delivery in early:
            self.deliver(delivery)

    def send(self, message: bytes) -> None:
        """Queue a message for the client (persisted messages, heartbeats)."""
        self.push(message, self._item(message))

    def take_outbox(self) -> list[bytes]:
        """Hand over the queued messages, in order, and start a new queue."""
        self.stats.bytes_out += self.outbox_bytes
        messages, self.outbox, self.outbox_bytes = self.outbox, [], 0
        return messages

    def written(self, now: float) -> None:
        """What the runtime took went out to the client at ``now``: the heartbeat waits
        again, and the hand-over is no longer stalled."""
        self.last_sent_at = now
        self.stalled = False

    def backlogged(self, unsent: int) -> bool:
        """``unsent`` bytes wait in the runtime's own buffers; True when that is over
        ``max_buffer`` and the client was failed with 1008."""
        if unsent > self.max_buffer:
            self.fail(Failure.TOO_SLOW)
            return True
        return False

    def opened(self, start: Start) -> None:
        """The connection is subscribed: the persisted messages go first, then whatever
        Redis delivered while subscribing."""
        self.outbox[:0] = start.messages
        self.outbox_bytes += sum(map(len, start.messages))
        self._started(start)

    # -- heartbeat ---------------------------------------------------------------------------

    def next_tick(self) -> float | None:
        """When :meth:`tick` has something to do next (monotonic seconds), or None."""
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
        """True once the connection is to end (or, framed, before it is open)."""
        return not self.sending

    def fail(self, failure: Failure) -> None:
        """End the connection with ``failure``; what the client had not read is dropped."""
        if self.failure is None:
            if not self.framed:  # a framed relay counts the close frame it sends
                self.stats.closes[failure.code] += 1
            self.failure = failure
            self.outbox, self.outbox_bytes = [], 0
        self.sending = False


class FramedRelay(Relay):
    """A :class:`Relay` that also frames: for runtimes that read and write the socket."""

    framed = True

    __slots__ = (
        "_close_counted",
        "_control",
        "_control_bytes",
        "_fragment_opcode",
        "_fragments",
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
        **options: object,
    ) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.protocol = protocol
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
            assert isinstance(frame, Frame)  # an open protocol parses frames only
            message = self._assemble(frame)
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
        data: bytes = frame.data  # type: ignore[assignment]  # parsed frames hold bytes
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
        frames = [frame_message(message) for message in start.messages]
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
