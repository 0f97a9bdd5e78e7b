"""The cascade through a real gateway: fault-injecting fake models fail, and the official SDKs get the
first acceptable answer, streamed as it is produced; breakers, quotas and stickiness decide who is
tried, and survive a restart."""

from __future__ import annotations

import json
import textwrap
import time

import anthropic
import httpx
import httpx2
import openai
import pytest
from harness import gateway_on_rules, trust

from addons.wire.identity import Identity, username_for

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
    cascades:
      "openrouter:c1/fail-429": ["openrouter:c1/fail-500", "openrouter:c1/empty", "openrouter:c1/slow"]
      "openrouter:c2/hang": ["openrouter:c2/chunks-3"]
      "openrouter:c4/fail-502": ["openrouter:c4/chunks-2"]
      "openrouter:c5/midstream-error-delay-150": ["openrouter:c5/chunks-2"]
      "openrouter:c6/fail-503": ["openrouter:c6/fail-429"]
      "openrouter:c7/daily-cap-429:free": ["openrouter:c7/chunks-2:free", "openrouter:c7/b:free", "openrouter:c7/paid"]
      "openrouter:c8/primary": ["openrouter:c8/b", "openrouter:c8/broken-fail-500", "openrouter:c8/d", "openrouter:c8/e"]
      "openrouter:c9/fail-429": ["anthropic:c9/claude"]
      "openrouter:c10/rampup-429": ["openrouter:c10/chunks-2"]
      "openrouter:c11/error-200": ["openrouter:c11/chunks-2"]
      "openrouter:q3/hang": ["openrouter:q3/fallback-slow"]
    quotas:
      "openrouter:q1/limited": {rpd: 2}
      "openrouter:q2/slow": {rpm: 10}
      "openrouter:q3/fallback-slow": {rpm: 2}
    fallback: {method: cascade}
