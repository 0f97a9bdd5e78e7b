"""End to end: the real Claude Code and OpenCode through a gateway whose first model fails the way free
models fail, each with its one-prompt setup (tests/agent_setups.py) and the launcher's command line.

* The first model answers 200 and then sends nothing (`hang-after-headers`): the silence limit moves on to
  the next model before the agent saw a byte, and the turn completes. The added time to first token is
  the silence limit (here 2 s; 15 s by default), printed for the record.
* With `fallback.method: openrouter_native` and `both`, the first model answers 429: OpenRouter's own
  `models` list serves the request in one call, and the usage row names the model that answered.
"""

from __future__ import annotations

import textwrap

import pytest
from harness import gateway_on_rules
from test_e2e_more_agents import ANSWER, run_one_prompt


pytestmark = pytest.mark.e2e

SILENCE_MS = 2000
ROUTER_KEY = "sk-or-v1-e2e-rules"
# Claude Code asks for claude-opus-* (every family tier points at the chain, whatever its version);
# OpenCode for anthropic/claude-sonnet-4.5, which the alias catches first (its title call to a Gemini
# model is left alone).
RULES = """\
    version: 1
    providers:
      openrouter: {{base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}}
      anthropic: {{base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}}
    tiers: {{big: "{claude}", middle: "{claude}", small: "{claude}"}}
    aliases: {{"anthropic/claude-sonnet-4.5": "{opencode}"}}
    cascades:
      "{claude}": ["{claude_next}"]
      "{opencode}": ["{opencode_next}"]
    fallback: {{method: {method}}}
    compression: {{mode: "off"}}
"""


def start(workdir, fake, pki, method: str, claude: str, opencode: str, **options):
    text = textwrap.dedent(RULES).format(
        method=method, claude=claude, opencode=opencode,
        claude_next=claude.rsplit("/", 1)[0] + "/answers", opencode_next=opencode.rsplit("/", 1)[0] + "/answers")
    settings = {"clutch_state_dir": workdir / "state", "clutch_sticky_ms": 0, **options}
    args = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    return gateway_on_rules(workdir, fake, pki, text, *args, env={"OPENROUTER_API_KEY": ROUTER_KEY})


@pytest.fixture(scope="module")
def hanging(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("e2e-hang"), fake, pki, "cascade",
                    "anthropic:eh-claude/hang-after-headers", "openrouter:eh-opencode/hang-after-headers",
                    clutch_silence_timeout_ms=SILENCE_MS)
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("agent", ["claude", "opencode"])
def test_a_first_model_that_hangs_after_its_headers_is_replaced(agent, hanging, fake, tmp_path):
    result, _, entries = run_one_prompt(agent, hanging, fake, tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:] + hanging.output()[-2000:]
    assert ANSWER in result.stdout
    prefix = f"eh-{agent}/"
    arrived = sorted((e for e in entries if (e.get("model") or "").startswith(prefix)), key=lambda e: e["t"])
    models = [e["model"] for e in arrived]  # in the order they arrived (the log is in the order they ended)
    assert models[:2] == [f"{prefix}hang-after-headers", f"{prefix}answers"], models
    hung = fake.wait_for(lambda e: e.get("model") == f"{prefix}hang-after-headers")
    assert hung["outcome"] == "aborted"  # Clutch hung up on it
    mine = [r for r in hanging.usage_rows() if r["model"].startswith(prefix)]
    first_hang = next(r for r in mine if r["error_class"] == "timeout_silent")
    served = next(r for r in mine if r["served"] and r["ts"] >= first_hang["ts"])
    assert served["model"] == f"{prefix}answers" and served["fallback"]
    # time to first token as the agent saw it: from the request's first attempt to the commit
    ttft_ms = (served["ts"] - first_hang["ts"]) * 1000 + served["ttft_ms"]
    print(f"\n{agent}: first token {ttft_ms:.0f} ms after the request (silence limit {SILENCE_MS} ms; "
          f"the answering model alone: {served['ttft_ms']:.0f} ms)")
    assert SILENCE_MS <= ttft_ms < SILENCE_MS + 15_000


@pytest.mark.parametrize("method", ["openrouter_native", "both"])
@pytest.mark.parametrize("agent", ["claude", "opencode"])
def test_openrouter_native_fallback_serves_and_books_the_model_that_answered(agent, method, fake, pki,
                                                                            tmp_path):
    prefix = f"en-{agent}-{method[:2]}/"
    (tmp_path / "gateway").mkdir()
    gateway = start(tmp_path / "gateway", fake, pki, method, f"openrouter:{prefix}fail-429",
                    f"openrouter:{prefix}fail-429")
    try:
        result, _, entries = run_one_prompt(agent, gateway, fake, tmp_path, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:] + gateway.output()[-2000:]
        assert ANSWER in result.stdout
        sent = [e for e in entries if (e.get("native") or {}).get("asked") == f"{prefix}fail-429"]
        assert sent, [(e.get("model"), e.get("native")) for e in entries]
        for entry in sent:  # one call each: OpenRouter went down the list itself
            assert entry["request_json"]["models"] == [f"{prefix}fail-429", f"{prefix}answers"]
            assert entry["native"]["served"] == f"{prefix}answers"
            # Claude Code's request changed provider: the rules' key; OpenCode's stayed on OpenRouter: its own
            key = ROUTER_KEY if agent == "claude" else "sk-or-v1-e2e-opencode"
            assert entry["headers"]["authorization"] == f"Bearer {key}"
        mine = [r for r in gateway.usage_rows() if r["model"].startswith(prefix)]
        served = [r for r in mine if r["served"]]
        assert served and all(r["model"] == f"{prefix}answers" and r["fallback"] for r in served)
        assert all(r["input_tokens"] and r["output_tokens"] for r in served)
        failed = [r for r in mine if not r["served"]]
        assert failed and all((r["model"], r["error_class"]) == (f"{prefix}fail-429", "openrouter_fallback")
                              for r in failed)
    finally:
        gateway.stop()
