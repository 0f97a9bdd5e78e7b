"""Sticky sessions: a session stays on the target that last answered it, for ttl_s, in a bounded LRU."""

from __future__ import annotations

import pytest

from addons.fallback.sticky import StickyTable

PRIMARY = "openrouter:qwen/qwen3-coder:free"
WINNER = "openrouter:qwen/qwen3-coder"


class Clock:
    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_holds_within_the_ttl_and_expires_after_it():
    clock = Clock()
    sticky = StickyTable(ttl_s=300, clock=clock)
    assert sticky.get("s1", PRIMARY) is None
    sticky.set("s1", PRIMARY, WINNER)
    clock.advance(299.9)
    assert sticky.get("s1", PRIMARY) == WINNER
    assert sticky.get("s2", PRIMARY) is None  # another session
    assert sticky.get("s1", "anthropic:claude-sonnet-4-5") is None  # another primary of the same session
    clock.advance(0.1)
    assert sticky.get("s1", PRIMARY) is None
    assert sticky.snapshot() == []


def test_every_answer_restarts_the_ttl():
    clock = Clock()
    sticky = StickyTable(ttl_s=300, clock=clock)
    sticky.set("s1", PRIMARY, WINNER)
    clock.advance(200)
    sticky.set("s1", PRIMARY, WINNER)
    clock.advance(200)
    assert sticky.get("s1", PRIMARY) == WINNER  # 400 s after the first answer, 200 s after the last


def test_the_primary_answering_ends_the_stickiness():
    clock = Clock()
    sticky = StickyTable(clock=clock)
    sticky.set("s1", PRIMARY, WINNER)
    sticky.set("s1", PRIMARY, PRIMARY)
    assert sticky.get("s1", PRIMARY) is None
    assert sticky.snapshot() == []


def test_forget_and_a_new_winner():
    clock = Clock()
    sticky = StickyTable(clock=clock)
    sticky.set("s1", PRIMARY, WINNER)
    sticky.set("s1", PRIMARY, "groq:qwen3-32b")  # the sticky target failed over to a third one
    assert sticky.get("s1", PRIMARY) == "groq:qwen3-32b"
    sticky.forget("s1", PRIMARY)
    assert sticky.get("s1", PRIMARY) is None
    sticky.forget("s1", PRIMARY)  # twice is fine


def test_lru_bound_evicts_the_least_recently_used():
    clock = Clock()
    sticky = StickyTable(clock=clock, max_entries=2)
    sticky.set("a", PRIMARY, WINNER)
    sticky.set("b", PRIMARY, WINNER)
    assert sticky.get("a", PRIMARY) == WINNER  # "a" is now the most recently used
    sticky.set("c", PRIMARY, WINNER)
    assert sticky.get("b", PRIMARY) is None
    assert sticky.get("a", PRIMARY) == WINNER and sticky.get("c", PRIMARY) == WINNER
    assert len(sticky.snapshot()) == 2


def test_snapshot_lists_live_entries_longest_lived_first():
    clock = Clock()
    sticky = StickyTable(ttl_s=300, clock=clock)
    sticky.set("old", PRIMARY, WINNER)
    clock.advance(100)
    sticky.set("new", PRIMARY, "groq:qwen3-32b")
    clock.advance(50)
    assert sticky.snapshot() == [
        {"session": "new", "primary": PRIMARY, "target": "groq:qwen3-32b", "expires_in_s": 250.0},
        {"session": "old", "primary": PRIMARY, "target": WINNER, "expires_in_s": 150.0},
    ]
    clock.advance(150)
    assert [e["session"] for e in sticky.snapshot()] == ["new"]


def test_configure_applies_to_existing_entries():
    clock = Clock()
    sticky = StickyTable(ttl_s=600, clock=clock)
    sticky.set("s1", PRIMARY, WINNER)
    clock.advance(400)
    sticky.configure(300)
    assert sticky.get("s1", PRIMARY) is None
    sticky.set("s1", PRIMARY, WINNER)
    sticky.configure(0)  # stickiness off
    assert sticky.get("s1", PRIMARY) is None
    with pytest.raises(ValueError):
        sticky.configure(-1)
    with pytest.raises(ValueError):
        StickyTable(max_entries=0)


def test_what_another_replica_shared_is_taken_only_when_newer_and_every_change_is_told():
    clock = Clock()
    sticky = StickyTable(ttl_s=300, clock=clock)
    told = []
    sticky.on_change = lambda *change: told.append(change)
    sticky.set("s1", PRIMARY, PRIMARY)  # the primary answered and nothing was stuck: nothing to tell
    sticky.set("s1", PRIMARY, WINNER)
    assert told == [("s1", PRIMARY, WINNER, clock.now)]
    sticky.adopt("s1", PRIMARY, None)  # nothing shared (an outage): kept
    sticky.adopt("s1", PRIMARY, ("openrouter:older", clock.now - 5))  # older than ours: kept
    assert sticky.get("s1", PRIMARY) == WINNER
    sticky.adopt("s1", PRIMARY, (None, clock.now + 1))  # another replica went back to the order since
    assert sticky.get("s1", PRIMARY) is None
    sticky.adopt("s2", PRIMARY, ("openrouter:other", clock.now))
    assert sticky.get("s2", PRIMARY) == "openrouter:other" and len(told) == 1  # adopting tells nobody
    sticky.forget("s2", PRIMARY)
    assert told[-1] == ("s2", PRIMARY, None, clock.now)  # shared as "back to the order"
