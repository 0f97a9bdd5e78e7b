"""Circuit breakers: weighted failures in a window, one half-open probe, persistence by wall clock."""

from __future__ import annotations

import json
import logging

import pytest

from addons.fallback.breakers import HARD, SOFT, BreakerBoard
from addons.config.statefile import load_json, save_json

KEY = "openrouter:qwen/qwen3-coder:free"
T0 = 1_780_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def board(clock: Clock, **settings) -> BreakerBoard:
    return BreakerBoard(**{"threshold": 3.0, "window_s": 60.0, "cooldown_s": 60.0, **settings}, clock=clock)


def opened(clock: Clock, key: str = KEY) -> BreakerBoard:
    breakers = board(clock)
    for _ in range(3):
        breakers.failure(key, HARD, "HTTP 503")
    assert breakers.state(key) == "open"
    return breakers


@pytest.mark.parametrize("weights", [[HARD] * 3, [SOFT] * 6, [HARD, SOFT, HARD, SOFT]],
                         ids=["3-hard", "6-soft", "2-hard-2-soft"])
def test_opens_exactly_at_the_threshold(weights):
    clock = Clock()
    breakers = board(clock)
    for weight in weights[:-1]:
        breakers.failure(KEY, weight, "HTTP 502")
        clock.advance(1)
        assert breakers.state(KEY) == "closed" and breakers.allow(KEY) and not breakers.is_open(KEY)
    breakers.failure(KEY, weights[-1], "HTTP 502")
    assert breakers.state(KEY) == "open"
    assert not breakers.allow(KEY) and breakers.is_open(KEY)
    assert breakers.retry_after(KEY) == 60.0
    assert breakers.allow("openrouter:other") and breakers.state("openrouter:other") == "closed"


def test_failures_outside_the_window_are_forgotten():
    clock = Clock()
    breakers = board(clock)
    breakers.failure(KEY)
    breakers.failure(KEY)
    clock.advance(60)  # those two are now exactly a window old
    breakers.failure(KEY)
    breakers.failure(KEY)
    assert breakers.state(KEY) == "closed"
    assert breakers.snapshot()[KEY]["failures"] == 2.0
    clock.advance(59.9)
    breakers.failure(KEY)  # three within the last 60 s
    assert breakers.state(KEY) == "open"


def test_a_success_while_closed_clears_the_failures():
    clock = Clock()
    breakers = board(clock)
    breakers.failure(KEY)
    breakers.failure(KEY)
    breakers.success(KEY)
    breakers.failure(KEY)
    breakers.failure(KEY)
    assert breakers.state(KEY) == "closed"
    assert breakers.snapshot()[KEY]["failures"] == 2.0


def test_the_cooldown_ends_in_half_open_with_a_single_probe():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(59.9)
    assert breakers.state(KEY) == "open" and not breakers.allow(KEY)
    assert breakers.retry_after(KEY) == pytest.approx(0.1)
    clock.advance(0.1)
    assert breakers.state(KEY) == "half_open"
    assert not breakers.is_open(KEY)  # the probe is free: a cascade keeps this candidate
    assert not breakers.is_open(KEY)  # and asking does not take it
    first, second = breakers.allow(KEY), breakers.allow(KEY)  # two requests arrive together
    assert (first, second) == (True, False)
    assert breakers.is_open(KEY) and breakers.retry_after(KEY) == 0.0
    assert breakers.snapshot()[KEY]["probe_in_flight"] is True


def test_probe_success_closes_and_starts_counting_afresh():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(60)
    assert breakers.allow(KEY)
    breakers.success(KEY)
    assert breakers.state(KEY) == "closed" and breakers.allow(KEY) and breakers.allow(KEY)
    assert breakers.retry_after(KEY) is None
    breakers.failure(KEY)
    breakers.failure(KEY)
    assert breakers.state(KEY) == "closed"  # the three old failures were cleared
    assert KEY in breakers.snapshot()
    breakers.success(KEY)
    assert breakers.snapshot() == {}


def test_probe_failure_reopens_with_a_fresh_cooldown():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(75)
    assert breakers.allow(KEY)
    clock.advance(5)  # the probe takes 5 s to fail
    breakers.failure(KEY, SOFT, "empty answer")  # even a soft failure: the probe was the test
    assert breakers.state(KEY) == "open"
    assert breakers.retry_after(KEY) == 60.0
    snap = breakers.snapshot()[KEY]
    assert (snap["opened_at"], snap["until"], snap["reason"]) == (T0 + 80, T0 + 140, "empty answer")
    clock.advance(59)
    assert not breakers.allow(KEY)
    clock.advance(1)
    assert breakers.allow(KEY) and not breakers.allow(KEY)


