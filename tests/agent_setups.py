"""Every real agent's non-interactive setup for one prompt through Clutch, in one place.

For each agent, `prepare(agent, home, work)` writes what a fresh HOME needs and returns an
`AgentSetup`: the environment to add to launcher.recipe.agent_environment (the agent's key and the
switches that cut its start-up traffic; never a base URL, except Qwen's, which its existing test
points at the real OpenRouter URL), the extra arguments of a one-prompt run (provider and model flags
only) and which fake-provider log entries are its LLM calls (host + path).

The binary, the print-mode words and the prompt are not here: they are the launcher's
(`launcher.agents.command_line(agent, "n", prompt=PROMPT, extra=setup.args)`, the argv of
`xx <agent>np -p PROMPT -- ARGS`), so a test and an `xx` launch run the same command. The permission
bypass is the launcher's too (`--dangerously-skip-permissions`, and IS_SANDBOX=1 for Claude Code as
root: `launcher.agents.yolo_env`).

Verified on this machine with the versions pinned in tests/agents/ through a real gateway and
tests/fake_upstream.py (tests/e2e/test_e2e_more_agents.py runs every setup here): Codex CLI 0.169.0,
Pi 0.73.1, Hermes Agent 0.19.0, OpenClaw 2026.9.6 (Node 24.21.0); Claude Code, OpenCode and Qwen Code
as in their own e2e tests (test_e2e_claude.py, test_e2e_opencode.py, test_e2e_qwen.py). Every key is
fake but shaped like a real one (Hermes reads `sk-ant-` keys that are not
`sk-ant-api...` as OAuth tokens), and every agent has its own, so a log entry shows whose key it carried.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class AgentSetup:
    agent: str  # as in launcher.agents.AGENTS
    env: dict[str, str]  # added to launcher.recipe.agent_environment (and PATH, HOME, LANG, TERM)
    args: tuple[str, ...]  # provider / model flags for a one-prompt run
    host: str  # where its LLM calls go, as the fake sees them (Host header) ...
    path: str  # ... and the path, query included
    key_header: tuple[str, str]  # the request header that carries the agent's own key, and its value
    model: str | None = None  # the model the args (or env) choose; None = the agent's default

    def is_llm_call(self, entry: dict) -> bool:
        """A fake-provider log entry is one of this agent's LLM calls."""
        return entry["method"] == "POST" and entry["host"] == self.host and entry["path"] == self.path

    def carries_own_key(self, entry: dict) -> bool:
        name, value = self.key_header
        return entry["headers"].get(name) == value


OPENROUTER_CHAT = ("openrouter.ai", "/api/v1/chat/completions")


def _bearer(key: str) -> tuple[str, str]:
    return "authorization", f"Bearer {key}"


def setup_codex(home: Path, work: Path) -> AgentSetup:
    """`codex exec --skip-git-repo-check` on OpenAI's Responses API at api.openai.com.

    The key is CODEX_API_KEY: with only OPENAI_API_KEY, 0.169.0 sends its
    requests with no Authorization header at all, which a real api.openai.com refuses (seen here
    through a plain mitmproxy). Codex speaks the Responses API over its WebSocket first, which Clutch
    answers itself: each turn goes through Clutch's engine as a POST /v1/responses of its own.
    config.toml switches off its start-up traffic: analytics (OTLP to ab.chatgpt.com), the
    plugin lists (api.github.com, chatgpt.com) and, new in this version, `api_key_model_discovery`:
    with an API key it fetches chatgpt.com/backend-api/codex/models (not a provider host, so
    tunnelled) and retries it for about 9 s when that fails.
    """
    key = "sk-proj-e2e-codex"
    codex_home = home / ".codex"  # $CODEX_HOME
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        "[analytics]\nenabled = false\n\n[features]\nplugins = false\napi_key_model_discovery = false\n")
    model = "gpt-5.5"  # in 0.169.0's bundled model catalog, so no "model metadata not found" warning
    return AgentSetup("codex", {"CODEX_API_KEY": key}, ("-m", model), "api.openai.com", "/v1/responses",
                      _bearer(key), model)


def setup_pi(home: Path, work: Path) -> AgentSetup:
    """`pi --print` on OpenRouter (its key in OPENROUTER_API_KEY; chat completions).

    Nothing in HOME: Pi writes ~/.pi/agent itself and has no onboarding. PI_OFFLINE and PI_TELEMETRY
    are its documented switches for start-up network operations and the install report (its
    README, `pi --help`); `--print` sent nothing but the LLM call here even without them.
    """
    key = "sk-or-v1-e2e-pi"
    model = "deepseek/deepseek-chat"  # in Pi 0.73.1's OpenRouter catalog (`pi --list-models openrouter`)
    return AgentSetup("pi", {"OPENROUTER_API_KEY": key, "PI_OFFLINE": "1", "PI_TELEMETRY": "0"},
                      ("--provider", "openrouter", "--model", model), *OPENROUTER_CHAT, _bearer(key), model)


