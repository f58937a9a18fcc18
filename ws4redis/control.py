"""Closing websockets from Django, in every websocket process: :func:`disconnect`.

Django and the websocket processes share nothing but Redis, so the command travels there,
on channels no client can publish to (see :data:`ws4redis.core.names.CONTROL`). Only
websockets with a session or a user subscribe to theirs; anonymous ones pay nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete

from ws4redis.bus.pool import REDIS_FAILED, get_redis, is_cluster
from ws4redis.core.names import control_channel
from ws4redis.core.relay import SESSION_ENDED, UNSUBSCRIBED, Control, Failure, FailureKind
from ws4redis.settings import key_prefix

__all__ = ["GROUPS_CHANGED", "disconnect", "unsubscribe"]

logger = logging.getLogger("ws4redis")


def disconnect(
    *,
    session: str | None = None,
    user: str | None = None,
    facility: str | None = None,
    code: int = SESSION_ENDED,
    reason: str = "session ended",
) -> int | None:
    """Close the websockets of session key ``session`` and/or of user name ``user``, in
    every process, with ``code`` (4000-4999) and ``reason`` (at most 120 bytes of it
    reach the client); only those on ``facility`` when it is given.

    Returns how many websocket processes heard it, or None when Redis could not be reached:
    that is logged, not raised, since callers are logout views and deletions that must not
    fail for it (their websockets then stay open until they close or reconnect).
    """
    return _command(session, user, Control(_failure(code, reason, FailureKind.ENDED), facility))


def unsubscribe(
    *,
    facility: str,
    session: str | None = None,
    user: str | None = None,
    code: int = UNSUBSCRIBED,
    reason: str = "unsubscribed",
) -> int | None:
    """End ``facility`` for session key ``session`` and/or user name ``user``, in every
    process: a ``ws4redis.v1`` connection drops that facility (its client is told, with
    ``code`` and ``reason``) and stays open for its others; a websocket of that facility
    alone closes with ``code``. Returns as :func:`disconnect` does."""
    if not facility:
        raise ValueError("unsubscribe() names the facility to end")
    failure = _failure(code, reason, FailureKind.UNSUBSCRIBED)
    return _command(session, user, Control(failure, facility))


def _failure(code: int, reason: str, kind: FailureKind) -> Failure:
    if not 4000 <= code <= 4999:
        raise ValueError(f"a close code of Django's commands is 4000-4999, got {code}")
    return Failure(code, reason, kind)


def _command(session: str | None, user: str | None, command: Control) -> int | None:
    """Publish ``command`` on the control channels of ``session`` and ``user``."""
    channels = [control_channel(key_prefix(), "session", session)] if session else []
    if user:
        channels.append(control_channel(key_prefix(), "user", user))
    if not channels:
        return 0
    payload = command.encode()
    try:
        connection = get_redis()
        verb = "SPUBLISH" if is_cluster(connection) else "PUBLISH"
        return sum(connection.execute_command(verb, channel, payload) for channel in channels)
    except REDIS_FAILED as exc:
        logger.warning("Cannot close the websockets of %s: Redis: %s", channels, exc)
        return None


def session_ended(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: the session that logged out closes its websockets."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        disconnect(session=key)


def session_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` receiver of the database session model: a deleted session (by the
    store, the admin, ``clearsessions`` or a queryset) closes its websockets."""
    disconnect(session=instance.session_key)


GROUPS_CHANGED = 4002
"""Close code when a user's groups changed: the client reconnects with the groups it has now."""


def _close_users(names: list[str], code: int, reason: str) -> None:
    """Close the websockets of users ``names`` once the change is committed, so that the
    reconnecting clients read the groups as they are after it."""
    for name in names:
        transaction.on_commit(lambda name=name: disconnect(user=name, code=code, reason=reason))


def _member_names(group: Any) -> list[str]:
    model = get_user_model()
    return list(group.user_set.values_list(model.USERNAME_FIELD, flat=True))


def membership_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """``m2m_changed`` receiver of ``User.groups``: whatever side changed it (a user's groups,
    a group's users, a clear), the users concerned have their group websockets closed."""
    if action == "pre_clear" and reverse:  # the group's members are gone after the clear
        instance._ws4redis_members = _member_names(instance)
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        names = [instance.get_username()]
    elif action == "post_clear":
        names = getattr(instance, "_ws4redis_members", [])
    else:
        model = get_user_model()
        field = model.USERNAME_FIELD
        names = list(model.objects.filter(pk__in=pk_set).values_list(field, flat=True))
    _close_users(names, GROUPS_CHANGED, "groups changed")


def group_deleting(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``pre_delete`` of a group: its members, read while they still are."""
    instance._ws4redis_members = _member_names(instance)


def group_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` of a group: its former members' websockets close."""
    _close_users(getattr(instance, "_ws4redis_members", []), GROUPS_CHANGED, "groups changed")


def user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` and ``post_delete`` of the user model: a deactivated or deleted user's
    websockets close, as if the user had logged out everywhere."""
    if kwargs.get("signal") is post_delete or not getattr(instance, "is_active", True):
        _close_users([instance.get_username()], SESSION_ENDED, "user ended")
