"""From an upgrade request to an accepted connection, in the order of SPEC §7.

protocol checks -> identify -> parse keys -> ``WS4REDIS_ALLOWED_CHANNELS`` -> handshake.
Runtimes call :func:`open_connection` (blocking: session and user lookups may query a
database, so asyncio runtimes run it in a thread) and then :meth:`Accepted.start`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import import_module

import redis
from django.conf import settings as django_settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject
from websockets.http11 import Response
from websockets.server import ServerProtocol

from ws4redis import settings
from ws4redis.core.handshake import Rejection, check_request, negotiate
from ws4redis.core.relay import FramedRelay, Relay
from ws4redis.redis_pool import get_redis
from ws4redis.subscriber import PubSubFactory, RedisSubscriber

logger = logging.getLogger("ws4redis")

CHANNEL_KEYS = frozenset(RedisSubscriber.subscription_channels + RedisSubscriber.publish_channels)


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


def requested_keys(request: HttpRequest) -> tuple[list[str], bool]:
    """The channel keys of the query string (case-insensitive, unknown ones ignored) and
    whether ``echo`` was asked for."""
    keys = {key.strip().lower() for key in request.GET}
    return sorted(keys & CHANNEL_KEYS), "echo" in keys


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
    protocol: ServerProtocol | None = None
    response: Response | None = None

    def start(
        self, pubsub_factory: PubSubFactory | None = None
    ) -> tuple[Relay, RedisSubscriber] | Rejection:
        """Subscribe, then queue the handshake response and the persisted messages.

        Blocking Redis I/O for the default subscriber: asyncio runtimes call it in a thread.
        ``pubsub_factory`` lets a runtime put its own subscription (a shared hub) behind the
        subscriber instead of one Redis connection per websocket. Never raises: when
        subscribing fails nothing has been queued, and the runtime answers the Rejection.
        """
        try:
            return self._start(pubsub_factory)
        except (redis.RedisError, TimeoutError) as exc:
            logger.error("Cannot subscribe websocket %s: %s", self.request.get_full_path(), exc)
            return Rejection(503, "Redis is unavailable.\n")
        except Exception:
            logger.exception("Cannot start websocket %s", self.request.get_full_path())
            return Rejection(500, "The websocket could not be opened; see the server log.\n")

    def _start(self, pubsub_factory: PubSubFactory | None) -> tuple[Relay, RedisSubscriber]:
        subscriber_class = settings.load_callable("WS4REDIS_SUBSCRIBER")
        subscriber: RedisSubscriber = subscriber_class(get_redis())
        if pubsub_factory is not None:
            subscriber.pubsub_factory = pubsub_factory
        subscriber.set_pubsub_channels(self.request, self.channels)
        options = {
            "echo": self.echo,
            "heartbeat": settings.WS4REDIS_HEARTBEAT,
            "now": time.monotonic(),
        }
        relay: Relay
        if self.protocol is not None and self.response is not None:
            self.protocol.send_response(self.response)
            relay = FramedRelay(self.protocol, **options)
        else:
            relay = Relay(**options)
        subscriber.send_persisted_messages(relay)
        return relay, subscriber


def open_connection(request: HttpRequest, *, framing: bool = True) -> Accepted | Rejection:
    """Decide whether ``request`` becomes a websocket; never raises.

    With ``framing`` (runtimes that own the socket) the handshake is negotiated too.
    """
    try:
        rejection = check_request(request)
        if rejection is not None:
            return rejection
        identify(request)
        channels, echo = requested_keys(request)
        channels = allowed_channels(request, channels)
        if not framing:
            return Accepted(request, channels, echo)
        protocol, response = negotiate(request, settings.WS4REDIS_MAX_MESSAGE_SIZE)
    except PermissionDenied as exc:
        return Rejection(403, f"{exc or 'Permission denied'}\n")
    except Exception:
        logger.exception("Cannot open websocket %s", request.get_full_path())
        return Rejection(500, "The websocket could not be opened; see the server log.\n")
    if response.status_code != 101:
        return Rejection(response.status_code, (response.body or b"").decode())
    return Accepted(request, channels, echo, protocol, response)
