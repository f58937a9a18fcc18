"""Subscribing a facility on an open ``ws4redis.v1`` connection, above the core
(``docs/reference.md#many-facilities-on-one-websocket``).

A subscription is an opening without the handshake: the same rules
(:func:`ws4redis.runtimes.opening.permitted`), with the session and user as Django has them
now, and the same subscribing (:func:`ws4redis.runtimes.redis_side.subscribe`). Blocking:
asyncio runtimes call :func:`open_facility` in a thread.
"""

from __future__ import annotations

import time
from typing import Any

from ws4redis.core.facilities import (
    FacilityRelay,
    Multiplex,
    Request,
    RequestError,
    facility_relay,
)
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Encoder, Start
from ws4redis.core.stats import Stats
from ws4redis.runtimes.hooks import Hook, hook_for
from ws4redis.runtimes.opening import facility_request, identify, permitted, refusal_for
from ws4redis.runtimes.redis_side import subscribe
from ws4redis.subscriber import PubSubFactory, RedisSubscriber
from ws4redis.tokens import QUERY_KEY


class FacilitySink:
    """One facility of a connection, as the hub sees it: a sink with its own relay (made
    before it subscribes, so that what Redis delivers meanwhile waits in it) and its hook.
    Each runtime's subclass says how what it queues reaches the connection."""

    __slots__ = ("facilities", "hook", "name", "relay", "subscriber")

    def __init__(self, facilities: Any, name: str) -> None:
        self.facilities = facilities
        """The runtime's facilities of the connection."""
        self.name = name
        self.relay: FacilityRelay | None = None
        self.hook: Hook | None = None
        self.subscriber: RedisSubscriber | None = None


def new_multiplex(accepted: Accepted) -> Multiplex[Any]:
    """The bookkeeping of a ``ws4redis.v1`` connection's facilities, with its limits."""
    options = accepted.options
    handshake = options.handshake
    return Multiplex(
        options.max_facilities, handshake.max_facility_length, handshake.max_query_size
    )


def open_facility(
    connection: Accepted,
    request: Request,
    sink: FacilitySink,
    subscription: PubSubFactory,
    stats: Stats,
    encode: Encoder,
) -> tuple[RedisSubscriber, Start]:
    """Check and subscribe the facility ``request`` asks for on ``connection``, for
    ``sink`` (given its relay, encoding with the connection's ``encode``); RequestError
    says why not (the status an opening would have had)."""
    facility = request.facility
    django_request = facility_request(connection.request, facility)
    fields: dict[str, Any] = dict.fromkeys(request.keys, "")
    fields.update(recover="", since=request.since)  # every facility's messages are JSON here
    try:
        token = connection.request.GET.get(QUERY_KEY)
        grant = identify(django_request, token, connection.grant)
        channels, echo, since = permitted(django_request, grant, facility, fields)
    except Exception as exc:
        rejection = refusal_for(exc)
        if rejection is None:
            raise
        raise RequestError(rejection.status, rejection.text.strip(), request.id, facility) from exc
    accepted = Accepted(django_request, facility, channels, echo, connection.options, since)
    sink.relay = facility_relay(accepted, time.monotonic(), stats, encode)
    if (function := hook_for(facility)) is not None:
        sink.hook = Hook(function, django_request, facility, token, connection.grant)
    started = subscribe(accepted, subscription)
    if isinstance(started, tuple):
        return started
    raise RequestError(started.status, started.text.strip(), request.id, facility)
