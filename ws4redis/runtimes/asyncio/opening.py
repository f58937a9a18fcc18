"""The asyncio model's one opening sequence, for ``runwebsocket`` and ASGI servers.

Open (:func:`ws4redis.runtimes.opening.open_connection`), make the relay, subscribe through
the loop's hub; the runtime then answers the rejection or opens the websocket with the
:class:`~ws4redis.core.relay.Start` it gets. Deciding may wait for the database, so the
whole sequence runs in a thread (:func:`open_in_thread`), unless the runtime knows it cannot
block and subscribes on the loop itself (``runwebsocket``'s shared reads, see
:func:`decide`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any, Protocol

from django.http import HttpRequest

from ws4redis.core.handshake import Rejection
from ws4redis.core.opening import Accepted
from ws4redis.core.relay import Start
from ws4redis.core.stats import STATS
from ws4redis.runtimes.asyncio.hooks import Hooked
from ws4redis.runtimes.asyncio.hub import HubSubscription
from ws4redis.runtimes.hooks import opening_hook
from ws4redis.runtimes.opening import open_connection
from ws4redis.runtimes.redis_side import subscribe
from ws4redis.subscriber import RedisSubscriber

GONE = Rejection(400, "The client went away.\n")
"""What opening a connection whose client already left comes to (nobody reads it)."""


class Opening(Protocol):
    """A websocket being opened, as the sequence fills it in: its relay (made before the
    subscriptions, so that what Redis delivers meanwhile waits in it) and its subscriber."""

    relay: Any
    """A :class:`~ws4redis.core.relay.Relay` once made: a ``FramedRelay`` where the
    runtime owns the socket, which each runtime's attribute says (hence not typed here)."""
    subscriber: RedisSubscriber | None
    hooked: Hooked | None
    """Its facility's hook, if it has one (set with the relay)."""

    def gone(self) -> bool:
        """Whether the client already left (the work is skipped)."""
        ...

    def new_subscription(self) -> HubSubscription:
        """Its subscription through the loop's hub (the hub was got on the loop)."""
        ...

    def multiplexed(self, accepted: Accepted) -> None:
        """The client speaks ``ws4redis.v1``: it gets its facilities (before anything it
        sends is read)."""
        ...


def decide(request: HttpRequest, opening: Opening, *, framing: bool) -> Accepted | Rejection:
    """Open ``request`` and give ``opening`` its relay; blocks unless
    :func:`~ws4redis.runtimes.opening.may_block` said it cannot."""
    outcome = open_connection(request, framing=framing)
    if isinstance(outcome, Accepted):
        opening.relay = outcome.relay(time.monotonic(), STATS)
        if outcome.multiplex:
            opening.multiplexed(outcome)
        elif (hook := opening_hook(outcome)) is not None:
            opening.hooked = Hooked(hook)
    return outcome


def subscribed(accepted: Accepted, opening: Opening) -> Rejection | Start:
    """In a thread: subscribe an accepted connection; what the client gets first."""
    started = subscribe(accepted, opening.new_subscription)
    if isinstance(started, Rejection):
        return started
    opening.subscriber, start = started
    return start


def open_blocking(request: HttpRequest, opening: Opening, framing: bool) -> Rejection | Start:
    """In a thread: the whole sequence."""
    if opening.gone():
        return GONE  # the client left while this waited for a thread: skip the work
    outcome = decide(request, opening, framing=framing)
    return subscribed(outcome, opening) if isinstance(outcome, Accepted) else outcome


def open_in_thread(
    request: HttpRequest, opening: Opening, *, framing: bool, executor: Executor | None = None
) -> asyncio.Future[Rejection | Start]:
    """The whole sequence in one trip to a thread of ``executor`` (the loop's default
    without one)."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(executor, open_blocking, request, opening, framing)
