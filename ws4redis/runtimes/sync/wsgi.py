"""What every WSGI-based runtime shares: dispatch on ``WEBSOCKET_URL`` and HTTP rejections."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

from ws4redis import settings
from ws4redis.core.handshake import Rejection

StartResponse = Callable[..., Any]


def reject(rejection: Rejection, start_response: StartResponse) -> list[bytes]:
    """Answer a refused upgrade as an ordinary HTTP response."""
    start_response(
        f"{rejection.status} {rejection.reason}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(rejection.body))),
            *rejection.headers,
        ],
    )
    return [rejection.body]


class Dispatcher:
    """A WSGI app sending ``WEBSOCKET_URL`` requests to ``websocket_app``, the rest to Django.

    Django's handler is built on first use, after ``django.setup()`` has surely run.
    """

    def __init__(self, websocket_app: Callable[[WSGIRequest, StartResponse], Iterable[bytes]]):
        self.websocket_app = websocket_app
        self._django_app: WSGIHandler | None = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(settings.WEBSOCKET_URL):
            return self.websocket_app(WSGIRequest(environ), start_response)
        if self._django_app is None:
            self._django_app = WSGIHandler()
        return self._django_app(environ, start_response)
