"""Hooks for client messages (``docs/reference.md#hooks-for-client-messages``).

``WS4REDIS_HOOKS = {"chat": "myapp.hooks.chat"}`` names, per facility (or ``"*"``), a
callable that gets every message a client sends there, as a :class:`ClientMessage`, and
decides what becomes of it by what it returns:

- ``None``: published as sent (a call is answered with ``null``);
- a text: published instead of what was sent (a call is answered with it);
- :class:`Reply`: not published; the sender alone gets ``Reply.data``;
- :class:`Reject` (returned or raised): not published; the sender is told the reason;
- for a call, any other JSON value is the answer.

It runs in a thread of a bounded pool (``WS4REDIS_HOOK_THREADS``), never on the event
loop, for at most ``WS4REDIS_HOOK_TIMEOUT`` seconds; a client's messages go through it in
the order sent. Without a hook for a facility, its messages are published as the channel
keys allow, as ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

__all__ = ["ClientMessage", "Reject", "Reply"]


@dataclass(frozen=True)
class ClientMessage:
    """What a client sent, for a hook."""

    request: HttpRequest
    """The websocket's request, with its session and user as Django has them now."""
    facility: str
    data: Any
    """The text (or bytes) sent; for a call, the JSON value the client passed."""
    call: str | None = None
    """The name of the call, or None for a message to publish."""


class Reject(Exception):
    """The message is refused: not published, and the sender gets ``reason``."""

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    """Not published: ``data`` (any JSON value) goes to the sender alone."""

    data: Any = None
