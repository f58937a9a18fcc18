"""Django system checks of ws4redis.

For every command: a setting with a wrong value (``ws4redis.E001``, instead of an exception
at start-up) and a Redis that does not answer (``ws4redis.W004``). With ``--deploy``, the
risks of the original's open defaults that a public site must not keep: that anonymous
clients may publish, that nothing restricts channels at all, and that the development
entry point serves a site.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from ws4redis import settings
from ws4redis.bus.pool import REDIS_FAILED, connection_kwargs, make_client
from ws4redis.core.names import AUDIENCES

REDIS_CHECK_TIMEOUT = 1.0
"""Seconds the Redis check waits for an answer: a command must not hang on an absent one."""
UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_FAILED, OSError)
"""What the Redis check reports as Redis not answering."""

DEVELOPMENT_WSGI = "ws4redis.django_runserver.application"


def _anonymous_may_publish(entry: Mapping[str, Any]) -> bool:
    """Whether a facility's entry lets anonymous clients publish to some audience (a
    callable rule is the project's own decision and counts as restricting)."""
    rule = entry.get("publish", "anyone")
    rules = (
        [rule.get(kind, "anyone") for kind in AUDIENCES] if isinstance(rule, Mapping) else [rule]
    )
    return "anyone" in rules


@checks.register("ws4redis")
def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    return [
        checks.Error(message, hint=f"See {name} in docs/reference.md.", id="ws4redis.E001")
        for name, message in settings.problems()
    ]


@checks.register("ws4redis")
def check_redis_answers(**kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when the configured Redis does not answer a PING within a second: publishing
    would raise, and websockets would be refused with 503."""
    try:
        options = connection_kwargs()
        options.update(socket_timeout=REDIS_CHECK_TIMEOUT,
                       socket_connect_timeout=REDIS_CHECK_TIMEOUT)  # fmt: skip
        client = make_client(options)  # a cluster client asks its seeds at once
        try:
            client.ping()
        finally:
            client.close()
    except (ImproperlyConfigured, TypeError):
        return []  # a wrong WS4REDIS_CONNECTION is ws4redis.E001's to report
    except UNREACHABLE as exc:
        where = (
            options.get("unix_socket_path")
            or options.get("cluster_nodes")
            or (f"{options.get('host', 'localhost')}:{options.get('port', 6379)}")
        )
        return [
            checks.Warning(
                f"Redis does not answer at {where} ({exc.__class__.__name__}: {exc}).",
                hint="Start Redis, or point WS4REDIS_CONNECTION at one; until then "
                "publishing raises and websockets are refused with 503.",
                id="ws4redis.W004",
            )
        ]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_anonymous_publishing(**kwargs: Any) -> list[checks.CheckMessage]:
    permissions = settings.WS4REDIS_PERMISSIONS
    if permissions is None:
        return [
            checks.Warning(
                "Anonymous clients may publish on every facility: WS4REDIS_PERMISSIONS is not set.",
                hint='Set WS4REDIS_PERMISSIONS, e.g. {"*": {"publish": "authenticated"}}.',
                id="ws4redis.W001",
            )
        ]
    open_ones = sorted(f for f, entry in permissions.items() if _anonymous_may_publish(entry))
    if "*" not in permissions:
        open_ones.append("every facility not listed")
    if not open_ones:
        return []
    return [
        checks.Warning(
            f"WS4REDIS_PERMISSIONS lets anonymous clients publish on: {', '.join(open_ones)}.",
            hint='Give those facilities (and "*") a publish rule other than "anyone".',
            id="ws4redis.W001",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_channels_restricted(**kwargs: Any) -> list[checks.CheckMessage]:
    if django_settings.DEBUG or settings.WS4REDIS_ALLOWED_CHANNELS:
        return []
    if settings.WS4REDIS_PERMISSIONS is not None:
        return []
    return [
        checks.Warning(
            "Any client may subscribe and publish on any facility: neither "
            "WS4REDIS_ALLOWED_CHANNELS nor WS4REDIS_PERMISSIONS is set.",
            hint="Set WS4REDIS_PERMISSIONS (or WS4REDIS_ALLOWED_CHANNELS) before going public.",
            id="ws4redis.W002",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_development_entry_point(**kwargs: Any) -> list[checks.CheckMessage]:
    # Under DEBUG it is the documented way to get websockets from manage.py runserver.
    if django_settings.DEBUG:
        return []
    if getattr(django_settings, "WSGI_APPLICATION", None) != DEVELOPMENT_WSGI:
        return []
    return [
        checks.Warning(
            f"WSGI_APPLICATION is {DEVELOPMENT_WSGI}, the entry point for manage.py runserver.",
            hint="Serve pages with your project's WSGI application and websockets with "
            "runwebsocket, ASGI or uWSGI (docs/deployment.md).",
            id="ws4redis.W003",
        )
    ]
