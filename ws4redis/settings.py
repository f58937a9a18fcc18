"""The settings of ws4redis, read from Django's settings each time they are used.

Reading lazily (module ``__getattr__``) instead of copying values at import time keeps
``override_settings`` working in tests, and keeps the old spelling
``from ws4redis import settings; settings.WS4REDIS_EXPIRE`` of the original project.
Every value is checked when read; the system check ``ws4redis.E001`` (see
:mod:`ws4redis.checks`) runs the same checks for every command, naming each wrong setting.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ws4redis.core.names import prefix_of
from ws4redis.core.permissions import is_permissions

T = TypeVar("T")

REDIS_DEFAULTS: dict[str, Any] = {"host": "localhost", "port": 6379, "db": 0, "password": None}


def _is_optional_callable(value: Any) -> bool:
    return value is None or isinstance(value, str) or callable(value)


def _is_optional_str_list(value: Any) -> bool:
    return value is None or (
        isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    )


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_history(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(facility, str)
        and isinstance(entry, dict)
        and set(entry) == {"size", "ttl"}
        and _is_positive_int(entry["size"])
        and _is_positive_int(entry["ttl"])
        for facility, entry in value.items()
    )


def _is_presence(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(facility, str)
        and isinstance(entry, dict)
        and set(entry) <= {"announce"}
        and isinstance(entry.get("announce", False), bool)
        for facility, entry in value.items()
    )


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


# name -> (default, test, what the test expects, for the error message)
_SPECS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "WEBSOCKET_URL": (
        "/ws/",
        lambda v: isinstance(v, str) and v.startswith("/") and v.endswith("/"),
        "a path that starts and ends with '/'",
    ),
    "WS4REDIS_CONNECTION": (
        {},
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "a dict of redis connection arguments",
    ),
    "WS4REDIS_EXPIRE": (
        3600,
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "a number of seconds (int >= 0) or None",
    ),
    "WS4REDIS_CLIENT_EXPIRE": (
        0,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a number of seconds (int >= 0)",
    ),
    "WS4REDIS_PREFIX": (None, lambda v: v is None or isinstance(v, str), "a string or None"),
    "WS4REDIS_SUBSCRIBER": (
        "ws4redis.subscriber.RedisSubscriber",
        lambda v: isinstance(v, str | type),
        "a dotted path to a RedisSubscriber class",
    ),
    "WS4REDIS_ALLOWED_CHANNELS": (
        None,
        _is_optional_callable,
        "a callable f(request, channels) or its dotted path",
    ),
    "WS4REDIS_PROCESS_REQUEST": (
        None,
        _is_optional_callable,
        "a callable f(request) or its dotted path",
    ),
    "WS4REDIS_HEARTBEAT": (
        None,
        lambda v: v is None or (isinstance(v, str) and v != ""),
        "a non-empty string or None",
    ),
    "WS4REDIS_ALLOWED_ORIGINS": (
        None,
        _is_optional_str_list,
        "a list of origins such as 'https://example.com' ('*' allows any) or None",
    ),
    "WS4REDIS_WEBSOCKET_HOST": (
        None,
        lambda v: v is None or (isinstance(v, str) and v.startswith(("ws://", "wss://"))),
        "None or the scheme and host of the websocket server, such as 'ws://localhost:8001'",
    ),
    "WS4REDIS_MAX_MESSAGE_SIZE": (64 * 1024, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_COMPRESSION": (True, lambda v: isinstance(v, bool), "True or False"),
    "WS4REDIS_COMPRESSION_MIN_SIZE": (256, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_BUFFER_SIZE": (1024 * 1024, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_BACKLOG_SIZE": (16 * 1024 * 1024, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_QUERY_SIZE": (4096, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_CONNECTIONS": (50_000, _is_positive_int, "a positive int (per process)"),
    "WS4REDIS_MAX_PENDING_PUBLISHES": (10_000, _is_positive_int, "a positive int (messages)"),
    "WS4REDIS_HANDSHAKE_TIMEOUT": (10, _is_positive_number, "a positive number of seconds"),
    "WS4REDIS_PING_INTERVAL": (
        20,
        lambda v: v is None or _is_positive_number(v),
        "a positive number of seconds, or None for no pings",
    ),
    "WS4REDIS_PING_TIMEOUT": (20, _is_positive_number, "a positive number of seconds"),
    "WS4REDIS_HISTORY": (
        {},
        _is_history,
        "a dict of facility (or '*') -> {'size': messages, 'ttl': seconds}, both ints > 0",
    ),
    "WS4REDIS_PRESENCE": (
        {},
        _is_presence,
        "a dict of facility (or '*') -> {} or {'announce': bool}",
    ),
    "WS4REDIS_PRESENCE_TTL": (60, _is_positive_int, "a positive int (seconds)"),
    "WS4REDIS_PRESENCE_INTERVAL": (1, _is_positive_number, "a positive number of seconds"),
    "WS4REDIS_PRESENCE_MAX_NAMES": (100, _is_positive_int, "a positive int (user names)"),
    "WS4REDIS_PERMISSIONS": (
        None,
        is_permissions,
        "None or a dict of facility (or '*') -> {'subscribe': rule, 'publish': rule}, a rule"
        " being 'anyone', 'authenticated', 'staff', 'nobody', a callable"
        " f(request, facility, audience) or its dotted path, or a dict of audience -> rule",
    ),
    "WS4REDIS_MAX_FACILITY_LENGTH": (255, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_CHANNELS": (100, _is_positive_int, "a positive int (channels)"),
    "WS4REDIS_MAX_PENDING_BYTES": (16 * 1024 * 1024, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_MAX_CLIENT_PENDING_BYTES": (1024 * 1024, _is_positive_int, "a positive int (bytes)"),
    "WS4REDIS_DRAIN_SECONDS": (
        5,
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf,
        "a number of seconds >= 0 (0 closes every websocket at once)",
    ),
    "WS4REDIS_TOKEN_MAX_AGE": (300, _is_positive_int, "a positive int (seconds)"),
    "WS4REDIS_MAX_FACILITIES": (16, _is_positive_int, "a positive int (per connection)"),
    "WS4REDIS_DECISIONS_KEPT": (
        256,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an int >= 0 (decisions; 0 keeps none)",
    ),
    "WS4REDIS_HOOKS": (
        {},
        lambda v: (
            isinstance(v, dict)
            and all(
                isinstance(k, str) and (isinstance(f, str) or callable(f)) for k, f in v.items()
            )
        ),
        "a dict of facility (or '*') -> a callable f(message) or its dotted path",
    ),
    "WS4REDIS_HOOK_THREADS": (4, _is_positive_int, "a positive int (threads per process)"),
    "WS4REDIS_HOOK_TIMEOUT": (5, _is_positive_number, "a positive number of seconds"),
}


_checked: dict[Hashable, Any] = {}
"""Values read and checked since the settings last changed: an opening reads some thirty
settings, and Django's lazy settings are slow to ask. Also what :func:`derived` functions
made of them."""
_changing = threading.Lock()
_generation = [0]


def _kept(key: Hashable, compute: Callable[..., Any], *args: Any) -> Any:
    """``compute(*args)``, kept under ``key`` in :data:`_checked` until a setting changes."""
    try:
        return _checked[key]
    except KeyError:
        pass
    generation = _generation[0]
    value = compute(*args)
    with _changing:
        if generation == _generation[0]:  # no change while it was read
            _checked[key] = value
    return value


def get(name: str) -> Any:
    """Return the current value of setting ``name``, or raise ImproperlyConfigured.

    Checked once, then kept until Django says a setting changed (``override_settings``,
    pytest-django's ``settings``), so a value is always as Django has it now."""
    try:
        return _checked[name]
    except KeyError:
        return _kept(name, _read, name)


def _read(name: str) -> Any:
    default, test, expected = _SPECS[name]
    value = getattr(django_settings, name, default)
    if not test(value):
        raise ImproperlyConfigured(f"{name} must be {expected}, got {value!r}")
    return value


def derived(compute: Callable[[], T]) -> Callable[[], T]:
    """``compute``, a function of the settings (Django's too), run once and its result kept
    until a setting changes, as :func:`get` keeps values: for what every opening makes of
    many settings (:func:`ws4redis.runtimes.opening.read_options`)."""

    @functools.wraps(compute)
    def kept() -> T:
        return cast(T, _kept(compute, compute))

    return kept


@receiver(setting_changed)
def _forget(**kwargs: Any) -> None:
    """A setting changed: every value is read and checked again."""
    with _changing:
        _generation[0] += 1
        _checked.clear()


def __getattr__(name: str) -> Any:
    if name in _SPECS:
        return get(name)
    if name == "WS4REDIS_CONNECTION_ARGS":
        return {**REDIS_DEFAULTS, **get("WS4REDIS_CONNECTION")}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def key_prefix() -> str:
    """What every Redis name of this project starts with: ``WS4REDIS_PREFIX`` and a ``:``, or
    nothing (the names themselves are built in :mod:`ws4redis.core.names`)."""
    return prefix_of(get("WS4REDIS_PREFIX"))


def load_callable(name: str) -> Callable[..., Any] | None:
    """Return the callable configured in setting ``name`` (dotted paths are imported)."""
    value = get(name)
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{name}: cannot import {value!r}: {exc}") from exc
        if not callable(value):
            raise ImproperlyConfigured(f"{name} must name a callable, got {value!r}")
    return value


def problems() -> list[tuple[str, str]]:
    """Every setting whose value is wrong, with what is wrong: the system check
    ``ws4redis.E001`` reports them (a value is checked again whenever it is read)."""
    found = []
    for name in _SPECS:
        try:
            get(name)
        except ImproperlyConfigured as exc:
            found.append((name, str(exc)))
    return found
