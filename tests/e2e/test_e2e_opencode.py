"""End to end: the real OpenCode CLI (npm opencode-ai), which hard-codes https://openrouter.ai,
routed through Clutch with nothing but the recipe's environment."""

from __future__ import annotations

import os
import subprocess

import pytest
from harness import agent_binary

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from launcher.recipe import agent_environment


pytestmark = pytest.mark.e2e


@pytest.fixture
def opencode():
    return agent_binary("opencode", "OpenCode")


def test_opencode_runs_a_turn_through_clutch(opencode, gateway, fake, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proxy = gateway.proxy_url(username_for(Identity(agent="opencode", session="e2e-oc")))
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "OPENROUTER_API_KEY": "sk-or-v1-e2e-test",
        # the model catalog lives on models.opencode.ai, which this test machine cannot reach
        "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
        **agent_environment(proxy, ca_files(gateway.confdir)),
    }
    before = len(fake.entries())
    result = subprocess.run([str(opencode), "run", "-m", "openrouter/anthropic/claude-sonnet-4.5", "say hi"],
                            env=env, cwd=home, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pong from the fake upstream" in result.stdout

    turns = [e for e in fake.entries()[before:] if e["path"] == "/api/v1/chat/completions"]
    assert any(e["model"] == "anthropic/claude-sonnet-4.5" for e in turns)
    for entry in turns:  # every LLM call went through Clutch's engine, with the agent's own key
        assert entry["host"] == "openrouter.ai"
        assert entry["headers"]["authorization"] == "Bearer sk-or-v1-e2e-test"
        assert "x-clutch-flow" in entry["headers"]
        assert entry["status"] == 200
