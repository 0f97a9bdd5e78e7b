"""Team mode: gateway replicas that share a real Redis (`clutch_state=redis://...`) count every replica's
requests against one quota and skip a model whose breaker any of them opened; a replica whose Redis
goes away keeps serving on its own counts, says `degraded` in /health, and shares again once Redis
answers."""

from __future__ import annotations

import concurrent.futures
import textwrap

import openai
import pytest
from test_relay import calls, chat, start

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
    cascades:
      "openrouter:team3/fail-500": ["openrouter:team3/chunks-2"]
      "openrouter:team5/fail-429": ["openrouter:team5/chunks-2"]
      "openrouter:team6/daily-cap-429:free": ["openrouter:team6/chunks-2"]
      "openrouter:team6/other:free": ["openrouter:team6/chunks-2"]
      "openrouter:team7/fail-500": ["openrouter:team7/chunks-2"]
      "openrouter:team8/fail-500": ["openrouter:team8/chunks-2"]
    quotas:
      "openrouter:team8/fail-500": {rpm: 50}
      "openrouter:team1/slow": {rpm: 10}
      "openrouter:team2/chunks-2": {rpd: 1000}
      "openrouter:team4/slow": {rpd: 1000}
    fallback: {method: cascade}
""")



@pytest.fixture(scope="module")
def replicas(tmp_path_factory, fake, pki, redis):
    gateways = []
    try:  # a replica that fails to start does not leave the other running
        for n in ("a", "b"):
            gateways.append(start(tmp_path_factory.mktemp(f"replica-{n}"), fake, pki, RULES, clutch_state=redis.url,
                                  clutch_sticky_ms=60_000))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def until_status(gateway, status: str, timeout: float = 20) -> dict:
    """/health once it says `status` ("ok": the replica's watcher found Redis again; "degraded": found
    it gone), or the last one at the deadline. The watcher asks every 2 s, every 0.5 s while Redis is away."""
    import time

    deadline = time.monotonic() + timeout
    while (health := gateway.health())["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)  # a poll of /health: the watcher's ping is the event waited for
    return health


def ask(gateway, model: str, n: int, stream: bool = False):
    try:
        raw = chat(gateway, session=f"team-{n}").chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"team {n}"}], stream=stream)
        if stream:  # "slow" streams 10 pieces 0.2 s apart
            return 200, "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices), None
        return 200, raw.parse().choices[0].message.content, None
    except openai.APIStatusError as e:
        return e.status_code, e.response.json(), e.response.headers.get("retry-after")


def test_an_rpm_quota_admits_its_number_across_two_replicas(replicas, fake):
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(lambda n: ask(replicas[n % 2], "team1/slow", n), range(30)))
    statuses = [status for status, _, _ in outcomes]
    assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses
    assert len(calls(fake, "team1/")) == 10  # not 10 per replica
    for status, body, retry_after in outcomes:
        if status == 429:
            assert "over quota" in body["error"]["message"] and 0 < int(retry_after) <= 60
    for gateway in replicas:
        assert gateway.health()["status"] == "ok"


def test_a_breaker_opened_on_one_replica_is_open_on_the_other(replicas, fake):
    a, b = replicas
    for n in range(3):  # the default threshold: 3 failures of team3/fail-500, each rescued by the fallback
        status, text, _ = ask(a, "team3/fail-500", n)
        assert (status, text) == (200, "pong from the fake upstream")
    assert a.local("/resilience")["breakers"]["openrouter:team3/fail-500"]["state"] == "open"
    before = len(calls(fake, "team3/fail-500"))
    status, text, _ = ask(b, "team3/fail-500", 9)  # straight to the fallback: no request of B's is spent
    assert (status, text) == (200, "pong from the fake upstream")
    assert len(calls(fake, "team3/fail-500")) == before == 3
    opened_on_b = b.local("/resilience")["breakers"]["openrouter:team3/fail-500"]
    assert opened_on_b["state"] == "open" and opened_on_b["failures"] == 0  # adopted, not counted


def until_in_redis(redis, pattern: str, field: str | None = None, timeout: float = 20) -> bool:
    """Whether a key matching `pattern` (holding `field`, for a hash) is in Redis within the timeout:
    a replica shares what it learned in the background, right after it learned it."""
    import time

    import redis as redis_py

    deadline = time.monotonic() + timeout
    with redis_py.Redis.from_url(redis.url, decode_responses=True) as client:
        while time.monotonic() < deadline:
            keys = client.keys(pattern)
            if keys and (field is None or any(client.hexists(key, field) for key in keys)):
                return True
            time.sleep(0.02)  # a poll of Redis: the replica's write is the event waited for
    return False


def until_gone(redis, table: str, field: str, timeout: float = 20) -> bool:
    """Whether the hash `table` loses `field` within the timeout (a replica's reset, in the background)."""
    import time

    import redis as redis_py

    deadline = time.monotonic() + timeout
    with redis_py.Redis.from_url(redis.url, decode_responses=True) as client:
        while client.hexists(table, field):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)  # a poll of Redis: the replica's write is the event waited for
    return True


