"""Presence announcements without I/O (docs/reference.md#presence): one change alone as it
always was, a crowd in one diff per facility and interval, names left out past a bound."""

from __future__ import annotations

import json

from ws4redis.core.presence import Announcer, Changes, Visitor, announcement


def visitors(count: int, facility: str = "chat", user: str | None = None) -> list[Visitor]:
    return [Visitor(f"p:{n}", facility, user, None) for n in range(count)]


def test_one_change_alone_is_announced_as_before():
    assert json.loads(announcement(["john"], [], 100)) == {"presence": "join", "user": "john"}
    assert json.loads(announcement([], [None], 100)) == {"presence": "leave", "user": None}


def test_several_changes_are_one_diff_and_past_the_bound_only_counts():
    assert json.loads(announcement(["a", None], ["b"], 100)) == {
        "presence": "diff", "joined": 2, "left": 1, "join": ["a", None], "leave": ["b"]
    }  # fmt: skip
    assert json.loads(announcement(["a"] * 5, ["b"], 3)) == {
        "presence": "diff", "joined": 5, "left": 1
    }  # fmt: skip


def test_a_facility_announces_at_once_then_at_most_once_per_interval():
    announcer = Announcer(interval=1.0, max_names=100)
    always = lambda facility: True  # noqa: E731
    announcer.add(Changes(joined=visitors(1, user="first")), always)
    [(facility, first)] = announcer.due(now=10.0)
    assert facility == "chat" and json.loads(first)["user"] == "first"  # quiet: at once
    for n in range(1000):  # a crowd arriving within the interval
        announcer.add(Changes(joined=[Visitor(f"c:{n}", "chat", None, None)]), always)
    assert announcer.due(now=10.5) == []
    assert announcer.next_due() == 11.0
    [(_, diff)] = announcer.due(now=11.0)
    assert json.loads(diff) == {"presence": "diff", "joined": 1000, "left": 0}
    assert announcer.next_due() is None


def test_facilities_without_announce_are_not_announced():
    announcer = Announcer(interval=1.0, max_names=100)
    announcer.add(Changes(joined=visitors(3, "quiet")), lambda facility: facility != "quiet")
    assert announcer.due(now=0.0) == [] and announcer.next_due() is None
