"""Closing websockets from Django, in every websocket process: :func:`disconnect`.

Django and the websocket processes share nothing but Redis, so the command travels there,
on channels no client can publish to (see :data:`ws4redis.redis_store.CONTROL`). Only
websockets with a session or a user subscribe to theirs; anonymous ones pay nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from ws4redis.core.relay import SESSION_ENDED
from ws4redis.redis_pool import get_redis, is_cluster
from ws4redis.redis_store import CONTROL, channel_name

logger = logging.getLogger("ws4redis")


def disconnect(
    *,
    session: str | None = None,
    user: str | None = None,
    code: int = SESSION_ENDED,
    reason: str = "session ended",
) -> int | None:
    """Close the websockets of session key ``session`` and/or of user name ``user``, in
    every process, with ``code`` (4000-4999) and ``reason``.

    Returns how many websocket processes heard it, or None when Redis could not be reached:
    that is logged, not raised, since callers are logout views and deletions that must not
    fail for it (their websockets then stay open until they close or reconnect).
    """
    if not 4000 <= code <= 4999:
        raise ValueError(f"a close code for disconnect() is 4000-4999, got {code}")
    channels = [channel_name(CONTROL, "session", session)] if session else []
    if user:
        channels.append(channel_name(CONTROL, "user", user))
    if not channels:
        return 0
    payload = f"{code} {reason}".encode()
    try:
        connection = get_redis()
        verb = "SPUBLISH" if is_cluster(connection) else "PUBLISH"
        return sum(connection.execute_command(verb, channel, payload) for channel in channels)
    except redis.RedisError as exc:
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