def test_release_gives_the_probe_back():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(60)
    assert breakers.allow(KEY) and not breakers.allow(KEY)
    breakers.release(KEY)  # the agent cancelled the probe's request
    assert breakers.state(KEY) == "half_open" and not breakers.is_open(KEY)
    assert breakers.allow(KEY) and not breakers.allow(KEY)
    breakers.release("openrouter:never-seen")  # harmless
    assert breakers.state("openrouter:never-seen") == "closed"


def test_a_probe_that_never_reports_is_handed_out_again_after_its_lease(caplog):
    clock = Clock()
    breakers = opened(clock)
    clock.advance(60)
    assert breakers.allow(KEY)
    clock.advance(breakers.probe_lease_s - 1)
    assert not breakers.allow(KEY)
    clock.advance(1)
    with caplog.at_level(logging.WARNING, logger="addons.fallback.breakers"):
        assert breakers.allow(KEY)
    assert "never reported" in caplog.text


def test_straggler_verdicts_while_open_change_nothing():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(30)
    breakers.failure(KEY, HARD, "a request sent before it opened")
    breakers.success(KEY)
    assert breakers.state(KEY) == "open"
    assert breakers.retry_after(KEY) == 30.0
    assert breakers.snapshot()[KEY]["reason"] == "HTTP 503"


def test_configure_keeps_states_and_applies_to_what_comes_next():
    clock = Clock()
    breakers = opened(clock)
    breakers.failure("groq:llama", HARD)
    breakers.configure(threshold=2.0, window_s=10.0, cooldown_s=5.0)
    assert breakers.state(KEY) == "open" and breakers.retry_after(KEY) == 60.0  # the running cooldown stays
    breakers.failure("groq:llama", HARD)
    assert breakers.state("groq:llama") == "open" and breakers.retry_after("groq:llama") == 5.0
    with pytest.raises(ValueError):
        breakers.configure(threshold=0, window_s=10.0, cooldown_s=5.0)


def test_snapshot_reports_state_weight_times_and_reason():
    clock = Clock()
    breakers = board(clock)
    breakers.failure("a:x", HARD, "HTTP 500")
    breakers.failure("a:x", SOFT, "no tool call")
    for _ in range(3):
        breakers.failure("b:y", HARD, "timeout (first byte)")
    assert breakers.snapshot() == {
        "a:x": {"state": "closed", "failures": 1.5, "opened_at": None, "until": None, "reason": "no tool call",
                "probe_in_flight": False},
        "b:y": {"state": "open", "failures": 3.0, "opened_at": T0, "until": T0 + 60, "reason": "timeout (first byte)",
                "probe_in_flight": False},
    }
    clock.advance(60)
    assert breakers.snapshot() == {"b:y": {"state": "half_open", "failures": 0.0, "opened_at": T0, "until": T0 + 60,
                                           "reason": "timeout (first byte)", "probe_in_flight": False}}


def test_version_moves_on_changes_only():
    clock = Clock()
    breakers = board(clock)
    start = breakers.version
    breakers.success(KEY)
    breakers.allow(KEY)
    breakers.is_open(KEY)
    assert breakers.version == start  # the hot path of a healthy model never asks for a save
    breakers.failure(KEY)
    after_failure = breakers.version
    assert after_failure > start
    breakers.failure(KEY)
    breakers.failure(KEY)
    assert breakers.version > after_failure
    opened_version = breakers.version
    clock.advance(60)
    assert breakers.state(KEY) == "half_open" and breakers.version > opened_version


def _restart(breakers: BreakerBoard, clock: Clock) -> BreakerBoard:
    """What the addon does: save, and a new process loads it (through real JSON)."""
    saved = json.loads(json.dumps(breakers.to_json()))
    restored = board(clock)
    restored.load(saved)
    return restored


def test_restart_keeps_the_remaining_cooldown():
    clock = Clock()
    breakers = opened(clock)
    restored = _restart(breakers, Clock(T0 + 20))
    assert restored.state(KEY) == "open" and not restored.allow(KEY)
    assert restored.retry_after(KEY) == pytest.approx(40.0)
    assert restored.snapshot()[KEY]["reason"] == "HTTP 503"


def test_restart_after_the_cooldown_passed_gives_half_open():
    clock = Clock()
    breakers = opened(clock)
    later = Clock(T0 + 3600)
    restored = _restart(breakers, later)
    assert restored.state(KEY) == "half_open"
    assert restored.allow(KEY) and not restored.allow(KEY)
    restored.success(KEY)
    assert restored.state(KEY) == "closed"


