"""The websocket loop under uWSGI with gevent.

``application = uWSGIWebsocketServer()`` in a ``wsgi_websocket.py`` started with
``uwsgi --http-socket ... --gevent 1000 --http-websockets --module wsgi_websocket``, or
dispatched to from a combined ``wsgi.py`` for requests under ``WEBSOCKET_URL``.
"""

from __future__ import annotations

try:
    import uwsgi  # noqa: F401  (only importable inside a uWSGI process)
except ImportError as exc:
    raise ImportError(
        "ws4redis.uwsgi_runserver runs only inside uWSGI (started with --gevent and "
        "--http-websockets); under runserver use ws4redis.django_runserver, elsewhere "
        "`manage.py runwebsocket` or ws4redis.asgi"
    ) from exc

from gevent import monkey

# Cooperative sockets for redis-py and database drivers, unless uWSGI already patched
# (--gevent-early-monkey-patch): users need not patch redis by hand as the original asked.
if not monkey.is_module_patched("socket"):
    monkey.patch_all()

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["uWSGIWebSocketServer", "uWSGIWebsocketServer"]


class uWSGIWebsocketServer:
    """WSGI application serving websocket requests under uWSGI + gevent.

    Made after the module is imported, as in the manual's ``wsgi.py``; it sets Django up if
    that has not happened yet, so a ``wsgi_websocket.py`` needs nothing else.
    """

    def __init__(self) -> None:
        import django

        django.setup(set_prefix=False)
        from django.core.handlers.wsgi import WSGIRequest

        from ws4redis.runtimes.sync.uwsgi import websocket_app

        self._request: Callable[[dict[str, Any]], WSGIRequest] = WSGIRequest
        self._serve = websocket_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return self._serve(self._request(environ), start_response)


uWSGIWebSocketServer = uWSGIWebsocketServer  # the spelling of the original's manual
