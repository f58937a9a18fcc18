"""Who is connected, without I/O (see ``docs/reference.md#presence``).

Each websocket process keeps a book of its open websockets; a worker writes the book's
changes to Redis and refreshes its entries, which expire when a process dies without
saying goodbye. Here: which facilities keep presence, what an entry and an announcement
say, and what the book must write next.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Visitor:
    """One open websocket as presence knows it."""

    id: str
    facility: str
    user: str | None
    session: str | None


def tracked(
    configured: Mapping[str, Mapping[str, bool]], facility: str
) -> Mapping[str, bool] | None:
    """The presence options of a facility (its entry in ``configured``, the value of
    ``WS4REDIS_PRESENCE``, else ``"*"``'s), or None when nobody tracks who is on it."""
    return configured.get(facility, configured.get("*"))


def entry(visitor: Visitor) -> bytes:
    """What Redis keeps about a visitor (read by the Python API only: sessions included)."""
    return json.dumps({"user": visitor.user, "session": visitor.session}).encode()


def announcement(joined: list[str | None], left: list[str | None], max_names: int) -> bytes:
    """What a facility's subscribers get about who joined and left since its last
    announcement (with ``announce``): user names only (None for anonymous), never sessions.
    One change alone is ``{"presence": "join"|"leave", "user": ...}``; more are one diff,
    ``{"presence": "diff", "joined": n, "left": m, "join": [...], "leave": [...]}``, whose
    names are left out past ``max_names`` (the counts remain)."""
    if len(joined) + len(left) == 1:
        event, user = ("join", joined[0]) if joined else ("leave", left[0])
        return json.dumps({"presence": event, "user": user}).encode()
    diff: dict[str, object] = {"presence": "diff", "joined": len(joined), "left": len(left)}
    if len(joined) + len(left) <= max_names:
        diff.update(join=joined, leave=left)
    return json.dumps(diff).encode()


class Announcer:
    """When each facility announces who joined and left: at most once every ``interval``
    seconds, everything since its last announcement in one message. So a crowd arriving at
    once costs each member one message per interval, not one per newcomer (which is
    quadratic in the crowd)."""

    def __init__(self, interval: float, max_names: int) -> None:
        self.interval = interval
        self.max_names = max_names
        self._pending: dict[str, tuple[list[str | None], list[str | None]]] = {}
        self._last: dict[str, float] = {}

    def add(self, changes: Changes, announced: Callable[[str], bool]) -> None:
        """Note what ``changes`` brings on the facilities that ``announced`` says announce."""
        for index, visitors in enumerate((changes.joined, changes.left)):
            for visitor in visitors:
                if announced(visitor.facility):
                    pending = self._pending.setdefault(visitor.facility, ([], []))
                    pending[index].append(visitor.user)

    def due(self, now: float) -> list[tuple[str, bytes]]:
        """The announcements to publish at ``now``: (facility, message)."""
        ready = []
        for facility, (joined, left) in list(self._pending.items()):
            if now >= self._last.get(facility, -self.interval) + self.interval:
                del self._pending[facility]
                self._last[facility] = now
                ready.append((facility, announcement(joined, left, self.max_names)))
        # a facility quiet for a whole interval announces its next change at once
        self._last = {f: t for f, t in self._last.items() if now < t + self.interval}
        return ready

    def next_due(self) -> float | None:
        """When the earliest pending announcement is due (monotonic seconds), or None."""
        return min(
            (self._last.get(f, -self.interval) + self.interval for f in self._pending),
            default=None,
        )


PRESENCE_LABEL = "presence"
"""The channel name announcements carry for clients that get JSON messages; no audience's
channel is called that (theirs are ``broadcast``, ``user``, ``session``, ``group:<name>``)."""


def announcement_wire(data: bytes) -> bytes | None:
    """An announcement as a client that gets JSON messages receives it:
    ``{"channel": "presence", "presence": "join", "user": ...}``; None when ``data`` is not
    an announcement (it came from Redis, so it is read, not trusted)."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or "presence" not in message:
        return None
    return json.dumps({"channel": PRESENCE_LABEL, **message}, separators=(",", ":")).encode()


@dataclass
class Changes:
    """What the worker writes next: entries to add (or refresh) and to remove."""

    joined: list[Visitor] = field(default_factory=list)
    left: list[Visitor] = field(default_factory=list)
    refresh: list[Visitor] = field(default_factory=list)


class Book:
    """The open websockets of this process on facilities with presence."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.present: dict[str, Visitor] = {}
        self.refreshed_at = 0.0
        self._joined: list[Visitor] = []
        self._left: list[Visitor] = []

    def join(self, visitor: Visitor) -> None:
        self.present[visitor.id] = visitor
        self._joined.append(visitor)

    def leave(self, visitor_id: str) -> None:
        visitor = self.present.pop(visitor_id, None)
        if visitor is not None:
            self._left.append(visitor)

    def changes(self, now: float) -> Changes:
        """What changed since the last call; every present entry is refreshed once a third
        of ``ttl`` has passed, so an entry outlives a slow round by two refreshes."""
        changes = Changes(self._joined, self._left)
        self._joined, self._left = [], []
        if now >= self.refreshed_at + self.ttl / 3:
            self.refreshed_at = now
            changes.refresh = list(self.present.values())
        return changes

    def put_back(self, changes: Changes) -> None:
        """Writing failed (Redis is away): try the same changes again next round."""
        self._joined[:0] = [v for v in changes.joined if v.id in self.present]
        self._left[:0] = changes.left
        if changes.refresh:
            self.refreshed_at = 0.0
