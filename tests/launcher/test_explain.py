"""`./clutch route`: a dry run of the router on saved request bodies, nothing sent, no key printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import ROOT, corpus_files

from launcher import explain

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
    tiers: {big: "openrouter:moonshotai/kimi-k2.6"}
    routes: {custom: router.py, long_context: "openrouter:google/gemini-long", long_context_threshold: 20000}
""")


@pytest.fixture
def rules(tmp_path):
    (tmp_path / "router.py").write_text(
        "def route(request, context):\n"
        "    return 'anthropic:claude-haiku-9' if 'background' in context.signals else None\n")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def corpus_record(name: str) -> Path:
    return corpus_files(name)[0]


def test_long_claude_code_request_goes_to_the_long_context_route(rules):
    body = explain.read_body(corpus_record("cc-258c7280-r023.json"))
    result = explain.explain(body, rules_path=rules, environ={"OPENROUTER_API_KEY": "sk-or-v1-secret"},
                             identity=explain.identity_for(None, "cip"))
    assert result["decision"]["rule"] == "long_context"
    assert result["decision"]["tokens"] > 20000
    upstream = result["upstream"]
    assert upstream["translated"] == "anthropic->openai_chat"
    assert upstream["url"] == "https://openrouter.ai/api/v1/chat/completions"
    assert upstream["key"] == "$OPENROUTER_API_KEY" and upstream["headers"]["authorization"] == "<masked>"
    assert upstream["body"]["model"] == "google/gemini-long"
    assert "sk-or-v1-secret" not in json.dumps(result)


def test_custom_router_runs_in_the_dry_run(rules):
    body = {"model": "claude-opus-4-8", "max_tokens": 100, "system": "Titles.", "messages": [{"role": "user", "content": "title?"}]}
    result = explain.explain(body, rules_path=rules, environ={})
    assert (result["decision"]["rule"], result["decision"]["target"]) == ("custom", "anthropic:claude-haiku-9")
    assert result["upstream"]["model"] == "claude-haiku-9" and result["upstream"]["key"] == "the agent's own"


def test_missing_key_is_reported_not_raised(rules):
    body = {"model": "claude-opus-4-8", "max_tokens": 4000, "system": "Code.", "messages": [{"role": "user", "content": "hi"}]}
    result = explain.explain(body, rules_path=rules, environ={})
    assert result["decision"]["rule"] == "tier:big"
    assert "$OPENROUTER_API_KEY" in result["error"]


def test_dialect_guessing():
    assert explain.guess_dialect({"system": "x", "messages": []}).value == "anthropic"
    assert explain.guess_dialect({"messages": [{"role": "user", "content": "x"}]}).value == "openai_chat"
    assert explain.guess_dialect({"input": "x"}).value == "openai_responses"
    assert explain.guess_dialect({"contents": []}).value == "gemini"


def test_cli_prints_the_decision_and_refuses_bad_input(rules, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENROUTER_API_KEY": "sk-or-v1-secret"}
    record = corpus_record("mini-sympy__sympy-13031-r057.json")
    done = subprocess.run([sys.executable, "-m", "launcher.gateway", "route", str(record), "--rules", str(rules),
                           "--agent", "q"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "request   openai_chat to openrouter" in done.stdout and "agent qwen" in done.stdout
    assert "sk-or-v1-secret" not in done.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    done = subprocess.run([sys.executable, "-m", "launcher.gateway", "route", str(bad)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a JSON object" in done.stderr


def test_the_dry_run_compresses_first_as_the_gateway_does(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(textwrap.dedent("""\
        version: 1
        providers:
          anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com]}
        profiles: {claude: {compression: max}}
    """))
    body = explain.read_body(corpus_record("cc-258c7280-r060.json"))
    safe = explain.explain(body, rules_path=rules, environ={}, identity=explain.identity_for("qwen", None))
    squeezed = safe["compression"]
    assert squeezed["mode"] == "cache_safe" and {c["kind"] for c in squeezed["cuts"]} == {"shrunk", "write_echo"}
    assert squeezed["tokens_before"] > squeezed["tokens_after"] > 0
    assert "compress  cache_safe: " in explain.render_explanation(safe)
    deeper = explain.explain(body, rules_path=rules, environ={}, identity=explain.identity_for(None, "cip"))
    assert deeper["compression"]["mode"] == "max"  # the claude profile
    assert deeper["compression"]["tokens_after"] < squeezed["tokens_after"]
