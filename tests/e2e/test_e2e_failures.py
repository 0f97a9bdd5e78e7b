"""End to end: what the real agent CLIs show their user when every candidate of a request fails.

Each agent test runs one agent's one-prompt command line (the launcher's `xx <agent>np`, tests/failure_rig.py)
through a fresh real gateway whose rules give its request three candidates that all fail (429s with
`retry-after: 2`, or 500 / 503), and checks what docs/resilience.md's table "What the agent shows
when everything fails" says: whether Clutch's error, which names every candidate, reaches the user, on
which stream, with which exit code, and how many requests the agent sends with its retry knob set.

The gateway runs with `clutch_retries=0` and breakers that never open (`clutch_breaker_failures=1000`),
so each agent request is answered at once with Clutch's all-failed error (and the fake's 2 s Retry-After)
instead of the 60 s Retry-After of an open breaker: the agent's own retries are what is counted, and a
run takes seconds. Counts come from the gateway's journal; waits are checked only from below (an agent
that honours Retry-After waits at least that long; a busy machine only makes it longer). The last tests
check the same error with the openai SDK, where no agent CLI is needed.
"""

from __future__ import annotations

import re

import httpx2
import openai
import pytest
from failure_rig import candidates, codex_retries, json_settings, run_agent, start_gateway, text_file
from harness import agent_binary, trust

from addons.wire.identity import Identity, username_for
from launcher.agents import agent_spec

# every agent request asks every candidate, at once, and gets the fake's Retry-After (2 s)
QUIET = ("--set", "clutch_retries=0", "--set", "clutch_breaker_failures=1000")
RETRY_AFTER_S = 2  # tests/fake_upstream.py RETRY_AFTER_SECONDS, passed on by Clutch


def fail_run(agent: str, case: str, tmp_path, fake, pki, *, count: int = 3, bound: float = 120, **knobs):
    binary = agent_binary(agent, agent_spec(agent).title)
    gateway = start_gateway(tmp_path, fake, pki, agent, case, *QUIET, count=count)
    try:
        run = run_agent(agent, case, gateway, fake, tmp_path, binary, bound=bound, count=count, **knobs)
    finally:
        gateway.stop()
    assert not run.killed, f"{agent} still running after {bound} s:\n{run.shown[-3000:]}"
    assert run.requests and all(e["outcome"] in ("failed", "refused") for e in run.requests), run.requests
    return run


def by_model(run) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in run.requests:
        counts[entry["model"]] = counts.get(entry["model"], 0) + 1
    return counts


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["429", "5xx"])
def test_claude_code_prints_every_failed_candidate(case, tmp_path, fake, pki):
    """`claude --print` retries CLAUDE_CODE_MAX_RETRIES times after Retry-After, then prints Clutch's
    message on stdout ("API Error: ...") and exits 1."""
    run = fail_run("claude", case, tmp_path, fake, pki, env={"CLAUDE_CODE_MAX_RETRIES": "1"})
    assert run.exit_code == 1
    assert run.names_every_candidate(run.stdout), run.shown[-3000:]
    assert "API Error" in run.stdout and "Clutch: no model could answer" in run.stdout
    assert len(run.requests) == 2, run.requests  # the request and one retry
    assert run.gaps()[0] >= RETRY_AFTER_S - 0.1  # after the Retry-After


@pytest.mark.e2e
def test_codex_shows_every_failed_candidate_of_a_5xx(tmp_path, fake, pki):
    """Codex prints an HTTP error's body for every status but 429 and 500 (a 500 becomes "We're
    currently experiencing high demand"): Clutch answers its Responses requests 502 when the worst
    failure was a 500, so the message naming every candidate reaches stderr."""
    run = fail_run("codex", "5xx", tmp_path, fake, pki, configure=codex_retries(request=0, stream=1))
    assert run.exit_code == 1
    assert run.names_every_candidate(run.stderr), run.shown[-3000:]
    assert "unexpected status 502 Bad Gateway" in run.stderr
    assert "high demand" not in run.shown
    assert len(run.requests) == 2, run.requests  # the turn and one stream retry ("Reconnecting... 1/1")
    assert "Reconnecting... 1/1" in run.stderr


@pytest.mark.e2e
def test_codex_hides_the_message_of_a_429(tmp_path, fake, pki):
    """A 429 is a fact Codex reports without its body: "exceeded retry limit, last status: 429 Too Many
    Requests" (unless the body's error type is one of ChatGPT's usage limits). docs/resilience.md says so; this
    fails when a Codex release starts showing it."""
    run = fail_run("codex", "429", tmp_path, fake, pki, configure=codex_retries(request=0, stream=1))
    assert run.exit_code == 1
    assert "exceeded retry limit, last status: 429 Too Many Requests" in run.stderr, run.shown[-3000:]
    assert not any(target in run.shown for target in run.candidates)
    assert len(run.requests) == 2, run.requests
    assert run.gaps()[0] >= RETRY_AFTER_S - 0.1  # its stream retry waits for the Retry-After


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["429", "5xx"])
def test_opencode_prints_every_failed_candidate(case, tmp_path, fake, pki):
    """`opencode run` has no retry setting: its session retries the turn 5 times, after each Retry-After
    (2 s, 4 s, ... without one), and its title call is tried 3 times; then it prints "Error: " and
    Clutch's message on stderr and exits 1."""
    run = fail_run("opencode", case, tmp_path, fake, pki)
    assert run.exit_code == 1
    assert run.names_every_candidate(run.stderr), run.shown[-3000:]
    # the last turn request may be refused at once (its candidates still cooling down after the title
    # call's 429s): "no model can take this request now (...)", which names every candidate too
    assert re.search(r"Error: Clutch: no model (could answer|can take this request now)", run.plain(run.stderr))
    counts = by_model(run)
    assert counts.pop("anthropic/claude-sonnet-4.5") == 6, run.requests  # the turn: 1 + 5 retries
    assert list(counts.values()) == [3], run.requests  # the title, on its small model: 1 + 2 retries


