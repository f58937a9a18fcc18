"""From a checked upgrade to an accepted connection (``docs/reference.md#opening-a-websocket``).

protocol checks -> identify -> parse keys -> ``WS4REDIS_ALLOWED_CHANNELS`` ->
``WS4REDIS_PERMISSIONS`` -> handshake.
Identifying the request and the project's callbacks need Django and may block:
:func:`ws4redis.runtimes.opening.open_connection` runs them and reads the settings into
:class:`Options`; here are the parts that need neither: which channel keys the query asks
for, the handshake's outcome, and the relay with the limits of the options.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from websockets.http11 import Response
from websockets.server import ServerProtocol

from ws4redis.core.events import EventRelay, EventStreamRelay
from ws4redis.core.handshake import HandshakeOptions, Rejection, Upgrade, negotiate
from ws4redis.core.history import Position, enveloped_facility, parse_since
from ws4redis.core.names import CHANNEL_KEYS
from ws4redis.core.relay import Relay
from ws4redis.core.stats import Stats
from ws4redis.core.websocket import FramedRelay


class TooManyChannels(ValueError):
    """A websocket would subscribe and publish to more than ``WS4REDIS_MAX_CHANNELS``
    (``limit``) channels (a user in very many groups, say): refused with 400 before
    anything is subscribed, since each channel costs the process a subscription and every
    message the client sends one publish per channel."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"This websocket would use {count} channels, more than WS4REDIS_MAX_CHANNELS ({limit})."
        )

    @classmethod
    def check(cls, count: int, limit: int) -> None:
        """Raise for ``count`` channels over ``limit``."""
        if count > limit:
            raise cls(count, limit)


@dataclass(frozen=True, slots=True)
class Options:
    """The settings an opening and its relay apply, read once per opening (so
    ``override_settings`` holds in tests) by :func:`ws4redis.runtimes.opening.read_options`."""

    handshake: HandshakeOptions
    heartbeat: str | None
    max_message_size: int
    max_buffer: int
    max_backlog: int
    max_pending: int
    max_client_pending_bytes: int
    ping_interval: float | None
    ping_timeout: float
    history: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """``WS4REDIS_HISTORY``."""
    presence: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    """``WS4REDIS_PRESENCE``."""
    max_facilities: int = 16
    """``WS4REDIS_MAX_FACILITIES``: facilities of one ``ws4redis.v1`` connection."""
    compression: bool = True
    """``WS4REDIS_COMPRESSION``: ``permessage-deflate`` for the websockets that offer it."""
    compress_min_size: int = 256
    """``WS4REDIS_COMPRESSION_MIN_SIZE``: shorter messages go uncompressed."""


def requested_keys(keys: Iterable[str]) -> tuple[list[str], bool]:
    """The channel keys among the query's ``keys`` (case-insensitive, unknown ones
    ignored) and whether ``echo`` was asked for."""
    wanted = {key.strip().lower() for key in keys}
    return sorted(wanted & CHANNEL_KEYS), "echo" in wanted


def requested_positions(fields: Mapping[str, str]) -> dict[str, Position] | None:
    """With the ``recover`` key the client gets positions (``docs/reference.md#history``);
    ``since`` names where it resumes. None without ``recover``; ValueError if ``since`` is
    malformed."""
    if not any(key.strip().lower() == "recover" for key in fields):
        return None
    return parse_since(fields.get("since", ""))


@dataclass
class Accepted:
    """A request that passed every check; nothing is sent to the client yet.

    ``protocol`` and ``response`` are the handshake, for runtimes that own the socket; ASGI
    servers do their own handshake, so they have none. ``request`` is the runtime's
    request, handed on to the subscriber; the core never reads it.
    """

    request: Any
    facility: str
    channels: list[str]
    echo: bool
    options: Options
    since: dict[str, Position] | None = None
    """With the ``recover`` key: the positions the client resumes from, by channel label."""
    protocol: ServerProtocol | None = None
    response: Response | None = None
    multiplex: bool = False
    """The client speaks ``ws4redis.v1``: its facilities come by message
    (:mod:`ws4redis.core.facilities`)."""
    grant: Any = None
    """What its connection token grants (a :class:`ws4redis.tokens.Grant`), if it has one:
    its facilities' subscriptions are checked against it."""
    events: bool = False
    """An event stream instead of a websocket (:mod:`ws4redis.core.events`)."""
    owns_socket: bool = False
    """The runtime writes the socket itself (set by :func:`accept`)."""
    origin: str | None = None
    """The ``Origin`` the opening allowed, if the request had one (an event stream's
    answer lets that origin read it)."""

    def limits(self, now: float, stats: Stats) -> dict[str, Any]:
        """The keyword arguments of its relay: the limits of the options, counting into
        ``stats``."""
        options = self.options
        return {
            "echo": self.echo,
            "heartbeat": options.heartbeat,
            "now": now,
            "stats": stats,
            "max_size": options.max_message_size,
            "max_buffer": options.max_buffer,
            "max_backlog": options.max_backlog,
            "max_pending": options.max_pending,
            # at least one message of the largest size a client may send
            "max_pending_bytes": max(options.max_client_pending_bytes, options.max_message_size),
            "positions": self.since is not None,
            "enveloped": enveloped_facility(self.facility, options.history, options.presence),
            "facility": self.facility,
        }

    def relay(self, now: float, stats: Stats) -> Relay:
        """The relay of the connection, counting into ``stats``. For a runtime that owns
        the socket it frames, and the handshake response will be its first output."""
        limits = self.limits(now, stats)
        options = self.options
        if self.events and self.owns_socket:
            return EventStreamRelay(self.origin, **limits)
        if self.events:
            return EventRelay(**limits)
        if self.protocol is None or self.response is None:
            return Relay(**limits)
        return FramedRelay(
            self.protocol,
            self.response,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            compress_min_size=options.compress_min_size,
            **limits,
        )


