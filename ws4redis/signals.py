"""Keeps the user's group names in the session, for the websocket loop.

The websocket loop must not query the database for every connection (under the original's
gevent loop it would block every socket), so the names are written once, at login.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from ws4redis.redis_store import MEMBEROF_SESSION_KEY


def store_groups_in_session(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any):
    """``user_logged_in`` receiver: store the names of ``user``'s groups in the session."""
    session = getattr(request, "session", None)
    if session is not None:
        session[MEMBEROF_SESSION_KEY] = list(user.groups.values_list("name", flat=True))
