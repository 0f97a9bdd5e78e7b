"""A team gateway's daily budgets across replicas: two real gateways share a real Redis (the spend
counters) and a real PostgreSQL (the users and the usage rows). A user's budget (`clutch users add
--budget`, `clutch users budget`) holds across both replicas, and still holds when Redis loses its
data: what the counters lack is read from the usage rows."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from test_relay import calls, start
from test_team import until_status
from test_users import RULES, agent, token_of, users

from addons.accounting.reports import day_of
from addons.accounting.shared_spend import NANO, PREFIX


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, fake, pki, redis, postgres):
    options = {"clutch_users": "true", "clutch_usage_db": postgres.url, "clutch_state": redis.url}
    gateways = []
    try:
        for n in ("a", "b"):
            gateways.append(start(tmp_path_factory.mktemp(f"budget-{n}"), fake, pki, RULES, **options))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()


def counted_usd(redis_url: str, user: str) -> float:
    """What the shared counters hold for `user` today (read straight from Redis)."""
    from redis import Redis

    with Redis.from_url(redis_url, decode_responses=True) as client:
        return int(client.hget(PREFIX + day_of(time.time()), f"n:user:{user}") or 0) / NANO


def until_counted(redis_url: str, user: str, usd: float, timeout: float = 20) -> float:
    """The user's shared count once it reached `usd`: the replica adds a finished request's spending
    in the background, right after the agent has its answer."""
    deadline = time.monotonic() + timeout
    while (found := counted_usd(redis_url, user)) < usd - 1e-12 and time.monotonic() < deadline:
        time.sleep(0.02)  # a poll of Redis: the replica's add is the event waited for
    return found


def ask(gateway, token: str, model: str) -> tuple[int, float | str]:
    """(200, the request's cost) or (the status, the error's message)."""
    try:
        answer = agent(gateway, token, session="budget").chat.completions.create(
            model=model, messages=[{"role": "user", "content": "what does this cost?"}])
        return 200, answer.usage.cost
    except openai.APIStatusError as e:
        assert e.response.headers["x-should-retry"] == "false" and e.response.headers["x-clutch-error"] == "budget"
        return e.status_code, e.message


def test_a_users_budget_holds_across_replicas_and_after_redis_loses_its_data(replicas, redis, postgres, fake):
    a, b = replicas
    calibrate = token_of(users("add", "calib", db=postgres.url))
    status, cost = ask(a, calibrate, "tbud1/chunks-2")
    assert status == 200 and isinstance(cost, float) and cost > 0
    # room for two requests and a half: the third puts the user over, the fourth is refused, on any replica
    token = token_of(users("add", "dee", "--budget", repr(cost * 2.5), db=postgres.url))
    outcomes = []
    for n, gateway in enumerate((a, b, a, b)):
        outcomes.append(ask(gateway, token, "tbud2/chunks-2"))
        if outcomes[-1][0] == 200:
            assert until_counted(redis.url, "dee", cost * (n + 1)) == pytest.approx(cost * (n + 1))
    assert [status for status, _ in outcomes] == [200, 200, 200, 429], outcomes  # each replica alone: 4 x 200
    assert "user dee is over its daily budget" in outcomes[3][1] and "clutch users budget dee" in outcomes[3][1]
    assert len(calls(fake, "tbud2/")) == 3

    for gateway in (a, b):  # GET /usage writes what waits: the rows are in PostgreSQL (they can lag by seconds)
        assert httpx.get(f"http://127.0.0.1:{gateway.port}/usage", headers={"authorization": f"Bearer {token}"},
                         trust_env=False, timeout=10).status_code == 200
    from redis import Redis
    with Redis.from_url(redis.url) as client:
        client.flushall()  # a Redis restarted without its data: the day's counters are gone
    assert ask(a, token, "tbud2/chunks-2")[0] == 429  # the usage rows still say what dee spent
    assert ask(b, calibrate, "tbud3/chunks-2")[0] == 200  # another user's request starts new counters
    assert until_counted(redis.url, "calib", cost) == pytest.approx(cost)
    assert counted_usd(redis.url, "dee") == 0  # dee's spending is before them: read from PostgreSQL
    assert ask(b, token, "tbud2/chunks-2")[0] == 429
    assert len(calls(fake, "tbud2/")) == 3

    metrics = httpx.get(f"http://127.0.0.1:{a.port}/metrics", headers={"authorization": f"Bearer {token}"},
                        trust_env=False, timeout=10).text
    assert 'user="dee"' in metrics and 'user="calib"' in metrics  # the user is a label of requests and spend

    raised = users("budget", "dee", "none", db=postgres.url)
    assert raised.returncode == 0 and "no budget" in raised.stdout
    listed = {u["name"]: u["budget_usd_day"] for u in json.loads(users("list", "--json", db=postgres.url).stdout)}
    assert listed["dee"] is None and listed["calib"] is None
    assert users("budget", "nobody", "5", db=postgres.url).returncode == 2
    for bad in ("nan", "inf", "five"):
        refused = users("budget", "dee", bad, db=postgres.url)
        assert refused.returncode == 2 and "is not a budget" in refused.stderr
    assert users("add", "fay", "--budget", "inf", db=postgres.url).returncode == 2


def test_a_replica_whose_redis_is_away_judges_on_its_own_count_and_shares_it_when_back(replicas, redis, postgres):
    """Degraded, a replica counts what it saw itself (seeded from PostgreSQL): its own requests still
    put a user over its budget. What it spent meanwhile reaches the counters once Redis answers."""
    a, b = replicas
    token = token_of(users("add", "eve", "--budget", "0.0000001", db=postgres.url))
    redis.stop()
    try:
        status, cost = ask(a, token, "tbud4/chunks-2")
        assert status == 200
        assert ask(a, token, "tbud4/chunks-2")[0] == 429
    finally:
        redis.start()
    assert until_counted(redis.url, "eve", cost) == pytest.approx(cost)  # added when A found Redis again
    assert until_status(b, "ok")["status"] == "ok"  # B asks Redis again (its watcher found it)
    assert ask(b, token, "tbud4/chunks-2")[0] == 429  # B, which never served eve, knows from the counters