def accept(upgrade: Upgrade, accepted: Accepted, *, framing: bool = True) -> Accepted | Rejection:
    """The last step of an opening: with ``framing`` (runtimes that own the socket) the
    handshake of ``upgrade``, which may still refuse (a bad key or version)."""
    accepted.owns_socket = framing
    if not framing or accepted.events:
        return accepted
    options = accepted.options
    protocol, response = negotiate(
        upgrade, options.max_message_size, compression=options.compression
    )
    if response.status_code != 101:
        return Rejection(response.status_code, (response.body or b"").decode())
    accepted.protocol, accepted.response = protocol, response
    return accepted


PER_CLIENT_HEADERS = frozenset(
    ["sec-websocket-key", "cookie", "user-agent", "accept-language", "accept-encoding",
     "cache-control", "pragma"]
)  # fmt: skip
"""Headers that differ from one browser to the next and that nothing before the handshake
reads once an opening is known to be anonymous (the key is the handshake's, made for each
opening; cookies count only for the session, which such an opening has none of)."""
DECISION_KEY_SIZE = 2048
"""Most characters a :func:`decision_key` may hold; a larger request is decided each time,
so a :class:`Kept` of decisions holds at most this much per entry."""


def decision_key(upgrade: Upgrade) -> Hashable | None:
    """All an anonymous opening's decision reads of ``upgrade`` (method, path, query, Host,
    scheme, the headers but :data:`PER_CLIENT_HEADERS`), as a key of kept decisions;
    None when over :data:`DECISION_KEY_SIZE`."""
    headers = tuple(
        (name, value)
        for name, value in upgrade.headers.raw_items()
        if name.lower() not in PER_CLIENT_HEADERS
    )
    size = len(upgrade.path) + len(upgrade.query) + len(upgrade.host or "")
    if size + sum(len(name) + len(value) for name, value in headers) > DECISION_KEY_SIZE:
        return None
    return upgrade.method, upgrade.path, upgrade.query, upgrade.host, upgrade.secure, headers


@dataclass(frozen=True, slots=True)
class Decided:
    """What a plain opening (one facility by URL, no positions, no token, no event stream)
    was decided: its facility, channel keys and echo."""

    facility: str
    channels: tuple[str, ...]
    echo: bool

    @classmethod
    def of(cls, accepted: Accepted) -> Decided | None:
        """What may be kept of ``accepted``: None unless it is a plain opening."""
        if accepted.multiplex or accepted.events or accepted.grant is not None:
            return None
        if accepted.since is not None:
            return None
        return cls(accepted.facility, tuple(accepted.channels), accepted.echo)

    def accepted(self, request: Any, options: Options) -> Accepted:
        """The same decision for another ``request`` of the same key."""
        return Accepted(request, self.facility, list(self.channels), self.echo, options)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Kept(Generic[K, V]):
    """Values that thousands of openings would each compute alike (an anonymous opening's
    decision by :func:`decision_key`, its channel names), kept by their key; the runtime
    makes a new one whenever the settings change.

    At most ``size``: once full, all are dropped before the next is kept, so a client that
    varies its requests to fill it only makes every opening compute its own, as without
    it; 0 keeps none. The blocking runtimes open in many threads, with no lock: each step
    is one dict operation, and threads keeping at the same instant may pass ``size`` by
    one each.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: K) -> V | None:
        """The value kept under ``key``, if any."""
        return self._kept.get(key)

    def keep(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key`` (emptied first when full)."""
        if self.size <= 0:
            return
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = value
