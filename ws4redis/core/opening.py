"""From an upgrade request to an accepted connection (``docs/reference.md#opening-a-websocket``).

protocol checks -> identify -> parse keys -> ``WS4REDIS_ALLOWED_CHANNELS`` ->
``WS4REDIS_PERMISSIONS`` -> handshake.
Runtimes call :func:`open_connection` (blocking: session and user lookups may query a
database, so asyncio runtimes run it in a thread), then subscribe through their hub
(:mod:`ws4redis.runtimes.opening`) and relay with :meth:`Accepted.relay`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module

from django.conf import settings as django_settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject
from websockets.http11 import Response
from websockets.server import ServerProtocol

from ws4redis import settings
from ws4redis.core.handshake import Rejection, check_request, negotiate
from ws4redis.core.history import Position, enveloped_facility, parse_since
from ws4redis.core.permissions import has_callable_rules, refused
from ws4redis.core.relay import Relay
from ws4redis.core.stats import STATS
from ws4redis.core.websocket import FramedRelay

logger = logging.getLogger("ws4redis")

SUBSCRIBE_KEYS = ("subscribe-session", "subscribe-group", "subscribe-user", "subscribe-broadcast")
PUBLISH_KEYS = ("publish-session", "publish-group", "publish-user", "publish-broadcast")
CHANNEL_KEYS = frozenset(SUBSCRIBE_KEYS + PUBLISH_KEYS)
"""The query keys that choose channels (``docs/reference.md#url-and-channel-keys``)."""


class TooManyChannels(ValueError):
    """A websocket would subscribe and publish to more than ``WS4REDIS_MAX_CHANNELS``
    channels (a user in very many groups, say): refused with 400 before anything is
    subscribed, since each channel costs the process a subscription and every message the
    client sends one publish per channel."""

    def __init__(self, count: int) -> None:
        limit = settings.WS4REDIS_MAX_CHANNELS
        super().__init__(
            f"This websocket would use {count} channels, more than WS4REDIS_MAX_CHANNELS ({limit})."
        )

    @classmethod
    def check(cls, count: int) -> None:
        """Raise for ``count`` channels over the limit."""
        if count > settings.WS4REDIS_MAX_CHANNELS:
            raise cls(count)


def identify(request: HttpRequest) -> None:
    """Attach ``session`` and ``user`` to ``request`` as Django's middleware would.

    ``WS4REDIS_PROCESS_REQUEST`` replaces the cookie-session default (tokens, custom auth).
    The user is loaded lazily: connections that never ask for user or group channels cost
    no database query.
    """
    process = settings.load_callable("WS4REDIS_PROCESS_REQUEST")
    if process is not None:
        process(request)
    else:
        engine = import_module(django_settings.SESSION_ENGINE)
        session_key = request.COOKIES.get(django_settings.SESSION_COOKIE_NAME)
        request.session = engine.SessionStore(session_key)
        request.user = SimpleLazyObject(lambda: get_user(request))
    if not hasattr(request, "user"):
        request.user = AnonymousUser()


def may_block(request: HttpRequest) -> bool:
    """Whether :func:`open_connection` may wait for I/O on ``request``: only a session
    cookie (its session and user are looked up), ``WS4REDIS_PROCESS_REQUEST`` or
    ``WS4REDIS_ALLOWED_CHANNELS`` (code of the project) can make it. Without them a runtime
    may open on its event loop, saving most connections a trip through a thread. (A
    session without a key is empty: Django's session stores load only for a key.)"""
    if settings.WS4REDIS_PROCESS_REQUEST or settings.WS4REDIS_ALLOWED_CHANNELS:
        return True
    if has_callable_rules():  # the project's code, like the callbacks above
        return True
    return django_settings.SESSION_COOKIE_NAME in request.COOKIES


def client_message_expiry() -> int:
    """Seconds a message sent by a client is stored: ``WS4REDIS_CLIENT_EXPIRE``, at most
    ``WS4REDIS_EXPIRE`` (0: not stored). Bounded by default because any client allowed to
    publish, anonymous ones included, can store a message under every facility it reaches."""
    return min(settings.WS4REDIS_EXPIRE or 0, settings.WS4REDIS_CLIENT_EXPIRE)


def requested_keys(request: HttpRequest) -> tuple[list[str], bool]:
    """The channel keys of the query string (case-insensitive, unknown ones ignored) and
    whether ``echo`` was asked for."""
    keys = {key.strip().lower() for key in request.GET}
    return sorted(keys & CHANNEL_KEYS), "echo" in keys


def requested_positions(request: HttpRequest) -> dict[str, Position] | None:
    """With the ``recover`` key the client gets positions (``docs/reference.md#history``);
    ``since`` names where it resumes. None without ``recover``; ValueError if ``since`` is
    malformed."""
    if not any(key.strip().lower() == "recover" for key in request.GET):
        return None
    return parse_since(request.GET.get("since", ""))


def allowed_channels(request: HttpRequest, channels: list[str]) -> list[str]:
    """Apply ``WS4REDIS_ALLOWED_CHANNELS``; it may narrow the list or raise PermissionDenied.

    A callback that returns None (checks only) leaves the channels as they are.
    """
    callback = settings.load_callable("WS4REDIS_ALLOWED_CHANNELS")
    if callback is None:
        return channels
    result = callback(request, channels)
    return channels if result is None else [c for c in result if c in CHANNEL_KEYS]


@dataclass
class Accepted:
    """A request that passed every check; nothing is sent to the client yet.

    ``protocol`` and ``response`` are the handshake, for runtimes that own the socket; ASGI
    servers do their own handshake, so they have none.
    """

    request: HttpRequest
    channels: list[str]
    echo: bool
    since: dict[str, Position] | None = None
    """With the ``recover`` key: the positions the client resumes from, by channel label."""
    protocol: ServerProtocol | None = None
    response: Response | None = None

    def relay(self, now: float) -> Relay:
        """The relay of the connection, with the limits of the settings. For a runtime that
        owns the socket it frames, and the handshake response will be its first output."""
        options = {
            "echo": self.echo,
            "heartbeat": settings.WS4REDIS_HEARTBEAT,
            "now": now,
            "max_size": settings.WS4REDIS_MAX_MESSAGE_SIZE,
            "max_buffer": settings.WS4REDIS_MAX_BUFFER_SIZE,
            "max_backlog": settings.WS4REDIS_MAX_BACKLOG_SIZE,
            "max_pending": settings.WS4REDIS_MAX_PENDING_PUBLISHES,
            # at least one message of the largest size a client may send
            "max_pending_bytes": max(
                settings.WS4REDIS_MAX_CLIENT_PENDING_BYTES, settings.WS4REDIS_MAX_MESSAGE_SIZE
            ),
            "positions": self.since is not None,
            "enveloped": enveloped_facility(self.request.path_info[len(settings.WEBSOCKET_URL) :]),
        }
        if self.protocol is None or self.response is None:
            return Relay(**options)
        return FramedRelay(
            self.protocol,
            self.response,
            ping_interval=settings.WS4REDIS_PING_INTERVAL,
            ping_timeout=settings.WS4REDIS_PING_TIMEOUT,
            **options,
        )


def open_connection(request: HttpRequest, *, framing: bool = True) -> Accepted | Rejection:
    """Decide whether ``request`` becomes a websocket; never raises.

    With ``framing`` (runtimes that own the socket) the handshake is negotiated too. A
    refusal is counted here; an opening once its subscriptions hold (the runtimes'
    ``subscribe``).
    """
    outcome = _decide(request, framing)
    if isinstance(outcome, Rejection):
        STATS.handshakes[outcome.status] += 1
    return outcome


def _decide(request: HttpRequest, framing: bool) -> Accepted | Rejection:
    try:
        rejection = check_request(request)
        if rejection is not None:
            return rejection
        identify(request)
        channels, echo = requested_keys(request)
        since = requested_positions(request)
        channels = allowed_channels(request, channels)
        facility = request.path_info[len(settings.WEBSOCKET_URL) :]
        if refusals := refused(request, facility, channels):
            raise PermissionDenied(
                f"WS4REDIS_PERMISSIONS refuses {', '.join(refusals)} on facility {facility!r}"
            )
        if not framing:
            return Accepted(request, channels, echo, since)
        protocol, response = negotiate(request, settings.WS4REDIS_MAX_MESSAGE_SIZE)
    except ValueError as exc:
        return Rejection(400, f"{exc}\n")
    except PermissionDenied as exc:
        return Rejection(403, f"{exc or 'Permission denied'}\n")
    except SuspiciousOperation as exc:  # e.g. more query fields than Django accepts
        return Rejection(400, f"{exc}\n")
    except Exception:
        logger.exception("Cannot open websocket %s", request.get_full_path())
        return Rejection(500, "The websocket could not be opened; see the server log.\n")
    if response.status_code != 101:
        return Rejection(response.status_code, (response.body or b"").decode())
    return Accepted(request, channels, echo, since, protocol, response)
