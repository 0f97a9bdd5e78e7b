"""Quotas: sliding rpm, rpd per UTC day, provider quotas shared by models, 429 cooldowns, the
account-wide free-model daily cap, persistence."""

from __future__ import annotations

import datetime
import json
import logging

import pytest

from addons.fallback.quotas import QuotaBook
from addons.config.rules import Quota

NOON = datetime.datetime(2026, 5, 9, 12, 0, tzinfo=datetime.UTC).timestamp()
MIDNIGHT = datetime.datetime(2026, 5, 10, 0, 0, tzinfo=datetime.UTC).timestamp()
FREE = "openrouter:qwen/qwen3-coder:free"
PAID = "openrouter:qwen/qwen3-coder"


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def book_of(clock: Clock, quotas: dict[str, dict]) -> QuotaBook:
    quota_book = QuotaBook(clock=clock)
    quota_book.configure({key: Quota(**q) for key, q in quotas.items()})
    return quota_book


def test_no_quota_means_allowed():
    clock = Clock()
    quotas = book_of(clock, {})
    for _ in range(1000):
        quotas.consume(PAID)
    assert quotas.wait_s(PAID) is None


def test_rpm_is_a_sliding_window():
    clock = Clock()
    quotas = book_of(clock, {PAID: {"rpm": 2}})
    quotas.consume(PAID)
    clock.advance(10)
    assert quotas.wait_s(PAID) is None
    quotas.consume(PAID)
    assert quotas.wait_s(PAID) == pytest.approx(50.0)  # the first send leaves the window at NOON + 60
    clock.advance(49.9)
    assert quotas.wait_s(PAID) == pytest.approx(0.1)
    clock.advance(0.1)
    assert quotas.wait_s(PAID) is None
    quotas.consume(PAID)
    assert quotas.wait_s(PAID) == pytest.approx(10.0)  # now the send at NOON + 10 is the oldest in the window
    assert quotas.wait_s("openrouter:another-model") is None  # a model quota is that model's alone


def test_sends_beyond_the_limit_wait_for_the_right_one_to_leave():
    clock = Clock()
    quotas = book_of(clock, {PAID: {"rpm": 2}})
    for _ in range(4):  # forced sends (e.g. every candidate was over quota) still count
        quotas.consume(PAID)
        clock.advance(5)
    # sends at 0, 5, 10, 15; now 20: below 2 in the window once the send at 10 has left, at 70
    assert quotas.wait_s(PAID) == pytest.approx(50.0)


def test_rpd_resets_at_utc_midnight():
    clock = Clock(MIDNIGHT - 120)
    quotas = book_of(clock, {PAID: {"rpd": 2}})
    quotas.consume(PAID)
    quotas.consume(PAID)
    assert quotas.wait_s(PAID) == pytest.approx(120.0)
    clock.advance(119)
    assert quotas.wait_s(PAID) == pytest.approx(1.0)
    clock.advance(1)
    assert quotas.wait_s(PAID) is None
    assert quotas.snapshot()[PAID]["rpd"] == "0/2"
    quotas.consume(PAID)
    assert quotas.snapshot()[PAID]["rpd"] == "1/2"


def test_the_longest_limit_wins():
    clock = Clock(MIDNIGHT - 3600)
    quotas = book_of(clock, {PAID: {"rpm": 1, "rpd": 1}})
    quotas.consume(PAID)
    assert quotas.wait_s(PAID) == pytest.approx(3600.0)  # the day, not the minute


def test_a_provider_quota_counts_all_its_models_together():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 2}, "openrouter:a": {"rpm": 5}})
    quotas.consume("openrouter:a")
    clock.advance(1)
    quotas.consume("openrouter:b")
    for target in ("openrouter:a", "openrouter:b", "openrouter:c"):
        assert quotas.wait_s(target) == pytest.approx(59.0)
    assert quotas.wait_s("groq:llama") is None
    snapshot = quotas.snapshot()
    assert snapshot["openrouter"]["rpm"] == "2/2" and snapshot["openrouter:a"]["rpm"] == "1/5"