def test_a_429_cooldown_and_a_free_model_cap_met_on_one_replica_hold_on_the_other(replicas, redis, fake):
    a, b = replicas
    assert ask(a, "team5/fail-429", 50)[:2] == (200, "pong from the fake upstream")  # rescued by the fallback
    assert until_in_redis(redis, "clutch:cooldowns", "openrouter:team5/fail-429")
    assert ask(b, "team5/fail-429", 51)[:2] == (200, "pong from the fake upstream")
    assert len(calls(fake, "team5/fail-429")) == 1  # B waited out A's cooldown: none of its requests was spent
    assert b.local("/resilience")["quotas"]["openrouter:team5/fail-429"]["cooldown_until"] > 0

    assert ask(a, "team6/daily-cap-429:free", 60)[:2] == (200, "pong from the fake upstream")
    assert until_in_redis(redis, "clutch:free_caps", "openrouter")
    assert ask(b, "team6/other:free", 61)[:2] == (200, "pong from the fake upstream")
    assert calls(fake, "team6/other") == []  # the account's free requests are used up, for B too
    assert "openrouter" in b.local("/resilience")["quotas"]["free_daily_cap"]
    import httpx
    reset = httpx.post(f"http://127.0.0.1:{a.port}/breakers/reset", json={}, trust_env=False, timeout=10)
    assert reset.status_code == 200 and "openrouter" in reset.json()["cleared"]["free_daily_cap"]
    assert until_gone(redis, "clutch:free_caps", "openrouter") and until_gone(redis, "clutch:cooldowns",
                                                                            "openrouter:team5/fail-429")
    # the reset on A reaches B, which had adopted both: its next request reads them gone
    assert ask(b, "team6/other:free", 62)[:2] == (200, "pong from the fake upstream")
    assert len(calls(fake, "team6/other")) == 1
    quotas = b.local("/resilience")["quotas"]
    assert "openrouter" not in quotas["free_daily_cap"]
    assert quotas.get("openrouter:team5/fail-429", {}).get("cooldown_until") is None


def test_a_session_stuck_to_a_fallback_on_one_replica_starts_there_on_the_other(replicas, redis, fake):
    a, b = replicas
    from addons.fallback.shared_state import sticky_key

    assert ask(a, "team7/fail-500", 70)[:2] == (200, "pong from the fake upstream")  # same session: team-70
    assert until_in_redis(redis, sticky_key("opencode:team-70", "openrouter:team7/fail-500"))
    assert ask(b, "team7/fail-500", 70)[:2] == (200, "pong from the fake upstream")
    assert len(calls(fake, "team7/fail-500")) == 1  # B started the session on the model that answered it
    stuck = [entry["target"] for entry in b.local("/resilience")["sticky"]
             if entry["primary"] == "openrouter:team7/fail-500"]
    assert stuck == ["openrouter:team7/chunks-2"]


def test_a_quota_taken_early_for_a_primary_that_goes_unused_is_given_back(replicas, redis, fake):
    """Each request starts taking its primary's quota when the request hook takes it (during the hop
    to the engine). B's first request finds the primary's breaker open (A opened it: B adopts it in
    that same round trip), goes to the fallback, and gives that take back: the minute's count is the
    requests the primary was sent (4 without the give-back; tests/fallback/test_sharing.py has the
    early take's other paths)."""
    import time

    import redis as redis_py

    a, b = replicas
    for n in range(3):
        assert ask(a, "team8/fail-500", 80 + n)[:2] == (200, "pong from the fake upstream")
    assert until_in_redis(redis, "clutch:breakers", "openrouter:team8/fail-500")
    for n in range(3):
        assert ask(b, "team8/fail-500", 90 + n)[:2] == (200, "pong from the fake upstream")
    assert len(calls(fake, "team8/fail-500")) == 3
    key = "clutch:quota:openrouter:team8/fail-500:minute"
    deadline = time.monotonic() + 20
    with redis_py.Redis.from_url(redis.url) as client:
        while (count := client.zcard(key)) != 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # a poll of Redis: B's give-back, in the background, is the event waited for
    assert count == 3


def test_without_redis_a_replica_serves_alone_and_says_degraded_until_it_answers(replicas, redis, fake):
    gateway = replicas[0]
    assert ask(gateway, "team2/chunks-2", 1)[0] == 200
    redis.stop()
    try:
        assert until_status(replicas[1], "degraded")["status"] == "degraded"  # seen without any request of its own
        for n in range(2, 5):  # every request is served, on this replica's own counts
            assert ask(gateway, "team2/chunks-2", n)[0] == 200
        health = gateway.health()
        assert health["status"] == "degraded"
        assert any("unreachable" in problem and "127.0.0.1" in problem for problem in health["problems"])
    finally:
        redis.start()
    assert until_status(gateway, "ok")["status"] == "ok"
    assert ask(gateway, "team2/chunks-2", 5)[0] == 200
    assert len(calls(fake, "team2/")) == 5


