"""Who may subscribe and who may publish, per facility and audience (``WS4REDIS_PERMISSIONS``).

The channel keys a client asks for are claims; the rules answer them with what is known of
the request's user, so an anonymous client cannot publish where the project did not allow
it. Unset, anyone may do anything, as in the original project (drop-in projects keep
working). Here: the shape of the setting, which rule applies, and what a named rule
answers for a :class:`Who`. A rule that is the project's callable needs the Django request:
:mod:`ws4redis.runtimes.opening` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ws4redis.core.names import AUDIENCES

NAMED_RULES = ("anyone", "authenticated", "staff", "nobody")
"""The rules a permission may name instead of giving a callable."""
USER_RULES = ("authenticated", "staff")
"""The named rules whose answer depends on the user (only they need it loaded)."""

ACTIONS = ("subscribe", "publish")

Rule = str | Callable[..., bool]
"""A named rule, a dotted path to a callable, or a callable ``f(request, facility, audience)``."""
Permissions = Mapping[str, Mapping[str, Any]]
"""The value of ``WS4REDIS_PERMISSIONS``: facility (or ``"*"``) -> action -> rule or
audience -> rule."""


@dataclass(frozen=True, slots=True)
class Who:
    """What the named rules ask of a user."""

    authenticated: bool
    active: bool
    staff: bool


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


def rule_for(permissions: Permissions, facility: str, action: str, audience: str) -> Rule:
    """The rule for one facility, action and audience kind: the facility's entry, else
    ``"*"``'s, else ``"anyone"`` (what is not configured stays open, as unset)."""
    entry = permissions.get(facility, permissions.get("*", {}))
    found: Rule | Mapping[str, Rule] = entry.get(action, "anyone")
    if isinstance(found, Mapping):
        return found.get(audience, "anyone")
    return found


def is_named(value: Rule) -> bool:
    """Whether ``value`` is one of :data:`NAMED_RULES` (else it is the project's code)."""
    return isinstance(value, str) and value in NAMED_RULES


def allows(named: str, who: Who | None) -> bool:
    """What the named rule answers; ``who`` is needed only for :data:`USER_RULES` (None
    for the others: no user is loaded for them)."""
    if named == "anyone":
        return True
    if named == "nobody" or who is None or not who.authenticated or not who.active:
        return False
    return named == "authenticated" or who.staff


def rules(permissions: Permissions | None, facility: str, channels: list[str]) -> dict[str, Rule]:
    """The rule for each channel key of ``channels`` (``subscribe-broadcast``, ...) on
    ``facility``; none without permissions (everything allowed)."""
    if not permissions:
        return {}
    found = {}
    for key in channels:
        action, _, audience = key.partition("-")
        found[key] = rule_for(permissions, facility, action, audience)
    return found


def has_callable_rules(permissions: Permissions | None) -> bool:
    """Whether some rule is the project's code (which may wait for I/O)."""
    for entry in (permissions or {}).values():
        for value in entry.values():
            each = value.values() if isinstance(value, Mapping) else [value]
            if any(callable(r) or r not in NAMED_RULES for r in each):
                return True
    return False
