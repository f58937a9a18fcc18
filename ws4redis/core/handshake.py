"""Validate a websocket upgrade request and build the handshake answer.

The ``websockets`` sans-I/O ``ServerProtocol`` computes the accept key, validates the key and
version and frames everything afterwards. The few checks before it exist because the
original project answered them with specific statuses that clients and tests rely on.
"""

from __future__ import annotations

import http
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.http.request import validate_host
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from ws4redis import settings


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


def check_request(request: HttpRequest) -> Rejection | None:
    """The checks made before anything else (``docs/reference.md#http-statuses``)."""
    meta = request.META
    if not request.path_info.startswith(settings.WEBSOCKET_URL):
        return Rejection(404, f"{request.path_info} is not under WEBSOCKET_URL.\n")
    if request.method != "GET":
        return Rejection(400, "A websocket must be opened with a GET request.\n")
    if meta.get("HTTP_UPGRADE", "").lower() != "websocket":
        return Rejection(400, "The client does not wish to upgrade to a websocket.\n")
    if "HTTP_SEC_WEBSOCKET_VERSION" not in meta:
        return Rejection(426, "Sec-WebSocket-Version header is missing.\n")
    if not origin_allowed(request):
        return Rejection(403, f"Origin {meta['HTTP_ORIGIN']!r} is not allowed.\n")
    limit = settings.WS4REDIS_MAX_QUERY_SIZE
    if len(meta.get("QUERY_STRING", "")) > limit:
        return Rejection(414, f"The query string is longer than {limit} bytes.\n")
    # The facility is part of every channel and key name the websocket makes in Redis.
    longest = settings.WS4REDIS_MAX_FACILITY_LENGTH
    if len(request.path_info[len(settings.WEBSOCKET_URL) :].encode()) > longest:
        text = f"The facility name is longer than WS4REDIS_MAX_FACILITY_LENGTH ({longest} bytes).\n"
        return Rejection(414, text)
    return None


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


def own_origin(request: HttpRequest) -> str | None:
    """The origin of the site the request reaches: the scheme its pages are served with
    (https for a wss request or one Django sees as secure, through
    ``SECURE_PROXY_SSL_HEADER`` too) and its Host header; None for a Host that
    ``ALLOWED_HOSTS`` refuses."""
    secure = request.scheme in ("https", "wss")
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'https' if secure else 'http'}://{host}"


def origin_allowed(request: HttpRequest) -> bool:
    """Browsers always send Origin; a page of another site (another scheme, host or port)
    must not open our websockets with its visitors' cookies
    (``docs/reference.md#limits-and-safety``).

    ``WS4REDIS_ALLOWED_ORIGINS``, when set, lists the origins allowed (``"*"``: any).
    Without it, as Django's CSRF check: the request's own origin and
    ``CSRF_TRUSTED_ORIGINS``; and a host of ``ALLOWED_HOSTS`` on the default port of the
    request's scheme (a page at ``https://example.com`` opening
    ``wss://example.com:8001``). A request without Origin is not from a browser.
    """
    header = request.META.get("HTTP_ORIGIN")
    if header is None:
        return True
    origin = _origin(header)
    allowed = settings.WS4REDIS_ALLOWED_ORIGINS
    if allowed is not None:
        return "*" in allowed or (origin is not None and any(_matches(origin, a) for a in allowed))
    if origin is None:
        return False
    own = own_origin(request)
    trusted = [*([own] if own else []), *django_settings.CSRF_TRUSTED_ORIGINS]
    if any(_matches(origin, pattern) for pattern in trusted):
        return True
    scheme = "https" if request.scheme in ("https", "wss") else "http"
    if origin[0] != scheme or origin[2] != DEFAULT_PORTS[scheme]:
        return False
    allowed_hosts = django_settings.ALLOWED_HOSTS
    if django_settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    host = f"[{origin[1]}]" if ":" in origin[1] else origin[1]
    return validate_host(host, allowed_hosts)


def _first_offered(protocol: ServerProtocol, subprotocols: object) -> str | None:
    """Answer a requested subprotocol with the first one the client offered."""
    offered = list(subprotocols)  # type: ignore[call-overload]
    return offered[0] if offered else None


def negotiate(request: HttpRequest, max_size: int) -> tuple[ServerProtocol, Response]:
    """Run the websocket handshake of ``request``; the response may be a 4xx rejection.

    The protocol is made in the OPEN state: the server already parsed the request, so the
    protocol's parser starts at frames, and the response goes out as bytes of its own
    (:meth:`~ws4redis.core.websocket.FramedRelay.opened`). Parsing the request a second time
    would cost every handshake that parse, and its headers would stay referenced by the
    parser's suspended generator for as long as the websocket is open.
    """
    headers = Headers()
    for key, value in request.META.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-")] = value
    # Only a client that offers subprotocols needs the choice (and its bound method kept).
    choose = _first_offered if "HTTP_SEC_WEBSOCKET_PROTOCOL" in request.META else None
    protocol = ServerProtocol(select_subprotocol=choose, max_size=max_size, state=OPEN)
    return protocol, protocol.accept(Request(request.get_full_path(), headers))
