"""The opening of a websocket above the core: Django's request, the settings, the project's
callbacks (``docs/reference.md#opening-a-websocket``).

The core (:mod:`ws4redis.core.opening`, :mod:`ws4redis.core.handshake`,
:mod:`ws4redis.core.permissions`) imports neither Django nor the settings: this module reads
the settings into :class:`~ws4redis.core.opening.Options`, turns the request into an
:class:`~ws4redis.core.handshake.Upgrade`, identifies it (session, lazy user,
``WS4REDIS_PROCESS_REQUEST``) and calls the project's ``WS4REDIS_ALLOWED_CHANNELS`` and
permission callables, handing the core their plain results. Every runtime opens through
:func:`open_connection` (blocking: session and user lookups may query a database, so asyncio
runtimes run it in a thread unless :func:`may_block` says it cannot wait), then subscribes
through its hub (:mod:`ws4redis.runtimes.redis_side`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Hashable
from importlib import import_module

from django.conf import settings as django_settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject
from django.utils.module_loading import import_string
from websockets.datastructures import Headers

from ws4redis import settings
from ws4redis.core.events import wants_events
from ws4redis.core.handshake import (
    SUBPROTOCOL,
    HandshakeOptions,
    Rejection,
    Upgrade,
    check_request,
    multiplexed,
    origin_refusal,
)
from ws4redis.core.history import Position
from ws4redis.core.names import CHANNEL_KEYS
from ws4redis.core.opening import (
    Accepted,
    Decided,
    Kept,
    Options,
    accept,
    decision_key,
    requested_keys,
    requested_positions,
)
from ws4redis.core.permissions import USER_RULES, Who, allows, has_callable_rules, is_named, rules
from ws4redis.core.stats import STATS, Stats
from ws4redis.tokens import QUERY_KEY, Grant, token_user, verify

logger = logging.getLogger("ws4redis")

DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")
"""What Django allows with ``DEBUG`` and an empty ``ALLOWED_HOSTS``."""


@settings.derived
def read_options() -> Options:
    """The settings an opening applies, as plain values for the core: made once, and again
    after a setting changed (each opening asked Django for some twenty of them)."""
    allowed_hosts = tuple(django_settings.ALLOWED_HOSTS)
    if django_settings.DEBUG and not allowed_hosts:
        allowed_hosts = DEBUG_HOSTS
    origins = settings.WS4REDIS_ALLOWED_ORIGINS
    return Options(
        handshake=HandshakeOptions(
            websocket_url=settings.WEBSOCKET_URL,
            max_query_size=settings.WS4REDIS_MAX_QUERY_SIZE,
            max_facility_length=settings.WS4REDIS_MAX_FACILITY_LENGTH,
            allowed_origins=None if origins is None else tuple(origins),
            trusted_origins=tuple(django_settings.CSRF_TRUSTED_ORIGINS),
            allowed_hosts=allowed_hosts,
        ),
        heartbeat=settings.WS4REDIS_HEARTBEAT,
        max_message_size=settings.WS4REDIS_MAX_MESSAGE_SIZE,
        max_buffer=settings.WS4REDIS_MAX_BUFFER_SIZE,
        max_backlog=settings.WS4REDIS_MAX_BACKLOG_SIZE,
        max_pending=settings.WS4REDIS_MAX_PENDING_PUBLISHES,
        max_client_pending_bytes=settings.WS4REDIS_MAX_CLIENT_PENDING_BYTES,
        ping_interval=settings.WS4REDIS_PING_INTERVAL,
        ping_timeout=settings.WS4REDIS_PING_TIMEOUT,
        history=settings.WS4REDIS_HISTORY,
        presence=settings.WS4REDIS_PRESENCE,
        max_facilities=settings.WS4REDIS_MAX_FACILITIES,
        compression=settings.WS4REDIS_COMPRESSION,
        compress_min_size=settings.WS4REDIS_COMPRESSION_MIN_SIZE,
    )


@settings.derived
def decisions() -> Kept[Hashable, Decided]:
    """The decisions of anonymous openings (``WS4REDIS_DECISIONS_KEPT`` of them), forgotten
    whenever a setting changes: they follow from the request and the settings alone."""
    return Kept(settings.WS4REDIS_DECISIONS_KEPT)


PARSED_HEADERS = "ws4redis.headers"
"""The ``META`` key under which a runtime that parsed the request itself (``runwebsocket``)
leaves its headers, each name given once: the opening reads them instead of rebuilding
them from the ``HTTP_`` keys."""


def upgrade_of(request: HttpRequest) -> Upgrade:
    """What the core reads of ``request``: its headers (from ``META``, as a WSGI server
    passes them, unless :data:`PARSED_HEADERS` has them), the Host Django would check and
    whether Django sees it as secure."""
    headers = request.META.get(PARSED_HEADERS)
    if headers is None:
        headers = Headers()
        for key, value in request.META.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-")] = value
    try:
        host: str | None = request._get_raw_host()  # what get_host() checks; the core checks
    except KeyError:  # neither Host nor SERVER_NAME
        host = None
    return Upgrade(
        method=request.method or "",
        path=request.path_info,
        query=request.META.get("QUERY_STRING", ""),
        headers=headers,
        host=host,
        secure=request.scheme in ("https", "wss"),
    )


def refusal(request: HttpRequest) -> Rejection | None:
    """The core's checks before the upgrade, for ``request`` (a plain HTTP request for a
    websocket URL is answered with what they say)."""
    return check_request(upgrade_of(request), read_options().handshake)


def identify(
    request: HttpRequest, token: str | None = None, grant: Grant | None = None
) -> Grant | None:
    """Attach ``session`` and ``user`` to ``request`` as Django's middleware would; with a
    connection ``token``, return what it grants (or, with the ``grant`` it gave already,
    load its user again: a connection outlives its token, not its user).

    A token names the user, loaded now (:func:`~ws4redis.tokens.token_user`: it must exist,
    be active and keep its password), and no session: its opening touches neither the
    cookies nor the session store, so a bad token is refused
    (PermissionDenied) rather than opened anonymous or with the cookie's session.
    ``WS4REDIS_PROCESS_REQUEST`` replaces the cookie-session default (custom auth).
    The cookie's user is loaded lazily: connections that never ask for user or group
    channels cost no database query.
    """
    engine = import_module(django_settings.SESSION_ENGINE)
    if token is not None or grant is not None:
        grant = grant or verify(token)  # type: ignore[arg-type]
        request.user = token_user(grant)
        request.session = engine.SessionStore(None)  # for callbacks: empty, never loaded
        return grant
    process = settings.load_callable("WS4REDIS_PROCESS_REQUEST")
    if process is not None:
        process(request)
    else:
        session_key = request.COOKIES.get(django_settings.SESSION_COOKIE_NAME)
        request.session = engine.SessionStore(session_key)
        # Without a key the session is new and empty, so its user is anonymous (below): a
        # lazy user holds the request that holds it, a cycle that only the garbage
        # collector frees, and every anonymous handshake paid a share of its passes.
        if session_key:
            request.user = SimpleLazyObject(lambda: get_user(request))
    if not hasattr(request, "user"):
        request.user = AnonymousUser()
    return None


IDENTIFIED = ("user", "_cached_user", "session", "auth")
"""What identifying a request attaches to it: a copy of it loads its own."""


def facility_request(request: HttpRequest, facility: str) -> HttpRequest:
    """A copy of a websocket's ``request`` for ``facility`` (its path names it: the
    subscriber reads the facility there) whose session and user are still to be loaded
    (:func:`identify`): a facility subscribed on an open connection, or a hook's message,
    sees them as Django has them now."""
    copied = copy.copy(request)
    for name in IDENTIFIED:
        copied.__dict__.pop(name, None)
    copied.path_info = settings.WEBSOCKET_URL + facility
    copied.path = request.path[: len(request.path) - len(request.path_info)] + copied.path_info
    return copied


def check_grant(grant: Grant, facility: str, channels: list[str]) -> None:
    """PermissionDenied when a token's opening asks for a facility or channel keys its
    ``grant`` does not give (a token is for what it names, not for what the query asks)."""
    if facility not in grant.facilities:
        raise PermissionDenied(f"The connection token does not grant facility {facility!r}.")
    if beyond := [key for key in channels if key not in grant.channels]:
        raise PermissionDenied(f"The connection token does not grant {', '.join(beyond)}.")


@settings.derived
def project_code() -> bool:
    """Whether an opening calls code of the project: ``WS4REDIS_PROCESS_REQUEST``,
    ``WS4REDIS_ALLOWED_CHANNELS`` or callable rules of ``WS4REDIS_PERMISSIONS``. Made
    once per value of the settings: every opening asks (2.5 µs each time, the rules
    walked)."""
    if settings.WS4REDIS_PROCESS_REQUEST or settings.WS4REDIS_ALLOWED_CHANNELS:
        return True
    return has_callable_rules(settings.WS4REDIS_PERMISSIONS)


def may_block(request: HttpRequest) -> bool:
    """Whether :func:`open_connection` may wait for I/O on ``request``: only a session
    cookie (its session and user are looked up), ``WS4REDIS_PROCESS_REQUEST`` or
    ``WS4REDIS_ALLOWED_CHANNELS`` (code of the project) can make it. Without them a runtime
    may open on its event loop, saving most connections a trip through a thread. (A
    session without a key is empty: Django's session stores load only for a key.)"""
    if project_code():
        return True
    if QUERY_KEY in request.META.get("QUERY_STRING", ""):  # a token: its user is loaded
        return True
    return django_settings.SESSION_COOKIE_NAME in request.COOKIES


def client_message_expiry() -> int:
    """Seconds a message sent by a client is stored: ``WS4REDIS_CLIENT_EXPIRE``, at most
    ``WS4REDIS_EXPIRE`` (0: not stored). Bounded by default because any client allowed to
    publish, anonymous ones included, can store a message under every facility it reaches."""
    return min(settings.WS4REDIS_EXPIRE or 0, settings.WS4REDIS_CLIENT_EXPIRE)


def allowed_channels(request: HttpRequest, channels: list[str]) -> list[str]:
    """Apply ``WS4REDIS_ALLOWED_CHANNELS``; it may narrow the list or raise PermissionDenied.

    A callback that returns None (checks only) leaves the channels as they are.
    """
    callback = settings.load_callable("WS4REDIS_ALLOWED_CHANNELS")
    if callback is None:
        return channels
    result = callback(request, channels)
    return channels if result is None else [c for c in result if c in CHANNEL_KEYS]


def who(request: HttpRequest) -> Who:
    """What the named rules ask of the request's user (as :func:`identify` loaded it)."""
    user = getattr(request, "user", None)
    if user is None:
        return Who(authenticated=False, active=False, staff=False)
    return Who(bool(user.is_authenticated), bool(user.is_active), bool(user.is_staff))


def refused(request: HttpRequest, facility: str, channels: list[str]) -> list[str]:
    """The channel keys of ``channels`` (``subscribe-broadcast``, ...) that
    ``WS4REDIS_PERMISSIONS`` refuses to ``request`` on ``facility``: named rules are the
    core's, the project's callables are called here with the request."""
    refusals = []
    for key, rule in rules(settings.WS4REDIS_PERMISSIONS, facility, channels).items():
        if isinstance(rule, str) and is_named(rule):
            allowed = allows(rule, who(request) if rule in USER_RULES else None)
        else:
            check = import_string(rule) if isinstance(rule, str) else rule  # ImportError: 500
            allowed = bool(check(request, facility, key.partition("-")[2]))
        if not allowed:
            refusals.append(key)
    return refusals


def open_connection(
    request: HttpRequest, *, framing: bool = True, stats: Stats = STATS
) -> Accepted | Rejection:
    """Decide whether ``request`` becomes a websocket; never raises.

    With ``framing`` (runtimes that own the socket) the handshake is negotiated too. A
    refusal is counted in ``stats`` here; an opening once its subscriptions hold (the
    runtimes' ``subscribe``).
    """
    outcome = _decide(request, framing)
    if isinstance(outcome, Rejection):
        stats.handshakes[outcome.status] += 1
    return outcome


def permitted(
    request: HttpRequest, grant: Grant | None, facility: str, fields: dict[str, str]
) -> tuple[list[str], bool, dict[str, Position] | None]:
    """The channel keys the query ``fields`` ask for on ``facility``, as the rules allow
    them to ``request`` (a token's ``grant``, ``WS4REDIS_ALLOWED_CHANNELS``,
    ``WS4REDIS_PERMISSIONS``); whether ``echo`` was asked; the positions with
    ``recover``. PermissionDenied or ValueError say what is refused."""
    channels, echo = requested_keys(fields)
    since = requested_positions(fields)
    if grant is not None:
        check_grant(grant, facility, channels)
    channels = allowed_channels(request, channels)
    if refusals := refused(request, facility, channels):
        raise PermissionDenied(
            f"WS4REDIS_PERMISSIONS refuses {', '.join(refusals)} on facility {facility!r}"
        )
    return channels, echo, since


MULTIPLEX_URL = (
    f"With the {SUBPROTOCOL} subprotocol the URL names no facility and no channel keys:"
    " facilities are subscribed by message."
)


def refusal_for(exc: Exception) -> Rejection | None:
    """What a refusal raised while deciding is answered (None: not a refusal)."""
    if isinstance(exc, ValueError | SuspiciousOperation):  # e.g. too many query fields
        return Rejection(400, f"{exc}\n")
    if isinstance(exc, PermissionDenied):
        return Rejection(403, f"{exc or 'Permission denied'}\n")
    return None


def _decide(request: HttpRequest, framing: bool) -> Accepted | Rejection:
    try:
        options = read_options()
        upgrade = upgrade_of(request)
        # An opening without session, token or project code is decided by the request and
        # the settings alone: the same request gets the decision kept for it.
        key = None if may_block(request) else decision_key(upgrade)
        known = decisions().get(key) if key is not None else None
        if known is not None:
            identify(request)
            return accept(upgrade, known.accepted(request, options), framing=framing)
        decided = _judge(request, upgrade, options)
        if isinstance(decided, Rejection):
            return decided
        if key is not None and (plain := Decided.of(decided)) is not None:
            decisions().keep(key, plain)
        return accept(upgrade, decided, framing=framing)
    except Exception as exc:
        if (rejection := refusal_for(exc)) is not None:
            return rejection
        logger.exception("Cannot open websocket %s", request.get_full_path())
        return Rejection(500, "The websocket could not be opened; see the server log.\n")


def _judge(request: HttpRequest, upgrade: Upgrade, options: Options) -> Accepted | Rejection:
    """Every check of an opening before its handshake: the request, its identity and the
    channels the rules give it."""
    rejection = check_request(upgrade, options.handshake, ambient=False)
    if rejection is not None:
        return rejection
    fields = dict(request.GET.items())  # the query's size is checked: parsing is bounded
    token = fields.get(QUERY_KEY)  # with one, cookies count for nothing: Origin neither
    if token is None and (rejection := origin_refusal(upgrade, options.handshake)):
        return rejection
    grant = identify(request, token)
    facility = options.handshake.facility(upgrade)
    events = wants_events(upgrade.method, upgrade.headers)
    if events and (resume := upgrade.headers.get("Last-Event-ID")):
        fields["since"] = resume  # the browser's reconnect names where it stands
    if multiplexed(upgrade) and not events:
        if facility or requested_keys(fields)[0] or requested_positions(fields) is not None:
            raise ValueError(MULTIPLEX_URL)
        return Accepted(request, "", [], True, options, multiplex=True, grant=grant)
    channels, echo, since = permitted(request, grant, facility, fields)
    origin = upgrade.headers.get("Origin") if events else None
    return Accepted(request, facility, channels, echo, options, since, grant=grant,
                    events=events, origin=origin)  # fmt: skip
