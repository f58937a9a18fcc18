"""What happens on one open connection, without doing any I/O.

:class:`Relay` holds the rules of one connection (see ``docs/reference.md#relaying``): which
client messages are published, the echo rule, when the heartbeat is due, how much may wait
for a client that does not read, and which close code ends the connection. How the bytes
look on the wire is a transport's business, a subclass in a module of its own (the
websocket framing: :mod:`ws4redis.core.websocket`); ASGI servers frame for us, so the ASGI
runtime uses :class:`Relay` itself and sends what it takes from the outbox.
"""

from __future__ import annotations

import enum
import json
import logging
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.frames import CloseCode

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
UNSUBSCRIBED = 4004
"""Close code (or, on a ``ws4redis.v1`` connection, code of the ``unsubscribed`` notice) when
Django unsubscribed a facility: see :func:`ws4redis.unsubscribe`."""
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
    """Django ended the websocket's session or user (a 4000-4999 code, :class:`Control`)."""
    UNSUBSCRIBED = enum.auto()
    """Django unsubscribed its facility (a 4000-4999 code, :class:`Control`): a
    one-facility websocket closes, a ``ws4redis.v1`` connection drops that facility."""


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


@dataclass(frozen=True, slots=True)
class Control:
    """What Django asks of the websockets a control channel reaches (a session's, a user's):
    to close with ``failure``, on ``facility`` only or (None) on every facility; or, when
    the failure is :attr:`FailureKind.UNSUBSCRIBED`, to drop that facility. The one place
    its bytes are written (:meth:`encode`, by :mod:`ws4redis.control`) and read
    (:meth:`decode`, by every relay)."""

    failure: Failure
    facility: str | None = None

    def encode(self) -> bytes:
        unsubscribe = self.failure.kind is FailureKind.UNSUBSCRIBED
        return json.dumps(
            {
                "code": self.failure.code,
                "reason": self.failure.reason,
                "facility": self.facility,
                "unsubscribe": unsubscribe,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Control:
        """Never raises: only Django publishes on control channels, so what cannot be read
        (or a code outside 4000-4999) still ends the websocket, with
        :data:`Failure.SESSION_ENDED`, on every facility."""
        try:
            fields = json.loads(data)
            code, reason, facility = fields["code"], fields["reason"], fields["facility"]
        except (ValueError, TypeError, KeyError):
            return cls(Failure.SESSION_ENDED)
        if not (isinstance(code, int) and 4000 <= code <= 4999 and isinstance(reason, str)):
            return cls(Failure.SESSION_ENDED)
        if facility is not None and not isinstance(facility, str):
            return cls(Failure.SESSION_ENDED)
        unsubscribe = fields.get("unsubscribe") is True and facility is not None
        kind = FailureKind.UNSUBSCRIBED if unsubscribe else FailureKind.ENDED
        # a close reason has 123 bytes at most: 120 characters of it, cut where UTF-8 allows
        reason = reason.encode()[:120].decode("utf-8", "ignore")
        return cls(Failure(code, reason, kind), facility)


NO_POSITIONS: dict[bytes, Position] = {}
"""The positions of every relay without positions (see :meth:`Relay._deliver_positioned`)."""
Encoder = Callable[[bytes], bytes]
"""How a transport turns one message into what its outbox holds (a frame, an event)."""


def as_is(message: bytes) -> bytes:
    """The encoder of a server that frames messages itself (ASGI): the message."""
    return message


class Delivery:
    """One message Redis delivered on one channel, prepared once for every local websocket.

    ``data`` is what Redis delivered, byte for byte: on a facility without history or
    presence that is what its websockets get, whatever it looks like. On the others, where
    every message travels in an envelope, :meth:`opened` reads it once, for all of them.
    Nothing here raises on what arrived: the hubs build one per message of their reader.
    """

    __slots__ = ("_announced", "_opened", "channel", "data", "encoded", "encoder", "other")

    origin = SERVER
    position: Position | None = None

    def __init__(self, channel: bytes, raw: bytes) -> None:
        self.channel = channel
        self.data = raw
        self.encoder: Encoder | None = None
        self.encoded = b""
        self.other: tuple[Encoder, bytes] | None = None
        self._opened: Opened | bool | None = False  # False: not read yet
        self._announced: bytes | bool | None = False  # False: not read yet

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

    def announced(self, data: bytes, encode: Encoder) -> bytes | None:
        """A presence announcement ``data`` (what :meth:`opened` found) as the clients that
        get JSON receive it, as ``encode`` makes it: read and encoded once for all the
        clients of one transport (a diff reaches every member). None if it is none."""
        if self._announced is False:
            self._announced = announcement_wire(data)
        if self._announced is None:
            return None
        return cached(self, self._announced, encode)  # type: ignore[arg-type]


Message = Delivery | Opened
"""A message as a relay queues it: a delivery as it arrived, or what its envelope held."""


def encoded(message: Message, encode: Encoder) -> bytes:
    """``message`` as ``encode`` makes it: built once, when the first websocket of that
    transport needs it, then shared by all of them (a message reaches thousands)."""
    if message.encoder is encode:  # every websocket but the first
        return message.encoded
    return cached(message, message.data, encode)


def cached(message: Message, data: bytes, encode: Encoder) -> bytes:
    """``data`` of ``message`` as ``encode`` makes it, kept for two encoders: the
    websockets of one facility may take turns between two transports (compressed and
    not), and one slot would build the message again at each turn."""
    if message.encoder is encode:
        return message.encoded
    other = message.other
    if other is not None and other[0] is encode:
        return other[1]
    made = encode(data)
    if message.encoder is not None:
        message.other = (message.encoder, message.encoded)
    message.encoded, message.encoder = made, encode
    return made


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
    """Its control channels: a :class:`Control` there closes it."""


class Relay:
    """Per-connection rules between a client and its Redis channels, and the transport of
    servers that frame messages themselves (ASGI): its outbox holds the messages.

    The rules are written once, here; a transport is a subclass that says how the client
    gets messages, by overriding only these: :attr:`encode` (one message as the outbox
    holds it, shared by every client of that transport), :meth:`opened` (what goes out
    before the first message, such as a handshake response), :meth:`next_tick` and
    :meth:`tick` (its keepalive), :meth:`fail` and :meth:`_failed` (how it ends and counts
    its close), and, for the runtimes that own the socket, the five methods of
    :class:`SocketRelay` that move its bytes. ``failure`` is the :class:`Failure` once the
    connection must end.
    ``stats`` is where it counts (the runtime's; the core imports no process-wide counts).
    Slots: a process holds one relay per client, tens of thousands of them.
    """

    encode: Encoder = staticmethod(as_is)
    """What the outbox holds for one message."""

    __slots__ = (
        "control",
        "early",
        "echo",
        "enveloped",
        "facility",
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
        facility: str = "",
    ) -> None:
        self.stats = stats
        self.facility = facility
        """Its facility: a :class:`Control` for another facility passes it by."""
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

    def admit(self, messages: list[bytes], limits: PendingLimits) -> int:
        """How many of ``messages`` from this client, the first ones in order, may join what
        waits for Redis: the ``waiting`` messages and ``waiting_bytes`` of the whole process,
        and this client's own ``pending_bytes``, each stay within its bound (messages or
        bytes per process, bytes per client). Those count as this client's until
        :meth:`published`. When not all fit, the client is failed with 1013 (try again
        later) and the rest is not queued, so a stalled Redis cannot grow the process, nor
        one client take the whole queue; what one read brought in is cut at the bound, not
        refused whole, so what fitted still goes out in order."""
        waiting, waiting_bytes, pending = limits.waiting, limits.waiting_bytes, self.pending_bytes
        admitted = 0
        for message in messages:
            size = len(message)
            waiting += 1
            waiting_bytes += size
            pending += size
            if (
                waiting > self.max_pending
                or waiting_bytes > limits.max_bytes
                or pending > self.max_pending_bytes
            ):
                self.fail(Failure.BACKED_UP)
                break
            admitted += 1
            self.pending_bytes = pending
        return admitted

    def published(self, size: int, failure: int | None) -> None:
        """Messages of ``size`` bytes handed over by :meth:`admit` are done: published,
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

    def forward(self, items: list[bytes]) -> bool:
        """Queue ``items`` another relay already encoded for this connection (a facility of
        a ``ws4redis.v1`` connection, :mod:`ws4redis.core.facilities`, which applied its
        own echo rule); bounded as :meth:`push`. True when the runtime must write."""
        if self.failure is not None or not items:
            return False
        was_empty = not self.outbox
        self.outbox.extend(items)
        self.outbox_bytes += sum(map(len, items))
        if self.outbox_bytes > self.max_buffer and self._over_bound():
            return True
        return was_empty

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
        """Queue what Redis delivered (see :meth:`push`), as :attr:`encode` makes it (built
        once for all the clients of one transport). Presence announcements go only to clients that
        get JSON messages, where they are told apart by their channel name: in a plain
        stream they could not be told from a client's message of the same text."""
        if self.control and delivery.channel in self.control:  # Django ended its session
            command = Control.decode(delivery.data)
            if command.facility is not None and command.facility != self.facility:
                return False
            self.fail(command.failure)
            return True
        if self.labels is not None or self.early is not None:
            return self._deliver_positioned(delivery)  # with positions, or still subscribing
        if not self.enveloped:  # the hot path: what Redis delivered is what goes out
            return self.push(delivery.data, encoded(delivery, self.encode))
        message = delivery.opened(self.stats)
        if message is None or message.origin == PRESENCE:
            return False
        return self.push(message.data, encoded(message, self.encode))

    def direct(self, delivery: Delivery, now: float) -> bytes | None:
        """What to write at ``now`` for ``delivery`` without queueing it, when the runtime
        can write at once (its hub brought this one message in this round of the loop):
        the frame (counted as sent), when nothing waits before it in the outbox and the
        plain path of :meth:`deliver` applies as it stands. None, changing nothing: the
        runtime queues it with :meth:`deliver` instead, which applies every other rule (a
        command of Django's, positions, an envelope, the echo, the bounds).

        The steady stream's hot path: one call per message and websocket.
        """
        if (
            self.outbox
            or not self.sending  # also after a failure: fail() stops the sending
            or self.enveloped
            or self.labels is not None
            or self.early is not None
            or (self.control and delivery.channel in self.control)
        ):
            return None
        if not self.echo and delivery.data == self.last_received:  # push()'s echo rule
            return None
        encode = self.encode
        frame = delivery.encoded if delivery.encoder is encode else encoded(delivery, encode)
        size = len(frame)
        if size > self.max_buffer:
            return None
        self.last_sent_at = now
        self.stats.bytes_out += size
        return frame

    def _read(self, delivery: Delivery) -> Message | None:
        """What ``delivery`` carries for this websocket (None: it cannot be read)."""
        return delivery.opened(self.stats) if self.enveloped else delivery

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
            wake = self.push(b"", self.encode(marker(name, before)))
        if message.origin == PRESENCE:  # the same for every member: encoded once
            announced = delivery.announced(message.data, self.encode)
            return wake if announced is None else self.push(message.data, announced) or wake
        payload = wire(name, message.data, position, message.origin)
        return self.push(message.data, self._encode_positioned(payload)) or wake

    def _encode_positioned(self, payload: bytes) -> bytes:
        """One message for a client with positions, as the outbox holds it (a transport
        may add where the stream stands: see :mod:`ws4redis.core.events`)."""
        return self.encode(payload)

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
        self.push(message, self.encode(message))

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
        messages = [self.encode(message) for message in start.messages]
        self.outbox[:0] = messages
        self.outbox_bytes += sum(map(len, messages))
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
    def behind(self) -> bool:
        """Failed for not reading: the runtime cuts the connection off, since the client
        cannot even take its close frame."""
        return self.failure is not None and self.failure.kind is FailureKind.TOO_SLOW

    @property
    def closing(self) -> bool:
        """True once the connection is to end (or, for a transport with a handshake, before
        it is open)."""
        return not self.sending

    def fail(self, failure: Failure) -> None:
        """End the connection with ``failure``; what the client had not read is dropped."""
        if self.failure is None:
            self._failed(failure.code)
            self.failure = failure
            self.outbox, self.outbox_bytes = [], 0
        self.sending = False

    def _failed(self, code: int) -> None:
        """Count the close ``code`` the server decided (once per connection)."""
        self.stats.closes[code] += 1


class SocketRelay(Relay, metaclass=ABCMeta):
    """A transport for the runtimes that own the client's socket (runwebsocket, runserver,
    uWSGI): they feed it what they read and write what it hands out, and know nothing of
    the wire format. The websocket framing is one (:class:`~ws4redis.core.websocket.FramedRelay`);
    another plugs into those runtimes by implementing these five methods."""

    __slots__ = ()

    @abstractmethod
    def receive_data(self, data: bytes) -> list[bytes]:
        """Bytes read from the client: the messages to publish, in order."""

    @abstractmethod
    def receive_eof(self) -> None:
        """The client closed its side of the connection."""

    @abstractmethod
    def frames_to_write(self, now: float) -> bytes | None:
        """The queued messages as one chunk to write at ``now``; None once closing (then
        :meth:`data_to_send` says what is left to write)."""

    @abstractmethod
    def data_to_send(self) -> list[bytes]:
        """Everything to write, in order; an empty ``b""`` means: shut down the write side."""

    @abstractmethod
    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """End the connection from the server's side, the transport's way."""
