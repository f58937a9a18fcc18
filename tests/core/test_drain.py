"""The drain schedule: which websockets of a stopping server close when."""

from __future__ import annotations

from ws4redis.core.drain import DrainSchedule


def test_closes_evenly_over_the_window_first_one_at_once():
    schedule = DrainSchedule(10, 5.0, start=100.0)
    assert schedule.due(100.0) == 1  # the first at once
    assert schedule.next_at() == 100.5
    assert schedule.due(100.4) == 0
    assert schedule.due(101.0) == 2  # due at 100.5 and 101.0
    assert schedule.due(102.74) == 3  # 101.5, 102.0, 102.5
    assert schedule.due(104.5) == 4  # the last one a step before the window ends
    assert schedule.next_at() is None
    assert schedule.due(200.0) == 0
    assert schedule.closed == 10


def test_waiting_until_next_at_always_finds_one_due():
    schedule = DrainSchedule(3, 0.1, start=0.3)  # steps that floats do not add up exactly
    closed = 0
    while (at := schedule.next_at()) is not None:
        assert schedule.due(at) >= 1
        closed += 1
    assert closed == 3


def test_a_window_of_zero_closes_everything_at_once():
    schedule = DrainSchedule(1000, 0, start=5.0)
    assert schedule.due(5.0) == 1000
    assert schedule.next_at() is None


def test_nothing_to_close():
    schedule = DrainSchedule(0, 10.0, start=0.0)
    assert schedule.next_at() is None
    assert schedule.due(20.0) == 0