def test_a_model_quota_holds_even_when_the_provider_has_room():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 100}, "openrouter:a": {"rpd": 1}})
    quotas.consume("openrouter:a")
    assert quotas.wait_s("openrouter:a") == pytest.approx(12 * 3600)
    assert quotas.wait_s("openrouter:b") is None


@pytest.mark.parametrize("quotas, retry_after, expected", [
    ({}, None, None),  # no quota in the rules and no Retry-After: no rest
    ({}, 120.0, 120.0),  # no quota: the provider's Retry-After
    ({"openrouter": {"cooldown_after_429_s": 10}}, None, 10.0),
    ({"openrouter": {"cooldown_after_429_s": 10}}, 3.0, 10.0),  # never shorter than the rules say
    ({"openrouter": {"cooldown_after_429_s": 10}}, 25.0, 25.0),
    ({"openrouter": {"cooldown_after_429_s": 10}, PAID: {"cooldown_after_429_s": 5}}, None, 5.0),  # the model's own
    ({"openrouter": {"cooldown_after_429_s": 10}, PAID: {"rpm": 5}}, None, 10.0),  # the model names none
    ({PAID: {"cooldown_after_429_s": 0}}, None, None),  # turned off
    ({}, 10 ** 9, 86_400.0),  # an absolute time sent as Retry-After
    ({}, float("nan"), None),
    ({PAID: {"rpm": 5}}, None, 60.0),  # a quota with no cooldown named: its default
])
def test_cooldown_after_a_429(quotas, retry_after, expected):
    clock = Clock()
    quota_book = book_of(clock, quotas)
    quota_book.cooldown(PAID, retry_after)
    assert quota_book.wait_s(PAID) == (pytest.approx(expected) if expected is not None else None)
    assert quota_book.wait_s("openrouter:another-model") is None  # a model's 429 is that model's
    if expected is not None:
        clock.advance(expected)
        assert quota_book.wait_s(PAID) is None


def test_a_later_shorter_429_does_not_shorten_the_cooldown():
    clock = Clock()
    quotas = book_of(clock, {})
    quotas.cooldown(PAID, 100)
    clock.advance(10)
    quotas.cooldown(PAID, 5)
    assert quotas.wait_s(PAID) == pytest.approx(90.0)


def test_a_provider_cooldown_holds_all_its_models():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"cooldown_after_429_s": 30}})
    quotas.cooldown("openrouter", None)
    assert quotas.wait_s(PAID) == pytest.approx(30.0) and quotas.wait_s(FREE) == pytest.approx(30.0)
    assert quotas.wait_s("groq:llama") is None


def test_the_free_daily_cap_holds_only_free_models_of_that_provider_until_midnight(caplog):
    clock = Clock(MIDNIGHT - 4 * 3600)
    quotas = book_of(clock, {})
    with caplog.at_level(logging.WARNING, logger="addons.fallback.quotas"):
        quotas.free_daily_cap("openrouter")
    assert "openrouter" in caplog.text
    assert quotas.wait_s(FREE) == pytest.approx(4 * 3600.0)
    assert quotas.wait_s("openrouter:meta-llama/llama-3.3-70b-instruct:free") == pytest.approx(4 * 3600.0)
    assert quotas.wait_s(PAID) is None
    assert quotas.wait_s("chutes:qwen/qwen3-coder:free") is None  # another provider's account
    assert quotas.snapshot()["free_daily_cap"] == {"openrouter": MIDNIGHT}
    clock.advance(4 * 3600 - 1)
    assert quotas.wait_s(FREE) == pytest.approx(1.0)
    clock.advance(1)
    assert quotas.wait_s(FREE) is None
    assert quotas.snapshot()["free_daily_cap"] == {}


