"""Many facilities on one websocket: the ``ws4redis.v1`` protocol, without I/O
(``docs/reference.md#many-facilities-on-one-websocket``).

A client that offers the subprotocol ``ws4redis.v1``
(:data:`~ws4redis.core.handshake.SUBPROTOCOL`) opens one connection to ``WEBSOCKET_URL``
and subscribes facilities by message. Each facility of it is a relay of
its own (:class:`FacilityRelay`), a sink of the hub like any websocket: echo, positions,
recovery, control channels and bounds all stay the rules of :class:`~ws4redis.core.relay.Relay`,
written once. What a facility relay queues is already the connection's wire format (its
JSON, framed by the connection's transport), so the connection's relay only takes it over
(:meth:`~ws4redis.core.relay.Relay.forward`).

Here: what a client's request says (:func:`parse_request`, which trusts nothing of it), the
answers (:func:`answer`), the encoder of each facility's messages, and the bookkeeping of
one connection's facilities and requests (:class:`Multiplex`). The runtimes run the
requests: checking a subscription needs Django (:mod:`ws4redis.runtimes.facilities`).
"""

from __future__ import annotations

import functools
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Encoder, FailureKind, Relay
from ws4redis.core.stats import Stats

KINDS = ("subscribe", "unsubscribe", "publish", "call")
"""What a client may ask."""
QUEUED = ("subscribe", "unsubscribe")
"""Requests answered in order, one at a time: each changes the connection's facilities."""
MAX_KEYS = 16
"""Channel keys one subscription may name (there are nine, and ``echo``)."""
MAX_ID = 64
"""The longest text id a request may carry (numbers are taken as they are)."""
MAX_NAME = 100
"""The longest call name."""

Id = int | str | None