def test_restart_frees_a_probe_that_was_in_flight():
    clock = Clock()
    breakers = opened(clock)
    clock.advance(60)
    assert breakers.allow(KEY)  # the probe is out when the process stops
    restored = _restart(breakers, Clock(T0 + 61))
    assert restored.state(KEY) == "half_open" and not restored.is_open(KEY)
    assert restored.allow(KEY) and not restored.allow(KEY)


def test_restart_keeps_failures_within_the_window():
    clock = Clock()
    breakers = board(clock)
    breakers.failure(KEY, HARD, "HTTP 502")
    clock.advance(30)
    breakers.failure(KEY, HARD, "HTTP 502")
    restored = _restart(breakers, Clock(T0 + 40))
    assert restored.snapshot()[KEY]["failures"] == 2.0
    restored.failure(KEY)
    assert restored.state(KEY) == "open"
    assert _restart(breakers, Clock(T0 + 70)).snapshot()[KEY]["failures"] == 1.0  # the first one aged out


def test_a_clock_set_back_cannot_lengthen_a_restored_cooldown():
    breakers = opened(Clock())
    restored = _restart(breakers, Clock(T0 - 3600))
    assert restored.retry_after(KEY) == 60.0


def test_through_a_state_file(tmp_path):
    breakers = opened(Clock())
    save_json(tmp_path / "breakers.json", breakers.to_json())
    restored = board(Clock(T0 + 45))
    restored.load(load_json(tmp_path / "breakers.json"))
    assert restored.retry_after(KEY) == pytest.approx(15.0)


def test_load_skips_nonsense_and_keeps_the_rest(caplog):
    restored = board(Clock(T0 + 10))
    good = {"state": "open", "failures": [[T0, 1.0]], "opened_at": T0, "until": T0 + 60, "reason": "HTTP 503"}
    with caplog.at_level(logging.WARNING, logger="addons.fallback.breakers"):
        restored.load({"breakers": {"a:unknown-state": {"state": "melting"}, "b:not-an-object": "open",
                                    "c:no-times": {"state": "open"}, "d:nan": {**good, "until": float("nan")},
                                    "e:bad-failure": {"state": "closed", "failures": [["x", 1]]},
                                    KEY: good}})
    assert restored.snapshot().keys() == {KEY}
    assert restored.retry_after(KEY) == pytest.approx(50.0)
    assert caplog.text.count("ignored") == 5
    restored.load({"something": "else"})
    assert restored.snapshot() == {}


def test_reset_forgets_the_selected_breakers_and_their_failures():
    from addons.web.breaker_reset import selector
    clock = Clock()
    breakers = opened(clock)
    breakers.failure("openrouter:other", HARD, "HTTP 500")  # closed, one failure
    breakers.failure("anthropic:claude", HARD, "HTTP 500")
    version = breakers.version
    cleared = breakers.reset(selector("openrouter"))
    assert cleared == {KEY: {"state": "open", "failures": 3.0, "until": T0 + 60},
                       "openrouter:other": {"state": "closed", "failures": 1.0, "until": None}}
    assert breakers.version > version
    assert breakers.state(KEY) == "closed" and breakers.allow(KEY)
    assert list(breakers.snapshot()) == ["anthropic:claude"]
    assert breakers.reset(selector("openrouter")) == {}  # nothing left: no change, nothing to save


def test_a_breaker_another_replica_opened_is_adopted_and_only_this_replicas_own_are_told():
    clock = Clock()
    breakers = board(clock)
    opened, closed = [], []
    breakers.on_open = lambda *event: opened.append(event)
    breakers.on_close = closed.append
    breakers.adopt("or:elsewhere", clock.now - 5, clock.now + 55, "HTTP 500")
    assert breakers.is_open("or:elsewhere") and 54 < breakers.retry_after("or:elsewhere") <= 55
    assert opened == []  # adopted: not told back
    breakers.adopt("or:elsewhere", clock.now - 30, clock.now + 30, "older news")  # a shorter one changes nothing
    assert 54 < breakers.retry_after("or:elsewhere") <= 55
    breakers.adopt("or:gone", clock.now - 90, clock.now - 30, "ended")  # an ended cooldown is not adopted
    assert breakers.state("or:gone") == "closed"
    for _ in range(3):
        breakers.failure("or:here", 1.0, "HTTP 502")
    assert opened == [("or:here", clock.now, clock.now + 60, "HTTP 502")]
    clock.advance(61)
    assert breakers.allow("or:here")  # the probe
    breakers.success("or:here")
    assert closed == ["or:here"] and breakers.state("or:here") == "closed"
