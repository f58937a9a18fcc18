"""The counts: open websockets change in one place, and a relay counts where it is told."""

from __future__ import annotations

from ws4redis.core.relay import Failure, FailureKind
from ws4redis.core.stats import Stats


def test_open_counts_change_in_one_place():
    stats = Stats()
    stats.change("chat", +1)
    stats.change("chat", +1)
    stats.change("news", +1)
    assert (stats.connections, stats.handshakes[101]) == (3, 3)
    assert stats.facilities == {"chat": 2, "news": 1}
    stats.change("chat", -1)
    stats.change("news", -1)
    assert stats.connections == 1 and stats.handshakes[101] == 3  # a close is no handshake
    assert stats.facilities == {"chat": 1}  # a facility nobody is on is not listed


def test_a_failure_says_its_kind_whatever_its_reason_says():
    assert Failure.TOO_SLOW.code == 1008 and Failure.TOO_SLOW.kind is FailureKind.TOO_SLOW