class RequestError(Exception):
    """A request that is answered with an error: ``status`` as in HTTP, ``reason`` for
    people; ``id`` and ``facility`` as far as they could be read."""

    def __init__(self, status: int, reason: str, id: Id = None, facility: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.id, self.facility = status, reason, id, facility

    def answer(self) -> bytes:
        return answer("error", self.id, self.facility, status=self.status, reason=self.reason)


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a client, read and checked for shape (not yet for permission)."""

    kind: str
    id: Id
    facility: str
    keys: tuple[str, ...] = ()
    since: str = ""
    name: str = ""
    data: Any = None
    """For ``publish`` the text to publish; for ``call`` any JSON value."""


def parse_request(message: bytes, max_facility_length: int, max_since: int) -> Request:
    """What ``message`` asks; :class:`RequestError` (400) names what is wrong with it.

    Every field is what an anonymous client chose: its type and size are checked here,
    before any of it reaches Django or Redis (the facility is part of every Redis name the
    subscription makes, and ``since`` reaches a script)."""
    try:
        fields = json.loads(message)
    except ValueError:
        raise RequestError(400, "a request is a JSON object") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "a request is a JSON object")
    request_id = fields.get("id")
    if not (
        request_id is None
        or (isinstance(request_id, int) and not isinstance(request_id, bool))
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID)
    ):
        raise RequestError(400, f"id is a number or a text of at most {MAX_ID} characters")
    kind = fields.get("type")
    if kind not in KINDS:
        raise RequestError(400, f"type is one of {', '.join(KINDS)}", request_id)
    facility = fields.get("facility")
    if not isinstance(facility, str) or not facility:
        raise RequestError(400, "facility is a non-empty text", request_id)
    if len(facility.encode()) > max_facility_length or "/" in facility:
        raise RequestError(
            400,
            f"facility is at most {max_facility_length} bytes (WS4REDIS_MAX_FACILITY_LENGTH),"
            " without '/'",
            request_id,
        )
    if kind == "subscribe":
        keys, since = fields.get("keys", []), fields.get("since", "")
        if not (isinstance(keys, list) and len(keys) <= MAX_KEYS):
            raise RequestError(400, f"keys is a list of at most {MAX_KEYS}", request_id, facility)
        if not all(isinstance(key, str) and len(key) <= 32 for key in keys):
            raise RequestError(400, "keys are channel keys", request_id, facility)
        if not isinstance(since, str) or len(since) > max_since:
            raise RequestError(400, f"since is a text of at most {max_since} characters",
                               request_id, facility)  # fmt: skip
        return Request(kind, request_id, facility, tuple(keys), since)
    if kind == "publish":
        data = fields.get("data")
        if not isinstance(data, str):
            raise RequestError(400, "data is a text", request_id, facility)
        return Request(kind, request_id, facility, data=data)
    if kind == "call":
        name = fields.get("name", "")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise RequestError(400, f"name is a text of at most {MAX_NAME} characters",
                               request_id, facility)  # fmt: skip
        return Request(kind, request_id, facility, name=name, data=fields.get("data"))
    return Request(kind, request_id, facility)


def answer(kind: str, request_id: Id, facility: str | None, **fields: Any) -> bytes:
    """A message of the server about a request or a facility (not a message of a channel)."""
    message = {"type": kind, "id": request_id, "facility": facility, **fields}
    return json.dumps(message, separators=(",", ":")).encode()


@functools.lru_cache(maxsize=1024)
def facility_encoder(facility: str, encode: Encoder) -> Encoder:
    """How the messages of ``facility`` go to a connection whose transport encodes with
    ``encode``: the JSON a relay with positions makes (always an object), with the type
    and the facility put in front. One per facility and transport, so that a message is
    encoded once for every connection that hears it
    (:func:`~ws4redis.core.relay.encoded`)."""
    head = b'{"type":"message","facility":' + json.dumps(facility).encode() + b","

    def encoder(payload: bytes) -> bytes:
        return encode(head + payload[1:])

    return encoder


class FacilityRelay(Relay):
    """The relay of one facility of a ``ws4redis.v1`` connection: a relay with positions
    whose outbox the connection's relay takes over (it is never written by itself)."""

    __slots__ = ("encode",)  # per facility, not per class


def facility_relay(accepted: Accepted, now: float, stats: Stats, encode: Encoder) -> FacilityRelay:
    """The relay of the facility ``accepted`` subscribed, on a connection whose transport
    encodes with ``encode``: with positions (every message is JSON there), without a
    heartbeat (the connection has one)."""
    limits = {**accepted.limits(now, stats), "heartbeat": None, "positions": True}
    relay = FacilityRelay(**limits)
    relay.encode = facility_encoder(accepted.facility, encode)
    return relay


Sink = TypeVar("Sink")


class Multiplex(Generic[Sink]):
    """The facilities of one connection (each a runtime's sink with a
    :class:`FacilityRelay`) and its requests that wait for their turn.

    Subscribing and unsubscribing run one at a time, in the order asked, and at most
    ``max_facilities`` of them may wait; so may at most ``max_facilities`` facilities be
    subscribed. Publishing and calls go to their facility at once, in order.
    """

    def __init__(self, max_facilities: int, max_facility_length: int, max_since: int) -> None:
        self.max_facilities = max_facilities
        self.limits = (max_facility_length, max_since)
        """What :func:`parse_request` allows: the longest facility and ``since``."""
        self.facilities: dict[str, Sink] = {}
        self.waiting: deque[Request] = deque()
        self.busy = False
        """A subscribe or unsubscribe is under way."""

    def read(self, message: bytes) -> Request:
        """What the client's ``message`` asks (see :func:`parse_request`)."""
        return parse_request(message, *self.limits)

    def take(self, request: Request) -> None:
        """Queue a subscribe or unsubscribe; RequestError (429) when too many wait."""
        if len(self.waiting) >= self.max_facilities:
            raise RequestError(429, "too many requests waiting", request.id, request.facility)
        self.waiting.append(request)

    def next(self) -> Request | None:
        """The request whose turn it is, if none is under way (it is then under way)."""
        if self.busy or not self.waiting:
            return None
        self.busy = True
        return self.waiting.popleft()

    def done(self) -> None:
        """The request under way is answered."""
        self.busy = False

    def check_subscribe(self, request: Request) -> None:
        """RequestError unless ``request`` may subscribe now (409 subscribed already, 429
        as many facilities as allowed)."""
        if request.facility in self.facilities:
            raise RequestError(409, "subscribed already", request.id, request.facility)
        if len(self.facilities) >= self.max_facilities:
            raise RequestError(
                429,
                f"at most {self.max_facilities} facilities (WS4REDIS_MAX_FACILITIES)",
                request.id,
                request.facility,
            )

    def subscribed(self, request: Request) -> Sink:
        """The sink of the facility ``request`` names; RequestError (404) if none."""
        sink = self.facilities.get(request.facility)
        if sink is None:
            raise RequestError(404, "not subscribed", request.id, request.facility)
        return sink


def through_hook(request: Request, publishes: bool, hooked: bool) -> bool:
    """Whether ``request`` (a publish or a call) goes to its facility's hook (True) or is
    published as sent (False): RequestError (404) when neither may be, for a publish on a
    facility whose keys publish nowhere, or a call where no hook answers."""
    if request.kind == "publish" and not publishes:
        raise RequestError(404, "its keys publish nowhere", request.id, request.facility)
    if request.kind == "call" and not hooked:
        raise RequestError(404, "no hook answers calls here", request.id, request.facility)
    return hooked


def forward(connection: Relay, facility: Relay, ended: Callable[[], None]) -> bool:
    """Hand what ``facility`` queued to the ``connection``'s relay; True when the
    connection must be written. A facility Django unsubscribed
    (:attr:`~ws4redis.core.relay.FailureKind.UNSUBSCRIBED`) ends alone: ``ended`` is
    called for the runtime to release it and tell the client; any other failure (Django
    ended the session, or a backlog) fails the connection."""
    failure = facility.failure
    if failure is not None:
        if failure.kind is FailureKind.UNSUBSCRIBED:
            ended()
        else:
            connection.fail(failure)
        return True
    items, facility.outbox, facility.outbox_bytes = facility.outbox, [], 0
    return connection.forward(items)
