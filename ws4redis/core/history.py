"""Positions in a channel's history, without I/O (see ``docs/reference.md#history``).

Redis pub/sub forgets: a browser that reconnects misses what was published meanwhile. A
facility with history (``WS4REDIS_HISTORY``) keeps its recent messages per channel, each
with an *offset* (1, 2, 3… in its channel) and the channel's *epoch* (a name that changes
when the history is lost: flushed, expired, evicted). Its messages travel through pub/sub in
an envelope that carries that position; the relay takes it off again, so clients that do
not ask for positions see plain payloads as always.

Here: which facilities keep history, the envelope, and whether a client's last position can
be continued from what Redis still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ws4redis import settings

ENVELOPE = b"\x00ws4redis-history\x00"
"""Start of a message published with its position: ``ENVELOPE epoch ':' offset ':' data``.
A NUL byte opens it, which no text payload and no JSON begins with."""


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How much history a facility keeps: the last ``size`` messages, for ``ttl`` seconds
    after the last publish."""

    size: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message sits in its channel: ``offset`` within ``epoch``."""

    epoch: str
    offset: int


def options(facility: str) -> HistoryOptions | None:
    """The history a facility keeps (its own entry in ``WS4REDIS_HISTORY``, else ``"*"``),
    or None without history."""
    configured = settings.WS4REDIS_HISTORY
    entry = configured.get(facility, configured.get("*"))
    return None if entry is None else HistoryOptions(entry["size"], entry["ttl"])


def unwrap(raw: bytes) -> tuple[Position | None, bytes]:
    """A message as pub/sub delivered it: its position (None for a message published without
    history) and the payload."""
    if not raw.startswith(ENVELOPE):
        return None, raw
    epoch, offset, data = raw[len(ENVELOPE) :].split(b":", 2)
    return Position(epoch.decode(), int(offset)), data


@dataclass(frozen=True, slots=True)
class Window:
    """What Redis holds of one channel's history: its epoch, the first and last offsets kept
    (``first > last`` when nothing is kept) and the messages after a requested offset."""

    epoch: str
    first: int
    last: int
    messages: list[tuple[int, bytes]]

    def continues(self, since: Position) -> bool:
        """Whether a client whose last message was ``since`` can be given exactly what it
        missed: the same epoch, and nothing between its offset and the first one kept."""
        if since.epoch != self.epoch or since.offset > self.last:
            return False
        return since.offset >= self.first - 1
