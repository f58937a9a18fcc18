"""Who may subscribe and who may publish, per facility and audience (``WS4REDIS_PERMISSIONS``).

The channel keys a client asks for are claims; this module answers them with what Django
knows of the request (its user, as :func:`ws4redis.core.opening.identify` loaded it), so an
anonymous client cannot publish where the project did not allow it. Unset, anyone may do
anything, as in the original project (drop-in projects keep working).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.http import HttpRequest
from django.utils.module_loading import import_string

from ws4redis import settings
from ws4redis.core.names import AUDIENCES

NAMED_RULES = ("anyone", "authenticated", "staff", "nobody")
"""The rules a permission may name instead of giving a callable."""

ACTIONS = ("subscribe", "publish")

Rule = str | Callable[[HttpRequest, str, str], bool]


def is_rule(value: Any) -> bool:
    """Whether ``value`` is one rule: a named rule, a callable, or a dotted path to one (a
    misspelt name such as ``"authenticted"`` is no rule, not a module to import)."""
    return callable(value) or (isinstance(value, str) and (value in NAMED_RULES or "." in value))


def is_permissions(value: Any) -> bool:
    """The shape ``WS4REDIS_PERMISSIONS`` must have (checked at start-up)."""
    if value is None:
        return True
    if not isinstance(value, dict):
        return False
    for facility, entry in value.items():
        if not isinstance(facility, str) or not isinstance(entry, dict):
            return False
        for action, rule in entry.items():
            if action not in ACTIONS:
                return False
            if isinstance(rule, Mapping):
                if not all(k in AUDIENCES and is_rule(r) for k, r in rule.items()):
                    return False
            elif not is_rule(rule):
                return False
    return True


def _rule(facility: str, action: str, audience: str) -> Rule:
    """The rule for one facility, action and audience kind: the facility's entry, else
    ``"*"``'s, else ``"anyone"`` (what is not configured stays open, as unset)."""
    permissions = settings.WS4REDIS_PERMISSIONS or {}
    entry = permissions.get(facility, permissions.get("*", {}))
    rule = entry.get(action, "anyone")
    if isinstance(rule, Mapping):
        rule = rule.get(audience, "anyone")
    return rule


def _allows(rule: Rule, request: HttpRequest, facility: str, audience: str) -> bool:
    if isinstance(rule, str) and rule not in NAMED_RULES:
        rule = import_string(rule)  # ImportError: a 500 naming it, logged
    if callable(rule):
        return bool(rule(request, facility, audience))
    if rule == "anyone":
        return True
    if rule == "nobody":
        return False
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return rule == "authenticated" or bool(user.is_staff)


def refused(request: HttpRequest, facility: str, channels: list[str]) -> list[str]:
    """The channel keys of ``channels`` (``subscribe-broadcast``, ...) that the rules refuse
    to ``request`` on ``facility``."""
    if not settings.WS4REDIS_PERMISSIONS:
        return []
    refusals = []
    for key in channels:
        action, _, audience = key.partition("-")
        if not _allows(_rule(facility, action, audience), request, facility, audience):
            refusals.append(key)
    return refusals


def has_callable_rules() -> bool:
    """Whether some rule is the project's code (which may wait for I/O)."""
    for entry in (settings.WS4REDIS_PERMISSIONS or {}).values():
        for rule in entry.values():
            rules = rule.values() if isinstance(rule, Mapping) else [rule]
            if any(callable(r) or r not in NAMED_RULES for r in rules):
                return True
    return False