def test_snapshot_shape():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 20, "rpd": 50}, PAID: {"cooldown_after_429_s": 5}})
    quotas.consume(FREE)
    quotas.cooldown(PAID, None)
    assert quotas.snapshot() == {
        "openrouter": {"rpm": "1/20", "rpd": "1/50", "cooldown_until": None, "wait_s": None},
        PAID: {"rpm": None, "rpd": None, "cooldown_until": NOON + 5, "wait_s": 5.0},
        "free_daily_cap": {},
    }


def test_memory_stays_bounded():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 1000, "rpd": 100_000}})
    for i in range(500):
        quotas.consume(f"groq:model-{i}")  # no quota: nothing kept
        quotas.consume("openrouter:a")
        quotas.cooldown(f"groq:model-{i}", 1)
    assert set(quotas.to_json()["minute"]) == {"openrouter"}
    assert len(quotas.to_json()["minute"]["openrouter"]) == 500
    clock.advance(61)
    quotas.consume("openrouter:a")
    saved = quotas.to_json()
    assert saved["minute"] == {"openrouter": [clock.now]}  # old send times pruned
    assert saved["cooldowns"] == {}  # the 1 s cooldowns ended
    assert saved["day"] == {"openrouter": ["2026-05-09", 501]}


def test_a_reload_keeps_counts_of_keys_that_keep_their_quota():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 2}, "groq": {"rpm": 2}})
    quotas.consume("openrouter:a")
    quotas.consume("openrouter:a")
    quotas.consume("groq:b")
    quotas.configure({"openrouter": Quota(rpm=2)})
    assert quotas.wait_s("openrouter:a") == pytest.approx(60.0)
    assert set(quotas.to_json()["minute"]) == {"openrouter"}  # groq's quota is gone, and its count


def _restart(quotas: QuotaBook, clock: Clock, configured: dict[str, dict]) -> QuotaBook:
    saved = json.loads(json.dumps(quotas.to_json()))
    restored = book_of(clock, configured)
    restored.load(saved)
    return restored


def test_counts_cooldowns_and_the_free_cap_survive_a_restart():
    configured = {"openrouter": {"rpm": 3, "rpd": 5}, "groq:llama": {"rpm": 1}}
    clock = Clock()
    quotas = book_of(clock, configured)
    for _ in range(3):
        quotas.consume(PAID)
    quotas.consume("groq:llama")
    quotas.cooldown("deepseek:chat", 120)
    quotas.free_daily_cap("openrouter")
    restored = _restart(quotas, Clock(NOON + 20), configured)
    assert restored.wait_s(PAID) == pytest.approx(40.0)  # the rpm window came back
    assert restored.wait_s("groq:llama") == pytest.approx(40.0)
    assert restored.wait_s("deepseek:chat") == pytest.approx(100.0)
    assert restored.wait_s(FREE) == pytest.approx(MIDNIGHT - NOON - 20)
    assert restored.snapshot()["openrouter"]["rpd"] == "3/5"
    later = Clock(NOON + 3600)
    restored = _restart(quotas, later, configured)
    assert restored.wait_s(PAID) is None
    restored.consume(PAID)
    restored.consume(PAID)
    assert restored.wait_s(PAID) == pytest.approx(12 * 3600 - 3600)  # 5 today: the day's count came back


def test_yesterdays_counts_do_not_come_back():
    configured = {"openrouter": {"rpd": 2}}
    quotas = book_of(Clock(MIDNIGHT - 10), configured)
    quotas.consume(PAID)
    quotas.consume(PAID)
    quotas.free_daily_cap("openrouter")
    restored = _restart(quotas, Clock(MIDNIGHT + 10), configured)
    assert restored.wait_s(PAID) is None and restored.wait_s(FREE) is None
    assert restored.to_json() == {"minute": {}, "day": {}, "cooldowns": {}, "free_daily_cap": {}}