def setup_hermes(home: Path, work: Path) -> AgentSetup:
    """`hermes ... -z PROMPT` (one-shot, approvals bypassed) on OpenRouter.

    Nothing in HOME: the first run creates ~/.hermes (config, state.db, skills). Before the turn it
    reads OpenRouter's model list (GET /api/v1/models, passed through untouched) and models.dev
    (not a provider host: tunnelled; unreachable here, so it uses its bundled snapshot, at once).
    HERMES_DISABLE_LAZY_INSTALLS=1 seals its venv (hermes-agent's tools/lazy_deps.py): it never
    pip-installs at run time (edge-tts, anthropic); tests/agents/
    hermes-requirements.txt preinstalls both. `hermes -z` exits 0 even when every call failed,
    so a caller must check the answer, not only the exit code.
    """
    key = "sk-or-v1-e2e-hermes"
    model = "nousresearch/hermes-4-70b"
    return AgentSetup("hermes", {"OPENROUTER_API_KEY": key, "HERMES_DISABLE_LAZY_INSTALLS": "1"},
                      ("--provider", "openrouter", "-m", model), *OPENROUTER_CHAT, _bearer(key), model)


def setup_openclaw(home: Path, work: Path) -> AgentSetup:
    """`openclaw agent exec` (one isolated headless embedded turn) on OpenRouter, under Node 24.

    Nothing in HOME: exec needs no onboarding and creates ~/.openclaw itself. It reads OpenRouter's
    model list first (GET /api/v1/models, passed through untouched); its own
    proxy dispatcher reads HTTPS_PROXY. It is slow to start (SQLite maintenance, 42 tool
    schemas: 10-26 s here on 2 busy cores, 7-10 s on an idle machine); `--isolated` and `--auth-env-only`
    did not make it measurably faster. Its executable must run on the Node 24 beside it
    (tests/harness.py agent_search_path).
    """
    key = "sk-or-v1-e2e-openclaw"
    model = "z-ai/glm-4.6"
    return AgentSetup("openclaw", {"OPENROUTER_API_KEY": key}, ("--model", f"openrouter/{model}"),
                      *OPENROUTER_CHAT, _bearer(key), model)


def setup_claude(home: Path, work: Path) -> AgentSetup:
    """`claude --print` on api.anthropic.com with an API key (from test_e2e_claude.py).

    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 leaves policy_limits and settings of its 12 start-up
    requests; both pass through Clutch untouched to the fake.
    """
    key = "sk-ant-api03-e2e-claude"  # other sk-ant- keys look like OAuth tokens to Hermes
    return AgentSetup("claude", {"ANTHROPIC_API_KEY": key, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
                      (), "api.anthropic.com", "/v1/messages?beta=true", ("x-api-key", key))


def setup_opencode(home: Path, work: Path) -> AgentSetup:
    """`opencode run` on OpenRouter, which it hard-codes (from test_e2e_opencode.py). It makes two
    LLM calls per prompt: a title with a small model, then the turn."""
    key = "sk-or-v1-e2e-opencode"
    model = "anthropic/claude-sonnet-4.5"
    return AgentSetup("opencode", {
        "OPENROUTER_API_KEY": key,
        # the model catalog lives on models.opencode.ai, which this test machine cannot reach
        "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
    }, ("-m", f"openrouter/{model}"), *OPENROUTER_CHAT, _bearer(key), model)


def setup_qwen(home: Path, work: Path) -> AgentSetup:
    """Qwen Code's one-shot (positional prompt) with its OpenAI-compatible provider pointed at the
    real OpenRouter URL, as a user would configure it (from test_e2e_qwen.py)."""
    (home / ".qwen").mkdir(parents=True, exist_ok=True)
    # no usage statistics posts to aliyuncs.com
    (home / ".qwen" / "settings.json").write_text(json.dumps({"privacy": {"usageStatisticsEnabled": False}}))
    key = "sk-e2e-qwen"
    # a model no other test asks the session-wide fake for (test_route.py looks up qwen/qwen3-coder)
    model = "qwen/qwen3-coder-flash"
    return AgentSetup("qwen", {
        "OPENAI_API_KEY": key, "OPENAI_BASE_URL": "https://openrouter.ai/api/v1", "OPENAI_MODEL": model,
        # Qwen otherwise re-runs itself in a child Node with a bigger heap: ~2 s more per run
        "QWEN_CODE_NO_RELAUNCH": "true",
    }, ("--auth-type", "openai"), *OPENROUTER_CHAT, _bearer(key), model)


SETUPS = {
    "claude": setup_claude, "codex": setup_codex, "opencode": setup_opencode, "qwen": setup_qwen,
    "pi": setup_pi, "hermes": setup_hermes, "openclaw": setup_openclaw,
}


def prepare(agent: str, home: Path, work: Path) -> AgentSetup:
    """Make `home` and `work` (the agent's working directory) and set `home` up for `agent`."""
    home.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    return SETUPS[agent](home, work)
