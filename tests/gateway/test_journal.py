"""Journal: GET /requests on a real gateway lists the recent LLM requests (for `xx watch`), with the
agent, launch, models, status and attempts, and nothing of the prompt or the keys."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest
from harness import gateway_on_rules, trust

RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
    cascades:
      "openrouter:j1/fail-503": ["openrouter:j1/chunks-2"]
      "openrouter:j2/fail-500": ["openrouter:j2/fail-502"]
    fallback: {method: cascade}
""")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, fake, pki):
    workdir = tmp_path_factory.mktemp("journal")
    process = gateway_on_rules(workdir, fake, pki, RULES, "--set", "clutch_retries=0", "--set",
                               "clutch_journal_size=3", "--set", f"clutch_state_dir={workdir / 'state'}",
                               env={"OPENROUTER_API_KEY": "sk-or-v1-rules-key"})
    yield process
    process.stop()


def chat(gateway, model: str, user: str = "xx-qnp.s-j") -> httpx.Response:
    with httpx.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False) as client:
        return client.post("https://openrouter.ai/api/v1/chat/completions",
                           headers={"authorization": "Bearer sk-or-v1-agent-key"},
                           json={"model": model, "stream": True,
                                 "messages": [{"role": "user", "content": "journal prompt 91c"}]})


def requests_after(gateway, after: int = 0) -> dict:
    return httpx.get(f"http://127.0.0.1:{gateway.port}/requests?after={after}", timeout=5, trust_env=False).json()


def test_a_fallback_and_a_failure_are_journaled(gateway):
    start = requests_after(gateway)["next"]
    assert chat(gateway, "j1/fail-503").status_code == 200
    assert chat(gateway, "j2/fail-500", user="xx-claude.s-s2").status_code == 500  # the most informative upstream error
    page = requests_after(gateway, start)
    served, failed = page["requests"]
    assert page["next"] == failed["seq"] == served["seq"] + 1
    assert served["agent"] == "qwen" and served["launch"] == "qnp" and served["session"] == "j"
    assert (served["model"], served["served_by"], served["status"]) == ("j1/fail-503", "openrouter:j1/chunks-2", 200)
    assert served["attempts"] == 2 and served["fallback"] is True and served["stream"] is True
    assert served["dialect"] == "openai_chat" and served["duration_ms"] >= 0
    assert (failed["agent"], failed["launch"], failed["status"], failed["attempts"]) == ("claude", None, 500, 2)
    assert failed["error"] and failed["served_by"] is None
    text = json.dumps(page)
    for secret in ("journal prompt", "sk-or-v1-agent-key", "sk-or-v1-rules-key"):
        assert secret not in text
    assert requests_after(gateway, page["next"])["requests"] == []


def test_the_journal_is_bounded(gateway):
    for _ in range(4):
        assert chat(gateway, "j3/plain").status_code == 200
    page = requests_after(gateway)
    assert len(page["requests"]) == 3  # clutch_journal_size
    assert [e["seq"] for e in page["requests"]] == list(range(page["next"] - 2, page["next"] + 1))


def test_non_llm_traffic_is_not_journaled(gateway):
    before = requests_after(gateway)["next"]
    httpx.get(f"http://127.0.0.1:{gateway.port}/health", trust_env=False)
    assert requests_after(gateway, before)["requests"] == []