""")
OPTIONS = {"clutch_first_byte_timeout_ms": 1500, "clutch_retries": 0, "clutch_sticky_ms": 2500}
ENV = {"OPENROUTER_API_KEY": "sk-or-v1-rules", "ANTHROPIC_API_KEY": "sk-ant-api03-rules"}


def start(workdir, fake, pki, rules_text=RULES, **options):
    """A gateway on these rules; `options` override OPTIONS (mitmproxy refuses an option set twice)."""
    settings = {**OPTIONS, "clutch_state_dir": workdir / "state", **options}
    args = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    return gateway_on_rules(workdir, fake, pki, rules_text, *args, env=ENV)


@pytest.fixture(scope="module")
def cascading(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("cascade"), fake, pki)
    yield gateway
    gateway.stop()


def chat(gateway, session="cascade", key="sk-or-v1-agent"):
    client = httpx2.Client(proxy=gateway.proxy_url(username_for(Identity(agent="opencode", session=session))),
                           verify=trust(gateway.ca_cert), timeout=30)
    return openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key=key, http_client=client, max_retries=0)


def calls(fake, prefix):
    return [e for e in fake.entries() if (e.get("model") or "").startswith(prefix)]


def test_429_then_500_then_empty_then_success_streams_incrementally(cascading, fake):
    raw = chat(cascading).chat.completions.with_raw_response.create(
        model="c1/fail-429", stream=True, messages=[{"role": "user", "content": "hi"}])
    arrivals, text = [], ""
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == "pong from the fake upstream"
    # the slow model sends 10 chunks 0.2 s apart (1.8 s): the agent saw the first long before the last
    # existed. A buffered answer arrives all at once; a busy 2-core machine may bunch the first few.
    assert arrivals[-1] - arrivals[0] > 0.6
    assert raw.headers["x-clutch-model"] == "openrouter:c1/slow" and raw.headers["x-clutch-attempts"] == "4"
    assert [e["model"] for e in calls(fake, "c1/")] == ["c1/fail-429", "c1/fail-500", "c1/empty", "c1/slow"]
    assert all(e["headers"]["authorization"] == "Bearer sk-or-v1-agent" for e in calls(fake, "c1/"))


def test_a_hanging_model_is_abandoned_at_its_timeout(cascading, fake):
    started = time.monotonic()
    completion = chat(cascading).chat.completions.create(model="c2/hang", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "pong from the fake upstream"
    assert 1.4 < time.monotonic() - started < 6
    hung = fake.wait_for(lambda e: e.get("model") == "c2/hang")
    assert hung["outcome"] == "aborted"  # Clutch hung up on it


def test_an_open_breaker_costs_zero_upstream_calls(cascading, fake):
    client = chat(cascading)
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="c3/fail-500", messages=[{"role": "user", "content": "x"}])
    before = len(calls(fake, "c3/"))
    assert before == 3
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="c3/fail-500", messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 503 and "breaker open" in refused.value.message
    assert 50 <= int(refused.value.response.headers["retry-after"]) <= 60
    time.sleep(0.3)
    assert len(calls(fake, "c3/")) == before
    state = httpx.get(f"http://127.0.0.1:{cascading.port}/resilience", timeout=5, trust_env=False).json()
    assert state["breakers"]["openrouter:c3/fail-500"]["state"] == "open"


def test_stickiness_holds_then_expires(cascading, fake):
    client = chat(cascading, session="sticky-1")
    ask = lambda: client.chat.completions.with_raw_response.create(  # noqa: E731
        model="c4/fail-502", messages=[{"role": "user", "content": "x"}])
    assert ask().headers["x-clutch-model"] == "openrouter:c4/chunks-2"
    assert [e["model"] for e in calls(fake, "c4/")] == ["c4/fail-502", "c4/chunks-2"]
    assert ask().headers["x-clutch-attempts"] == "1"  # straight to the model that answered
    assert [e["model"] for e in calls(fake, "c4/")][2:] == ["c4/chunks-2"]
    other = chat(cascading, session="sticky-2").chat.completions.with_raw_response.create(
        model="c4/fail-502", messages=[{"role": "user", "content": "x"}])
    assert other.headers["x-clutch-attempts"] == "2"  # another session starts at the primary
    time.sleep(2.7)  # past clutch_sticky_ms: the primary gets its chance again
    assert ask().headers["x-clutch-attempts"] == "2"


def test_a_failure_after_the_commit_point_is_not_restarted(cascading, fake):
    # 150 ms between pieces: the error event comes after the first content reached the agent (one that
    # arrives in the same read as the content is still before the commit point, and moves on)
    stream = chat(cascading).chat.completions.create(
        model="c5/midstream-error-delay-150", stream=True, messages=[{"role": "user", "content": "x"}])
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text  # the agent had content before the error
    entry = cascading.journal("c5/midstream-error-delay-150")[-1]  # written once the request is over
    assert (entry["attempts"], entry["outcome"]) == (1, "broken")  # no second attempt
    assert [e["model"] for e in calls(fake, "c5/")] == ["c5/midstream-error-delay-150"]


def test_when_everything_fails_the_agent_gets_the_most_useful_error(cascading, fake):
    with pytest.raises(openai.RateLimitError) as error:
        chat(cascading).chat.completions.create(model="c6/fail-503", messages=[{"role": "user", "content": "x"}])
    assert error.value.response.headers["retry-after"] == "2"
    assert error.value.response.headers["x-clutch-attempts"] == "2"


def test_the_free_daily_cap_skips_every_other_free_model(cascading, fake):
    completion = chat(cascading).chat.completions.create(
        model="c7/daily-cap-429:free", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "pong from the fake upstream"
    assert [e["model"] for e in calls(fake, "c7/")] == ["c7/daily-cap-429:free", "c7/paid"]
    state = httpx.get(f"http://127.0.0.1:{cascading.port}/resilience", timeout=5, trust_env=False).json()
    assert "openrouter" in state["quotas"]["free_daily_cap"]


def test_an_anthropic_agent_falls_back_across_dialects(cascading, fake):
    client = anthropic.Anthropic(api_key="sk-ant-api03-agent", max_retries=0, http_client=httpx2.Client(
        proxy=cascading.proxy_url(username_for(Identity(agent="claude"))), verify=trust(cascading.ca_cert)))
    raw = client.messages.with_raw_response.create(
        model="openrouter:c9/fail-429", max_tokens=64, messages=[{"role": "user", "content": "x"}])
    assert raw.parse().content[0].text == "pong from the fake upstream"
    assert raw.headers["x-clutch-model"] == "anthropic:c9/claude"
    first = fake.wait_for(lambda e: e.get("model") == "c9/fail-429")
    assert first["headers"]["authorization"] == "Bearer sk-or-v1-rules"  # OpenRouter: the rules' key
    entry = fake.wait_for(lambda e: e.get("model") == "c9/claude")
    sent = entry["headers"]  # back on the provider the agent called: its own key (this SDK sends a Bearer)
    assert "sk-ant-api03-agent" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))


def test_native_models_list_is_short_and_has_no_open_model(tmp_path, fake, pki):
    rules = RULES.replace("fallback: {method: cascade}", "fallback: {method: both, sort: price}")
    gateway = start(tmp_path, fake, pki, rules)
    try:
        client = chat(gateway)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="c8/broken-fail-500", messages=[{"role": "user", "content": "x"}])
        client.chat.completions.create(model="c8/primary", messages=[{"role": "user", "content": "x"}])
        sent = fake.wait_for(lambda e: e.get("model") == "c8/primary", newest=True)["request_json"]
        assert sent["models"] == ["c8/primary", "c8/b", "c8/d"]  # at most 3, the open breaker left out
        assert sent["provider"] == {"sort": "price"}
    finally:
        gateway.stop()


def test_a_restart_restores_open_breakers_and_quotas(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki)
    try:
        client = chat(gateway)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="r1/fail-500", messages=[{"role": "user", "content": "x"}])
        for _ in range(2):
            client.chat.completions.create(model="q1/limited", messages=[{"role": "user", "content": "x"}])
    finally:
        gateway.stop()
    saved = json.loads((tmp_path / "state" / "breakers.json").read_text())
    assert "openrouter:r1/fail-500" in json.dumps(saved)
    counted = len(calls(fake, "r1/")), len(calls(fake, "q1/"))
    again = start(tmp_path, fake, pki)
    try:
        client = chat(again)
        with pytest.raises(openai.APIStatusError) as breaker:
            client.chat.completions.create(model="r1/fail-500", messages=[{"role": "user", "content": "x"}])
        assert breaker.value.status_code == 503
        with pytest.raises(openai.RateLimitError) as quota:
            client.chat.completions.create(model="q1/limited", messages=[{"role": "user", "content": "x"}])
        assert int(quota.value.response.headers["retry-after"]) > 0
        time.sleep(0.3)
        assert (len(calls(fake, "r1/")), len(calls(fake, "q1/"))) == counted  # nothing reached the provider
    finally:
        again.stop()


def test_a_ramp_up_429_moves_on_at_once(cascading, fake):
    started = time.monotonic()
    raw = chat(cascading).chat.completions.with_raw_response.create(
        model="c10/rampup-429", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-clutch-model"] == "openrouter:c10/chunks-2"
    assert time.monotonic() - started < 1.0  # no waiting on the rate-limited model


def test_the_last_candidate_is_retried_after_its_retry_after(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, clutch_retries=1)
    try:
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as error:
            chat(gateway).chat.completions.create(model="r2/fail-429", messages=[{"role": "user", "content": "x"}])
        assert 2.0 <= time.monotonic() - started < 6  # the fake's Retry-After: 2 was honoured once
        assert error.value.response.headers["x-clutch-attempts"] == "2"
        assert len(calls(fake, "r2/")) == 2
    finally:
        gateway.stop()


def test_a_silent_last_candidate_is_never_committed_and_ends_in_a_504(tmp_path, fake, pki):
    """Nobody else to ask: a model that answers 200 and then sends nothing is waited for until the idle
    timeout (not committed at the silence limit as Clutch once did), then the agent gets a 504 in its
    dialect that it may retry, instead of a 200 that never says anything."""
    gateway = start(tmp_path, fake, pki, clutch_silence_timeout_ms=500, clutch_idle_timeout_ms=1500)
    try:
        with httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=20) as client:
            started = time.monotonic()
            response = client.post("https://openrouter.ai/api/v1/chat/completions",
                                   json={"model": "r3/hang-after-headers", "stream": True, "messages": []})
            waited = time.monotonic() - started
        assert response.status_code == 504 and response.headers["x-clutch-error"] == "timeout_idle"
        assert 1.4 < waited < 6
        assert "upstream sent nothing for 1.5 s" in response.json()["error"]["message"]
        assert fake.wait_for(lambda e: e.get("model") == "r3/hang-after-headers")["outcome"] == "aborted"
        assert len(calls(fake, "r3/")) == 1
    finally:
        gateway.stop()


def test_the_resilience_command_shows_the_state(cascading):
    import subprocess
    import sys
    from harness import ROOT
    done = subprocess.run([sys.executable, "-m", "launcher.gateway", "resilience", "--port", str(cascading.port)],
                          capture_output=True, text=True, timeout=60, env={**__import__("os").environ,
                                                                             "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "Circuit breakers" in done.stdout and "Sticky sessions" in done.stdout and "Quotas" in done.stdout


@pytest.mark.parametrize("stream", [True, False])
def test_an_error_inside_a_200_counts_as_a_failure(cascading, fake, stream):
    raw = chat(cascading, session=f"e200-{stream}").chat.completions.with_raw_response.create(
        model="c11/error-200", stream=stream, messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-clutch-model"] == "openrouter:c11/chunks-2"
    answer = raw.parse()
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    else:
        text = answer.choices[0].message.content
    assert text == "pong from the fake upstream"


def test_an_rpm_quota_admits_exactly_its_number_of_concurrent_requests(cascading, fake):
    """30 requests at once against rpm 10: 10 reach the model and 20 get a 429 with Retry-After in OpenAI's
    shape, none sent."""
    import concurrent.futures

    def one(n: int):
        try:
            raw = chat(cascading, session=f"q2-{n}").chat.completions.with_raw_response.create(
                model="q2/slow", messages=[{"role": "user", "content": f"q2 {n}"}])
            return 200, raw.parse().choices[0].message.content, None
        except openai.APIStatusError as e:
            return e.status_code, e.response.json(), e.response.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        outcomes = list(pool.map(one, range(30)))
    served = [o for o in outcomes if o[0] == 200]
    refused = [o for o in outcomes if o[0] == 429]
    assert len(served) == 10 and len(refused) == 20, [o[0] for o in outcomes]
    assert all(text == "pong from the fake upstream" for _, text, _ in served)
    assert len(calls(fake, "q2/")) == 10
    for _, body, retry_after in refused:
        assert body["error"]["type"] and "over quota" in body["error"]["message"]
        assert retry_after is not None and 0 < int(retry_after) <= 60


def test_a_fallback_with_a_quota_is_taken_from_when_it_is_tried_not_when_the_cascade_was_ordered(cascading, fake):
    """6 requests at once whose primary hangs until the first-byte timeout (1.5 s): the fallback's rpm 2
    had room for all 6 when their cascades were ordered, so it is taken from when the fallback is tried."""
    import concurrent.futures

    def one(n: int):
        try:
            chat(cascading, session=f"q3-{n}").chat.completions.create(
                model="q3/hang", messages=[{"role": "user", "content": f"q3 {n}"}])
            return 200
        except openai.APIStatusError as e:
            return e.status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(one, range(6)))
    assert statuses.count(200) == 2, statuses
    assert len(calls(fake, "q3/fallback")) == 2
