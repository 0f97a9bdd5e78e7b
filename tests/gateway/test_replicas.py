"""Several replicas behind one address: a real HAProxy (docs/team.md's configuration) in front of two real
gateways that share one provisioned CA, Redis for their quotas and breakers, and PostgreSQL for their
usage. Agents use one HTTPS_PROXY; a replica killed under load loses no request that had not reached it
(HAProxy retries the connection on the other) and no usage row of a request it finished."""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time

import httpx
import openai
import psycopg
import pytest
from haproxy_server import HAProxy
from harness import trust
from test_relay import calls, start

from addons.wire.identity import Identity, username_for

RULES = """\
version: 1
providers:
  openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
               key_env: OPENROUTER_API_KEY}
fallback: {method: cascade}
"""


@pytest.fixture(scope="module")
def team(tmp_path_factory, fake, pki, redis, postgres):
    """Replica A makes the CA; B gets a copy of that folder before it starts (provisioned, never its own)."""
    options = {"clutch_state": redis.url, "clutch_usage_db": postgres.url}
    replicas = {"a": start(tmp_path_factory.mktemp("replica-a"), fake, pki, RULES, **options)}
    balancer = None
    try:
        b_dir = tmp_path_factory.mktemp("replica-b")
        shutil.copytree(replicas["a"].confdir, b_dir / "certs")
        replicas["b"] = start(b_dir, fake, pki, RULES, **options)
        balancer = HAProxy(tmp_path_factory.mktemp("haproxy"), [replicas["a"].port, replicas["b"].port],
                           check_ms=500)
        yield balancer, replicas
    finally:  # every process started here is stopped, whatever failed
        if balancer is not None:
            balancer.stop()
        for gateway in replicas.values():
            gateway.stop()


def client(balancer: HAProxy, ca, n: int) -> openai.OpenAI:
    """An agent's client through the one address, trusting the team's one CA; a connection of its own."""
    proxy = f"http://{username_for(Identity(agent='opencode', session=f'team-{n}'))}:test-token@127.0.0.1:{balancer.port}"
    http = httpx.Client(proxy=proxy, verify=trust(ca), timeout=30)
    return openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key="sk-or-v1-agent", http_client=http,
                         max_retries=0)


def ask(balancer: HAProxy, ca, model: str, n: int, stream: bool = False) -> str:
    with client(balancer, ca, n) as agent:
        if stream:
            pieces = agent.chat.completions.create(model=model, stream=True,
                                                   messages=[{"role": "user", "content": f"r {n}"}])
            return "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        return agent.chat.completions.create(model=model, messages=[{"role": "user", "content": f"r {n}"}]) \
            .choices[0].message.content


def served_by(gateway, prefix: str) -> int:
    return sum(1 for entry in gateway.local("/requests")["requests"] if (entry.get("model") or "").startswith(prefix))


def test_one_address_and_one_ca_reach_both_replicas(team, fake):
    balancer, replicas = team
    a, b = replicas["a"], replicas["b"]
    assert a.ca_cert.read_bytes() == b.ca_cert.read_bytes()
    assert (a.confdir / "mitmproxy-ca.pem").read_bytes() == (b.confdir / "mitmproxy-ca.pem").read_bytes()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: ask(balancer, a.ca_cert, "rep1/chunks-2", n), range(24)))
    assert answers == ["pong from the fake upstream"] * 24
    assert len(calls(fake, "rep1/")) == 24
    assert served_by(a, "rep1/") > 0 and served_by(b, "rep1/") > 0
    assert served_by(a, "rep1/") + served_by(b, "rep1/") == 24


def test_a_replica_killed_under_load_loses_no_request_that_had_not_reached_it(team, fake, pki, redis, postgres):
    """Four agents stream 1.8 s answers through the one address without pause. Replica B is killed
    (SIGKILL) once 8 have ended. Every request that started after the kill is answered by A: HAProxy
    retries the connection B refuses, on A, until its check marks B down. Those in flight on B end in an
    error, as they would with no balancer. Restarted, B writes the rows it had spooled: every request sent
    to the provider has its one row, `success` for each the agent got, `aborted` for the rest."""
    balancer, replicas = team
    a, b = replicas["a"], replicas["b"]
    outcomes: list[tuple[float, float, bool]] = []  # started, ended, answered
    errors: list[str] = []
    lock = threading.Condition()
    stop = threading.Event()
    killed_at: list[float] = []

    def agent(k: int) -> None:
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                answered = ask(balancer, a.ca_cert, "rep2/slow", k * 1000 + n, stream=True) == \
                    "pong from the fake upstream"
            except (openai.APIError, httpx.HTTPError) as e:
                answered = False
                errors.append(f"{time.monotonic():.3f} {type(e).__name__}: {e}")
            with lock:
                outcomes.append((started, time.monotonic(), answered))
                lock.notify_all()
            n += 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        agents = [pool.submit(agent, k) for k in range(4)]
        try:
            with lock:
                assert lock.wait_for(lambda: len(outcomes) >= 8, timeout=60)
            b.process.kill()
            b.process.wait(10)  # gone, its sockets with it: a connection from now on cannot reach it
            killed_at.append(time.monotonic())
            balancer.wait_for("replica2 is DOWN")
            with lock:
                assert lock.wait_for(lambda: sum(1 for s, _, _ in outcomes if s > killed_at[0]) >= 12, timeout=90)
        finally:
            stop.set()
            for future in agents:
                future.result(timeout=60)
    after = [answered for started, _, answered in outcomes if started > killed_at[0]]
    cut = [(started, ended) for started, ended, answered in outcomes if not answered]
    assert all(after) and len(after) >= 12, (killed_at, errors)
    # only those in flight at the kill (which began a moment before killed_at, taken once B was reaped)
    assert all(started < killed_at[0] and ended > killed_at[0] - 1 for started, ended in cut)
    restarted = start(b.workdir, fake, pki, RULES, clutch_state=redis.url, clutch_usage_db=postgres.url)
    replicas["b"] = restarted
    lost_ids = {entry["request_id"] for entry in restarted.health()["lost_in_flight"]["requests"]}
    restarted.local("/usage")  # its spool first: the rows B finished and had not written, and the lost ones
    a.local("/usage")
    sent = {call["headers"]["x-clutch-flow"] for call in calls(fake, "rep2/")}
    with psycopg.connect(postgres.url) as connection:
        rows = connection.execute("SELECT request_id, outcome, error_class FROM attempts "
                                  "WHERE model = 'rep2/slow'").fetchall()
    booked = {request_id: (outcome, error) for request_id, outcome, error in rows}
    assert len(rows) == len(booked) and sent <= set(booked)  # every request sent upstream, once
    assert sum(1 for outcome, _ in booked.values() if outcome == "success") == \
        sum(1 for _, _, answered in outcomes if answered)
    # the rest were cut by the kill: booked by B's next start from its in-flight record, as lost
    others = {request_id: found for request_id, found in booked.items() if found[0] != "success"}
    assert set(others) == lost_ids and all(found == ("aborted", "lost_in_flight") for found in others.values())
    assert len(lost_ids) <= len(cut)
