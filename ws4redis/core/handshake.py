"""Validate a websocket upgrade request and build the handshake answer.

The ``websockets`` sans-I/O ``ServerProtocol`` computes the accept key, validates the key and
version and frames everything afterwards. The few checks before it exist because the
original project answered them with specific statuses that clients and tests rely on.

The request arrives as an :class:`Upgrade` of plain values and the settings as
:class:`HandshakeOptions` (:mod:`ws4redis.runtimes.opening` makes both from Django's).
"""

from __future__ import annotations

import http
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from ws4redis.core.deflate import SERVER_EXTENSION
from ws4redis.core.events import wants_events


@dataclass(frozen=True, slots=True)
class Upgrade:
    """What the checks and the handshake read of an upgrade request."""

    method: str
    path: str
    """The path below the script (Django's ``path_info``), decoded."""
    query: str
    """The query string as sent."""
    headers: Headers
    host: str | None
    """The Host the request names (``X-Forwarded-Host`` where Django trusts it), unchecked."""
    secure: bool
    """Whether the site's pages are served with https (wss, or what Django sees as secure,
    through ``SECURE_PROXY_SSL_HEADER`` too)."""

    @property
    def target(self) -> str:
        """The request target: path and query."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True, slots=True)
class HandshakeOptions:
    """The settings the checks before the upgrade apply."""

    websocket_url: str
    max_query_size: int
    max_facility_length: int
    allowed_origins: tuple[str, ...] | None
    """``WS4REDIS_ALLOWED_ORIGINS``; None: as Django's CSRF check (see :func:`origin_allowed`)."""
    trusted_origins: tuple[str, ...]
    """``CSRF_TRUSTED_ORIGINS``."""
    allowed_hosts: tuple[str, ...]
    """``ALLOWED_HOSTS`` as Django applies them (with ``DEBUG``'s local hosts when empty)."""

    def facility(self, upgrade: Upgrade) -> str:
        """The facility ``upgrade`` asks for: its path below ``WEBSOCKET_URL``."""
        return upgrade.path[len(self.websocket_url) :]