def test_load_before_configure_keeps_the_counts():
    configured = {"openrouter": {"rpm": 1}}
    quotas = book_of(Clock(), configured)
    quotas.consume(PAID)
    restored = QuotaBook(clock=Clock(NOON + 1))
    restored.load(json.loads(json.dumps(quotas.to_json())))
    restored.configure({"openrouter": Quota(rpm=1)})
    assert restored.wait_s(PAID) == pytest.approx(59.0)


def test_load_skips_nonsense(caplog):
    restored = book_of(Clock(), {"openrouter": {"rpm": 5}})
    with caplog.at_level(logging.WARNING, logger="addons.fallback.quotas"):
        restored.load({"minute": {"openrouter": [NOON - 1, "x"], "groq": 3},
                       "day": {"openrouter": "today"}, "cooldowns": {"a:b": None, "c:d": NOON + 10**9},
                       "free_daily_cap": []})
    assert restored.to_json() == {"minute": {}, "day": {}, "cooldowns": {"c:d": NOON + 86_400}, "free_daily_cap": {}}
    assert caplog.text.count("ignored") == 5


def test_clear_cooldowns_ends_the_selected_cooldowns_and_a_providers_free_cap_but_keeps_counts():
    from addons.web.breaker_reset import selector
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpd": 10, "cooldown_after_429_s": 300}})
    quotas.consume(PAID)
    quotas.cooldown(PAID, None)
    quotas.cooldown(FREE, None)
    quotas.free_daily_cap("openrouter")
    assert quotas.clear_cooldowns(selector(PAID)) == {"cooldowns": {PAID: NOON + 300}, "free_daily_cap": {}}
    assert quotas.wait_s(PAID) is None and quotas.wait_s(FREE) is not None  # the account's cap still holds
    cleared = quotas.clear_cooldowns(selector("openrouter"))
    assert cleared == {"cooldowns": {FREE: NOON + 300}, "free_daily_cap": {"openrouter": MIDNIGHT}}
    assert quotas.wait_s(FREE) is None
    assert quotas.snapshot()["openrouter"]["rpd"] == "1/10"  # what was sent still counts


def test_take_counts_only_what_it_admits():
    clock = Clock()
    quotas = book_of(clock, {"openrouter": {"rpm": 3}, PAID: {"rpd": 5}})
    assert [quotas.take(PAID) for _ in range(3)] == [None, None, None]
    wait = quotas.take(PAID)
    assert wait is not None and 59 < wait <= 60  # the provider's minute is full
    snapshot = quotas.snapshot()
    assert snapshot["openrouter"]["rpm"] == "3/3" and snapshot[PAID]["rpd"] == "3/5"  # the refusal counted nothing
    clock.advance(61)
    assert quotas.take(PAID) is None and quotas.snapshot()[PAID]["rpd"] == "4/5"


def test_a_shared_cooldown_is_adopted_told_and_dropped_when_the_shared_state_lost_it():
    clock = Clock()
    quotas = book_of(clock, {"openrouter:m": {"cooldown_after_429_s": 60}})
    told = []
    quotas.on_hold = lambda *hold: told.append(hold)
    quotas.cooldown("openrouter:m", 2)
    assert told == [("cooldown", "openrouter:m", clock.now + 60)]
    until = quotas.adopt("cooldown", "openrouter:x", clock.now + 30)
    assert until == clock.now + 30 and quotas.hold_s("openrouter:x") == pytest.approx(30) and len(told) == 1
    assert quotas.adopt("cooldown", "openrouter:m", clock.now + 10) is None  # ours runs longer
    assert quotas.adopt("free_cap", "openrouter", clock.now + 10 * 86400) is not None  # capped at midnight
    assert quotas.hold_s("openrouter:y:free") <= 86400
    quotas.drop_adopted("cooldown", "openrouter:x", clock.now + 29)  # not what we adopted: kept
    assert quotas.hold_s("openrouter:x") is not None
    quotas.drop_adopted("cooldown", "openrouter:x", until)  # reset on another replica: ends here too
    assert quotas.hold_s("openrouter:x") is None
