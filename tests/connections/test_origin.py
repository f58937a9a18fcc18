"""The Origin rule over real websockets, on every runtime (docs/reference.md#limits-and-safety):
an origin is a scheme, a host and a port, and a page of another port or scheme on the same
host is another site."""

from __future__ import annotations

from urllib.parse import urlsplit

import websocket
from django.test import override_settings

from tests.support.clients import Server


def opens(server: Server, origin: str | None, **headers: str) -> bool:
    """Whether a websocket with ``origin`` (None: no Origin header) opens; a refusal must be
    a 403 naming the origin."""
    kwargs: dict = {"suppress_origin": True} if origin is None else {"origin": origin}
    kwargs["header"] = [f"{name}: {value}" for name, value in headers.items()]
    try:
        ws = server.connect("subscribe-broadcast", **kwargs)
    except websocket.WebSocketBadStatusException as refused:
        assert refused.status_code == 403
        assert origin is not None and origin in refused.resp_body.decode()
        return False
    ws.close()
    return True


def own(server: Server) -> str:
    """The origin of the websocket server's own pages: http and its host:port."""
    return f"http://{urlsplit(server.ws_base).netloc}"


def test_same_host_on_another_port_or_scheme_is_refused(server):
    """The issue's origins: a site on another port or scheme of an allowed host."""
    port = urlsplit(server.ws_base).port
    assert opens(server, own(server)) and opens(server, None)
    for foreign in (
        "http://localhost:9999",
        "https://127.0.0.1:1",
        f"https://127.0.0.1:{port}",  # the same host and port, another scheme
        f"http://127.0.0.1:{port + 1}",
        "http://evil.example",
        "null",
    ):
        assert not opens(server, foreign), foreign


def test_allowed_hosts_count_on_the_default_port_of_the_scheme(server):
    """A page at http://localhost (ALLOWED_HOSTS, port 80) may open websockets served on
    another port; https://localhost is another scheme than this ws:// request."""
    assert opens(server, "http://localhost")
    assert opens(server, "http://LOCALHOST:80/")
    assert not opens(server, "https://localhost")
    assert not opens(server, "http://other.example")


def test_csrf_trusted_origins_are_trusted_with_their_scheme_and_port(server):
    trusted = ["https://*.example.com", "http://partner.example:8080"]
    with override_settings(CSRF_TRUSTED_ORIGINS=trusted):
        assert opens(server, "https://app.example.com")
        assert opens(server, "https://example.com")
        assert opens(server, "http://partner.example:8080")
        assert not opens(server, "http://app.example.com")
        assert not opens(server, "https://app.example.com:8443")
        assert not opens(server, "https://app.example.com.evil.example")
        assert not opens(server, "http://partner.example")


def test_allowed_origins_setting_is_exact_and_takes_wildcards(server):
    with override_settings(WS4REDIS_ALLOWED_ORIGINS=["https://*.app.example", own(server)]):
        assert opens(server, "https://eu.app.example")
        assert opens(server, own(server))
        assert not opens(server, "http://eu.app.example")
        assert not opens(server, "http://localhost")  # ALLOWED_HOSTS no longer count
        assert opens(server, None)
    with override_settings(WS4REDIS_ALLOWED_ORIGINS=["*"]):
        assert opens(server, "http://localhost:9999")


def test_the_scheme_behind_a_tls_proxy_follows_secure_proxy_ssl_header(server):
    """Behind a proxy that terminates TLS, the page is https: with Django's
    SECURE_PROXY_SSL_HEADER the own origin is https, and the http one is another site."""
    secure = {"X-Forwarded-Proto": "https"}
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        https_own = own(server).replace("http:", "https:", 1)
        assert opens(server, https_own, **secure)
        assert not opens(server, own(server), **secure)
        assert opens(server, "https://localhost", **secure)