@dataclass(frozen=True)
class Rejection:
    """An HTTP answer instead of an upgrade: status, a plain-text body and, for a refusal
    that will pass, the seconds after which to try again."""

    status: int
    text: str
    retry_after: int | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Headers besides Content-Type and Content-Length."""
        return [] if self.retry_after is None else [("Retry-After", str(self.retry_after))]

    @property
    def reason(self) -> str:
        return http.HTTPStatus(self.status).phrase

    @property
    def body(self) -> bytes:
        return self.text.encode()


def check_request(
    upgrade: Upgrade, options: HandshakeOptions, *, ambient: bool = True
) -> Rejection | None:
    """The checks made before anything else (``docs/reference.md#http-statuses``).

    ``ambient``: the opening may use what the browser sends by itself (cookies), so the
    Origin must be allowed. Without (``False``) the Origin is not checked here: an opening
    with a connection token ignores cookies, and only :func:`origin_refusal` judges the
    Origin of one without (``docs/reference.md#connection-tokens``).
    """
    headers = upgrade.headers
    if (rejection := check_location(upgrade, options)) is not None:
        return rejection
    if upgrade.method != "GET":
        return Rejection(400, "A websocket must be opened with a GET request.\n")
    if wants_events(upgrade.method, headers):
        pass  # an event stream instead of a websocket (ws4redis.core.events)
    elif headers.get("Upgrade", "").lower() != "websocket":
        return Rejection(400, "The client does not wish to upgrade to a websocket.\n")
    elif "Sec-WebSocket-Version" not in headers:
        return Rejection(426, "Sec-WebSocket-Version header is missing.\n")
    if ambient and (rejection := origin_refusal(upgrade, options)) is not None:
        return rejection
    return None


def check_location(upgrade: Upgrade, options: HandshakeOptions) -> Rejection | None:
    """What every request to a websocket URL must be (a websocket, an event stream, a
    ``POST``): under ``WEBSOCKET_URL``, with a query and a facility within their bounds."""
    if not upgrade.path.startswith(options.websocket_url):
        return Rejection(404, f"{upgrade.path} is not under WEBSOCKET_URL.\n")
    limit = options.max_query_size
    if len(upgrade.query) > limit:
        return Rejection(414, f"The query string is longer than {limit} bytes.\n")
    # The facility is part of every channel and key name the websocket makes in Redis.
    longest = options.max_facility_length
    if len(options.facility(upgrade).encode()) > longest:
        text = f"The facility name is longer than WS4REDIS_MAX_FACILITY_LENGTH ({longest} bytes).\n"
        return Rejection(414, text)
    return None


def origin_refusal(upgrade: Upgrade, options: HandshakeOptions) -> Rejection | None:
    """403 for an Origin that may not open websockets with its visitors' cookies."""
    if origin_allowed(upgrade, options):
        return None
    return Rejection(403, f"Origin {upgrade.headers['Origin']!r} is not allowed.\n")


def over_capacity(open_connections: int, capacity: int) -> Rejection | None:
    """A process holding ``capacity`` connections refuses more, before the upgrade and while
    it still has file descriptors to say so (``WS4REDIS_MAX_CONNECTIONS``)."""
    if open_connections <= capacity:
        return None
    text = f"This server holds its maximum of {capacity} connections; try again shortly.\n"
    return Rejection(503, text, retry_after=1)


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str) -> tuple[str, str, int | None] | None:
    """``scheme://host[:port]`` as (scheme, host, port), the port made explicit for http and
    https; None for anything else (``null``, a path, no scheme, a bad port)."""
    try:
        parts = urlsplit(value.strip().lower().rstrip("/"))
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS.get(parts.scheme)


def _matches(origin: tuple[str, str, int | None], pattern: str) -> bool:
    """Whether ``origin`` is the trusted origin ``pattern``, spelled as Django's
    ``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` also admits its subdomains): same
    scheme, host and port."""
    wildcard = "://*." in pattern
    trusted = _origin(pattern.replace("://*.", "://", 1))
    if trusted is None or trusted[0] != origin[0] or trusted[2] != origin[2]:
        return False
    if wildcard:
        return origin[1] == trusted[1] or origin[1].endswith("." + trusted[1])
    return origin[1] == trusted[1]


HOST = re.compile(r"([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([0-9]+))?")
"""A Host value as Django accepts it: a domain or a bracketed IPv6 address, and a port."""


def host_matches(domain: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether ``domain`` (lowercased, without port) is one of ``allowed_hosts``, matched as
    Django's ``validate_host`` does: ``"*"`` is any host, ``".example.com"`` is
    example.com and its subdomains, anything else the host itself."""
    for pattern in allowed_hosts:
        pattern = pattern.lower()
        if pattern == "*" or pattern == domain:
            return True
        if pattern.startswith(".") and (domain.endswith(pattern) or domain == pattern[1:]):
            return True
    return False


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether a Host value passes ``ALLOWED_HOSTS`` (where Django's ``get_host`` would
    raise ``DisallowedHost``, False)."""
    match = HOST.fullmatch(host.lower())
    domain = match[1].removesuffix(".") if match else ""
    return bool(domain) and host_matches(domain, allowed_hosts)


def own_origin(upgrade: Upgrade, allowed_hosts: tuple[str, ...]) -> str | None:
    """The origin of the site the request reaches: the scheme its pages are served with
    and its Host; None for a Host that ``allowed_hosts`` refuses."""
    if upgrade.host is None or not host_allowed(upgrade.host, allowed_hosts):
        return None
    return f"{'https' if upgrade.secure else 'http'}://{upgrade.host}"


def origin_allowed(upgrade: Upgrade, options: HandshakeOptions) -> bool:
    """Browsers always send Origin; a page of another site (another scheme, host or port)
    must not open our websockets with its visitors' cookies
    (``docs/reference.md#limits-and-safety``).

    ``WS4REDIS_ALLOWED_ORIGINS``, when set, lists the origins allowed (``"*"``: any).
    Without it, as Django's CSRF check: the request's own origin and
    ``CSRF_TRUSTED_ORIGINS``; and a host of ``ALLOWED_HOSTS`` on the default port of the
    request's scheme (a page at ``https://example.com`` opening
    ``wss://example.com:8001``). A request without Origin is not from a browser.
    """
    header = upgrade.headers.get("Origin")
    if header is None:
        return True
    origin = _origin(header)
    allowed = options.allowed_origins
    if allowed is not None:
        return "*" in allowed or (origin is not None and any(_matches(origin, a) for a in allowed))
    if origin is None:
        return False
    own = own_origin(upgrade, options.allowed_hosts)
    trusted = [*([own] if own else []), *options.trusted_origins]
    if any(_matches(origin, pattern) for pattern in trusted):
        return True
    scheme = "https" if upgrade.secure else "http"
    if origin[0] != scheme or origin[2] != DEFAULT_PORTS[scheme]:
        return False
    host = f"[{origin[1]}]" if ":" in origin[1] else origin[1]
    return host_matches(host, options.allowed_hosts)


SUBPROTOCOL = "ws4redis.v1"
"""The websocket subprotocol of many facilities on one connection
(:mod:`ws4redis.core.facilities`)."""


def multiplexed(upgrade: Upgrade) -> bool:
    """Whether the client offers :data:`SUBPROTOCOL` (a header that cannot be read offers
    nothing: the handshake refuses it)."""
    try:
        offered = [
            name
            for value in upgrade.headers.get_all("Sec-WebSocket-Protocol")
            for name in parse_subprotocol(value)
        ]
    except InvalidHeader:
        return False
    return SUBPROTOCOL in offered


def _first_offered(
    protocol: ServerProtocol, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Answer a requested subprotocol with ours when offered, else with the first one the
    client offered (what a one-facility websocket always did)."""
    if SUBPROTOCOL in subprotocols:
        return Subprotocol(SUBPROTOCOL)
    return subprotocols[0] if subprotocols else None


def negotiate(
    upgrade: Upgrade, max_size: int, *, compression: bool = False
) -> tuple[ServerProtocol, Response]:
    """Run the websocket handshake of ``upgrade``; the response may be a 4xx rejection.
    With ``compression``, a client that offers ``permessage-deflate`` gets it
    (:mod:`ws4redis.core.deflate`); ``max_size`` then bounds what its messages inflate to.

    The protocol is made in the OPEN state: the server already parsed the request, so the
    protocol's parser starts at frames, and the response goes out as bytes of its own
    (:meth:`~ws4redis.core.websocket.FramedRelay.opened`). Parsing the request a second time
    would cost every handshake that parse, and its headers would stay referenced by the
    parser's suspended generator for as long as the websocket is open.
    """
    # Only a client that offers subprotocols needs the choice (and its bound method kept).
    choose = _first_offered if "Sec-WebSocket-Protocol" in upgrade.headers else None
    extensions = [SERVER_EXTENSION] if compression else None
    protocol = ServerProtocol(
        select_subprotocol=choose, extensions=extensions, max_size=max_size, state=OPEN
    )
    return protocol, protocol.accept(Request(upgrade.target, upgrade.headers))
