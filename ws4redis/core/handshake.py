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
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host
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
    if not origin_allowed(meta.get("HTTP_ORIGIN")):
        return Rejection(403, f"Origin {meta['HTTP_ORIGIN']!r} is not allowed.\n")
    limit = settings.WS4REDIS_MAX_QUERY_SIZE
    if len(meta.get("QUERY_STRING", "")) > limit:
        return Rejection(414, f"The query string is longer than {limit} bytes.\n")
    return None


def over_capacity(open_connections: int, capacity: int) -> Rejection | None:
    """A process holding ``capacity`` connections refuses more, before the upgrade and while
    it still has file descriptors to say so (``WS4REDIS_MAX_CONNECTIONS``)."""
    if open_connections <= capacity:
        return None
    text = f"This server holds its maximum of {capacity} connections; try again shortly.\n"
    return Rejection(503, text, retry_after=1)


def origin_allowed(origin: str | None) -> bool:
    """Browsers always send Origin; a page of another site must not open our websockets.

    Without ``WS4REDIS_ALLOWED_ORIGINS`` the origin's host must pass ``ALLOWED_HOSTS`` the
    way Django checks the Host header. A request without Origin is not from a browser.
    """
    if origin is None:
        return True
    allowed = settings.WS4REDIS_ALLOWED_ORIGINS
    if allowed is not None:
        return "*" in allowed or origin.lower() in {a.lower().rstrip("/") for a in allowed}
    domain, _port = split_domain_port(urlsplit(origin).netloc)
    allowed_hosts = django_settings.ALLOWED_HOSTS
    if django_settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed_hosts)


def _first_offered(protocol: ServerProtocol, subprotocols: object) -> str | None:
    """Answer a requested subprotocol with the first one the client offered."""
    offered = list(subprotocols)  # type: ignore[call-overload]
    return offered[0] if offered else None


def negotiate(request: HttpRequest, max_size: int) -> tuple[ServerProtocol, Response]:
    """Run the websocket handshake of ``request``; the response may be a 4xx rejection.

    The protocol is made in the OPEN state: the server already parsed the request, so the
    protocol's parser starts at frames, and the response goes out as bytes of its own
    (:meth:`~ws4redis.core.relay.FramedRelay.opened`). Parsing the request a second time
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
