"""When each websocket of a stopping server closes: spread over a window, not all at once.

A server that closes all its websockets at once on SIGTERM sends every client back within
the same few milliseconds: the servers left behind get all their handshakes (and session
lookups) in one burst. Closing them evenly over ``WS4REDIS_DRAIN_SECONDS`` turns that burst
into a steady trickle; the runtime asks :class:`DrainSchedule` how many are due at each
moment and only does the closing.
"""

from __future__ import annotations


class DrainSchedule:
    """Close ``count`` websockets evenly over ``window`` seconds starting at ``start``.

    The websocket number ``i`` (from 0) is due at ``start + i * window / count``: the first
    one at once, the last one a step before the window ends, so the drain is over within
    the window whatever ``count`` is. A window of 0 makes every websocket due at once.
    Times are whatever clock the runtime uses; the schedule only compares them.
    """

    __slots__ = ("closed", "count", "start", "step")

    def __init__(self, count: int, window: float, start: float) -> None:
        self.count = count
        self.start = start
        self.step = window / count if count else 0.0
        self.closed = 0
        """How many :meth:`due` handed out so far."""

    def due(self, now: float) -> int:
        """How many more websockets to close at ``now`` (counted as closed from then on)."""
        before = self.closed
        # One step at a time, by the same sum as next_at(): a runtime that waited until
        # next_at() always finds at least one due (no rounding leaves it spinning).
        while (at := self.next_at()) is not None and at <= now:
            self.closed += 1
        return self.closed - before

    def next_at(self) -> float | None:
        """When the next websocket is due; None once every one was handed out."""
        if self.closed >= self.count:
            return None
        return self.start + self.closed * self.step
