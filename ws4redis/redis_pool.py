"""One Redis client (and so one connection pool) per process and per connection setting.

Views publish with a plain synchronous call; opening a TCP connection for each publish would
cost more than the publish itself, so every ``RedisPublisher`` shares the pool made here.
The key is the effective ``WS4REDIS_CONNECTION``, so ``override_settings`` in tests gets a
client of its own instead of silently reusing the old server.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured

from ws4redis import settings

ConnectionKey = tuple[tuple[str, str], ...]

_clients: dict[ConnectionKey, redis.Redis] = {}
_lock = threading.Lock()


def connection_kwargs() -> dict[str, Any]:
    """The keyword arguments for ``redis.Redis`` built from ``WS4REDIS_CONNECTION``."""
    kwargs = settings.WS4REDIS_CONNECTION_ARGS
    if kwargs.get("unix_socket_path"):
        # A unix socket replaces host and port; redis-py rejects neither, but ignores them.
        kwargs.pop("host", None)
        kwargs.pop("port", None)
    return kwargs


def connection_key(kwargs: dict[str, Any]) -> ConnectionKey:
    """A hashable key of connection arguments: one client, or one hub, per distinct set."""
    return tuple(sorted((name, repr(value)) for name, value in kwargs.items()))


def get_redis() -> redis.Redis:
    """Return the process-wide client for the configured Redis server."""
    kwargs = connection_kwargs()
    key = connection_key(kwargs)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                try:
                    client = redis.Redis(**kwargs)
                except TypeError as exc:
                    raise ImproperlyConfigured(f"WS4REDIS_CONNECTION: {exc}") from exc
                _clients[key] = client
    return client