def test_redis_stopped_and_restarted_under_load_loses_no_request(replicas, redis, fake):
    """24 two-second streamed answers, 8 at a time, over both replicas; Redis stops once 4 have ended and
    starts again once 12 have: every request is served, and both replicas share again afterwards."""
    import threading

    ended: list[int] = []
    progressed = threading.Condition()

    def one(n: int):
        outcome = ask(replicas[n % 2], "team4/slow", n, stream=True)
        with progressed:
            ended.append(outcome[0])
            progressed.notify_all()
        return outcome

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, n) for n in range(24)]
        try:
            with progressed:
                assert progressed.wait_for(lambda: len(ended) >= 4, timeout=120)
            redis.stop()
            with progressed:
                assert progressed.wait_for(lambda: len(ended) >= 12, timeout=120)
        finally:
            redis.start()
        outcomes = [future.result(timeout=120) for future in futures]
    assert [(status, text) for status, text, _ in outcomes] == [(200, "pong from the fake upstream")] * 24
    assert len(calls(fake, "team4/")) == 24
    for gateway in replicas:
        assert until_status(gateway, "ok")["status"] == "ok"


def test_a_hung_redis_costs_no_request_and_is_found_again(replicas, redis, fake):
    """redis-server stopped with SIGSTOP: connections open, nothing answers. Each call gives up after
    1 s (no retries), the replica then stops asking on the request path, and shares again after SIGCONT."""
    import os
    import signal

    gateway = replicas[1]
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        for n in range(200, 204):
            assert ask(gateway, "team2/chunks-2", n)[0] == 200
        assert gateway.health()["status"] == "degraded"
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    assert until_status(gateway, "ok")["status"] == "ok"
    assert ask(gateway, "team2/chunks-2", 204)[0] == 200


def test_the_shared_book_takes_from_the_model_and_its_provider_at_once(redis):
    import asyncio

    import redis as redis_py

    from addons.config.rules import Quota
    from addons.fallback.shared_state import SharedState

    limits = [("acme:m1", Quota(rpm=3)), ("acme", Quota(rpd=4))]

    async def run():
        book = SharedState(redis.url)
        try:
            taken = [await book.take(limits) for _ in range(3)]
            over_minute = await book.take(limits)  # the model's minute is full: nothing is counted
            other = await book.take([("acme:m2", Quota(rpm=3)), ("acme", Quota(rpd=4))])
            over_day = await book.take([("acme:m3", Quota(rpm=3)), ("acme", Quota(rpd=4))])
            unlimited = await book.take([("acme:m4", Quota())])
        finally:
            await book.close()
        return taken, over_minute, other, over_day, unlimited

    taken, over_minute, other, over_day, unlimited = asyncio.run(run())
    assert taken == [None, None, None] and unlimited is None
    assert over_minute is not None and 50 < over_minute <= 60
    assert other is None  # the provider's day had room for a fourth: the refusal took nothing
    assert over_day is not None and over_day > 0  # until Redis's UTC midnight
    client = redis_py.Redis.from_url(redis.url, decode_responses=True)
    try:
        day_keys = client.keys("clutch:quota:acme:day:*")
        assert len(day_keys) == 1 and client.get(day_keys[0]) == "4"
        assert 0 < client.ttl("clutch:quota:acme:m1:minute") <= 61 and client.ttl(day_keys[0]) > 3600
        assert not client.exists("clutch:quota:acme:m4:minute")
    finally:
        client.close()


def test_one_look_reads_the_view_and_a_sticky_entry_and_takes_even_after_redis_forgot_its_scripts(redis):
    import asyncio

    import redis as redis_py

    from addons.config.rules import Quota
    from addons.fallback.shared_state import SharedState

    limits = [("look:m1", Quota(rpm=2))]

    async def run():
        state = SharedState(redis.url)
        try:
            await state.stick("s-look", "look:m1", "look:m2", 1_800_000_000.0, 60)
            first = await state.look(("s-look", "look:m1"), limits, "one")
            await state.redis.script_flush()  # as after a restart: the take's script is unknown
            second = await state.look(None, limits, "two")
            third = await state.look(None, limits, "three")  # the minute holds two
            await state.give_back(limits, "two")
            fourth = await state.look(None, limits, "four")
        finally:
            await state.close()
        return first, second, third, fourth

    first, second, third, fourth = asyncio.run(run())
    assert first[1] == ("look:m2", 1_800_000_000.0) and first[2] is None
    assert second[1] is None and second[2] is None
    assert third[2] is not None and 50 < third[2] <= 60
    assert fourth[2] is None  # "two" was given back: room for one more
    with redis_py.Redis.from_url(redis.url, decode_responses=True) as client:
        assert set(client.zrange("clutch:quota:look:m1:minute", 0, -1)) == {"one", "four"}