@pytest.mark.e2e
def test_pi_prints_every_failed_candidate(tmp_path, fake, pki):
    """`pi --print` with its two retry layers off (settings `retry.maxRetries` and
    `retry.provider.maxRetries`): one request, Clutch's message on stderr, exit 1."""
    settings = json_settings(".pi/agent/settings.json", {"retry": {"maxRetries": 0, "provider": {"maxRetries": 0}}})
    run = fail_run("pi", "429", tmp_path, fake, pki, configure=settings)
    assert run.exit_code == 1
    assert run.names_every_candidate(run.stderr), run.shown[-3000:]
    assert len(run.requests) == 1, run.requests


@pytest.mark.e2e
def test_hermes_shows_every_candidate_of_a_long_cascade(tmp_path, fake, pki):
    """Hermes prints the first 300 characters of an error's message (run_agent.py
    _summarize_api_error), and exits 0. Clutch's message lists every candidate's name before the
    details, so the names of a four-candidate cascade all fit."""
    run = fail_run("hermes", "429", tmp_path, fake, pki, count=4,
                   configure=text_file(".hermes/config.yaml", "agent:\n  api_max_retries: 1\n"))
    assert run.exit_code == 0  # Hermes' one-shot mode exits 0 even when the turn failed
    assert "API call failed" in run.stdout
    assert run.names_every_candidate(run.stdout), run.stdout[-3000:]
    assert len(run.requests) == 1, run.requests  # api_max_retries: 1 is a single attempt


def sdk(gateway, agent: str, base_url: str, model: str) -> openai.OpenAI:
    """The openai SDK through `gateway` as `agent`, its launch pinned to `model` (no retries of its own)."""
    proxy = gateway.proxy_url(username_for(Identity(agent=agent, model=model)))
    client = httpx2.Client(proxy=proxy, verify=trust(gateway.ca_cert), timeout=30)
    return openai.OpenAI(base_url=base_url, api_key="sk-e2e-sdk", http_client=client, max_retries=0)


def test_a_responses_client_gets_502_where_a_chat_client_gets_500(tmp_path, fake, pki):
    """The worst failure of the 5xx cascade is a 500: the Responses API (Codex's) is answered 502 with
    the same message, the Chat API keeps the 500."""
    gateway = start_gateway(tmp_path / "responses", fake, pki, "codex", "5xx", *QUIET)
    try:
        targets = candidates("codex", "5xx")
        with pytest.raises(openai.APIStatusError) as error:
            sdk(gateway, "codex", "https://api.openai.com/v1", targets[0]).responses.create(
                model="gpt-5.5", input="say hi")
    finally:
        gateway.stop()
    assert error.value.status_code == 502 and error.value.response.headers["x-clutch-attempts"] == "3"
    assert all(target in error.value.message for target in targets), error.value.message
    gateway = start_gateway(tmp_path / "chat", fake, pki, "opencode", "5xx", *QUIET)
    try:
        targets = candidates("opencode", "5xx")
        with pytest.raises(openai.InternalServerError) as error:
            sdk(gateway, "opencode", "https://openrouter.ai/api/v1", targets[0]).chat.completions.create(
                model="anthropic/claude-sonnet-4.5", messages=[{"role": "user", "content": "say hi"}])
    finally:
        gateway.stop()
    assert error.value.status_code == 500
    assert all(target in error.value.message for target in targets), error.value.message


def test_every_candidate_is_named_before_the_details(tmp_path, fake, pki):
    """Six candidates: all their names are in the message's first 300 characters (what Hermes shows),
    then each one's failure with its Retry-After."""
    gateway = start_gateway(tmp_path, fake, pki, "opencode", "429", *QUIET, count=6)
    try:
        targets = candidates("opencode", "429", count=6)
        with pytest.raises(openai.RateLimitError) as error:
            sdk(gateway, "opencode", "https://openrouter.ai/api/v1", targets[0]).chat.completions.create(
                model="anthropic/claude-sonnet-4.5", messages=[{"role": "user", "content": "say hi"}])
    finally:
        gateway.stop()
    message = error.value.body["message"]
    assert message.startswith(f"Clutch: no model could answer (6 candidates tried: {', '.join(targets)}): ")
    assert all(target in message[:300] for target in targets), message
    for target in targets:
        assert f"{target}: HTTP 429: " in message and "(free again in 2 s)" in message
    assert error.value.response.headers["retry-after"] == "2"
