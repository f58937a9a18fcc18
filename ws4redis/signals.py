"""Signals of ws4redis, and the receiver that keeps the user's group names in the session.

The websocket loop must not query the database for every connection (under the original's
gevent loop it would block every socket), so the group names are written once, at login.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal
from django.http import HttpRequest

from ws4redis.redis_store import MEMBEROF_SESSION_KEY

__all__ = ["store_groups_in_session", "websocket_closed", "websocket_opened"]

websocket_opened = Signal()
"""A websocket opened: ``request``, ``user`` (a user name or None), ``session`` (the session
key or None), ``facility``. Sent from a worker thread of the websocket process, in order with
``websocket_closed``, so a receiver may query the database without holding any websocket."""

websocket_closed = Signal()
"""A websocket closed (cleanly or not): the same arguments as ``websocket_opened``."""


def store_groups_in_session(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any):
    """``user_logged_in`` receiver: store the names of ``user``'s groups in the session."""
    session = getattr(request, "session", None)
    if session is not None:
        session[MEMBEROF_SESSION_KEY] = list(user.groups.values_list("name", flat=True))
