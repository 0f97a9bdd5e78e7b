"""Pi after a failed or aborted turn, and addons/translate/pi_repair.py, which makes its next request acceptable
to providers that demand alternating roles.

What the real Pi 0.73.1 does (found running it through Clutch against the fake provider; the tests
that pin it send Pi straight to the fake, so they see Pi's own requests whatever Clutch changes):

* A failed turn (`pi -p` on a model answering 500) exits 1 and leaves the session file ending in one
  assistant message with stopReason "error" per attempt (Pi's auto-retry appends one each time); an
  Escape (or RPC abort) leaves one with stopReason "aborted" and the partial text. A process killed
  before its answer leaves no assistant message (and no file at all on the first turn).
* Pi continues such a session: `pi --continue -p NEXT`, `pi --session ID -p NEXT` and the TUI's next
  prompt (`pi --continue` in a pseudo-terminal, tried by hand) all answer, exit 0. Pi leaves failed and
  aborted answers out of every request, so the request holds the unanswered prompt and NEXT as two user
  turns in a row, in the chat, Anthropic and Responses dialects alike, and in the same process too (no
  resume needed).
* No request of Pi ends with an assistant message: a prompt ends with the user's text, and Pi's only
  continuations without a prompt (auto-retry, context-overflow recovery) call agent.continue(), which
  refuses an assistant tail. That refusal, "Cannot continue from message role: assistant", happens
  inside a running Pi, after overflow recovery rebuilt its context from the session file and the
  rebuilt context still ends with an assistant message (a silent overflow; or error answers of
  earlier attempts under the one removed); Pi swallows it (`.catch(() => {})`) and that recovery
  simply never resends. `--continue` / `--session` with a prompt never ran into it, whatever the
  session's tail (error, aborted, unanswered prompt, tool call without a result).
* `pi --continue -p` without a prompt sends nothing: it prints the last answer again (the stale error,
  exit 1). Removing the failed answers from the session file changes none of the bytes Pi sends
  afterwards, so Clutch repairs the request (where strict providers refuse it), not the file.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from fake_upstream import repeated_user_turn
from harness import agent_binary, stop, trust

from addons.certs import ca_files
from addons.wire.identity import Identity, username_for
from addons.translate.pi_repair import repair_pi_request
from addons.wire.dialects import Dialect
from launcher.recipe import agent_environment

ANSWER = "pong from the fake upstream"
# Pi's own auto-retry once, quickly, and no extra SDK retries: a failed turn takes a second, not 14 s
PI_SETTINGS = {"retry": {"maxRetries": 1, "baseDelayMs": 100, "provider": {"maxRetries": 0}}}
KEYS = {"OPENROUTER_API_KEY": "sk-or-v1-e2e-test", "ANTHROPIC_API_KEY": "sk-ant-api03-e2e-test",
        "OPENAI_API_KEY": "sk-e2e-test"}
# dialect -> Pi's provider, a model that fails, a model that answers, where the fake serves it.
# Model names are this module's own: the session-wide fake's log is looked up by model.
DIALECTS = {
    Dialect.OPENAI_CHAT: ("openrouter", "fake/fail-500-pi-chat", "fake/pi-repair-chat",
                          "openrouter.ai", "/api/v1/chat/completions"),
    Dialect.ANTHROPIC: ("anthropic", "claude-fail-500-pi", "claude-pi-repair", "api.anthropic.com", "/v1/messages"),
    Dialect.OPENAI_RESPONSES: ("openai", "gpt-fail-500-pi", "gpt-pi-repair", "api.openai.com", "/v1/responses"),
}
FAKE_API = {Dialect.OPENAI_CHAT: "chat", Dialect.ANTHROPIC: "messages", Dialect.OPENAI_RESPONSES: "responses"}


# ---------------------------------------------------------------- the repair, on bodies as Pi sends them

def chat_body(*turns: dict) -> dict:
    return {"model": "m", "stream": True, "messages": [{"role": "developer", "content": "You are pi."}, *turns]}


def text_parts(*texts: str, kind: str = "text") -> list[dict]:
    return [{"type": kind, "text": t} for t in texts]


def test_two_user_turns_become_one_with_both_parts_in_order():
    body = chat_body({"role": "user", "content": text_parts("first question")},
                     {"role": "user", "content": text_parts("second question")})
    agent_sent = copy.deepcopy(body)

    repair = repair_pi_request(Dialect.OPENAI_CHAT, body)

    assert repair is not None and repair.merged == 1
    assert repair.body["messages"] == [{"role": "developer", "content": "You are pi."},
                                       {"role": "user", "content": text_parts("first question", "second question")}]
    assert {k: v for k, v in repair.body.items() if k != "messages"} == {"model": "m", "stream": True}
    assert body == agent_sent  # the agent's body is not touched
    assert repair.note.startswith("merged 1 user turn into the unanswered one before")
    assert repair_pi_request(Dialect.OPENAI_CHAT, repair.body) is None  # idempotent


def test_a_run_of_unanswered_prompts_merges_into_one_turn():
    body = chat_body({"role": "user", "content": "a"}, {"role": "assistant", "content": "answer a"},
                     {"role": "user", "content": "b"}, {"role": "user", "content": "c"},
                     {"role": "user", "content": text_parts("d")})
    repair = repair_pi_request(Dialect.OPENAI_CHAT, body)
    assert repair.merged == 2
    assert repair.body["messages"][1:] == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "answer a"},
        {"role": "user", "content": text_parts("b\n\nc", "d")}]  # two strings stay a string


def test_alternating_turns_and_tool_results_are_left_alone():
    body = chat_body({"role": "user", "content": "run it"},
                     {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}, {"id": "c2"}]},
                     {"role": "tool", "content": "one", "tool_call_id": "c1"},
                     {"role": "tool", "content": "No result provided", "tool_call_id": "c2"},
                     {"role": "user", "content": "next"})
    assert repair_pi_request(Dialect.OPENAI_CHAT, body) is None
    assert repair_pi_request(Dialect.OPENAI_CHAT, chat_body({"role": "user", "content": "only"})) is None


def test_turns_that_differ_in_more_than_content_stay_apart():
    body = chat_body({"role": "user", "name": "alice", "content": "a"}, {"role": "user", "content": "b"})
    assert repair_pi_request(Dialect.OPENAI_CHAT, body) is None


def test_anthropic_keeps_cache_control_and_tool_results_first():
    body = {"model": "claude", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "read it"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "No result provided"}]},
        {"role": "user", "content": [{"type": "text", "text": "next", "cache_control": {"type": "ephemeral"}}]},
    ]}
    repair = repair_pi_request(Dialect.ANTHROPIC, body)
    assert repair.body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "No result provided"},
        {"type": "text", "text": "next", "cache_control": {"type": "ephemeral"}}]}
    plain = {"messages": [{"role": "user", "content": "hello"}, {"role": "user", "content": text_parts("next")}]}
    assert repair_pi_request(Dialect.ANTHROPIC, plain).body["messages"] == [
        {"role": "user", "content": text_parts("hello", "next")}]


def test_responses_items_merge_and_tool_outputs_separate_turns():
    body = {"model": "gpt", "input": [
        {"role": "developer", "content": "You are pi."},
        {"role": "user", "content": text_parts("hello", kind="input_text")},
        {"role": "user", "content": "next"},
        {"type": "function_call", "call_id": "c1", "name": "bash", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"role": "user", "content": text_parts("after the tool", kind="input_text")},
    ]}
    repair = repair_pi_request(Dialect.OPENAI_RESPONSES, body)
    assert repair.merged == 1
    assert repair.body["input"][1] == {"role": "user", "content": text_parts("hello", "next", kind="input_text")}
    assert repair.body["input"][2:] == body["input"][3:]
    assert repair_pi_request(Dialect.OPENAI_RESPONSES, {"input": "just a string"}) is None


def test_gemini_bodies_are_left_alone():
    body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}, {"role": "user", "parts": [{"text": "next"}]}]}
    assert repair_pi_request(Dialect.GEMINI, body) is None


# ---------------------------------------------------------------- the real Pi

class PiHome:
    """A temp HOME with Pi's agent directory (~/.pi/agent) and one working directory. Pi runs through
    `gateway` (Clutch, as in real use) or, without one, straight to the fake provider (its providers'
    base URLs set in ~/.pi/agent/models.json): that is what Pi itself sends, whatever Clutch changes."""

    def __init__(self, root: Path, fake, pki, gateway=None):
        self.home = root / "home"
        self.work = root / "work"
        self.agent_dir = self.home / ".pi" / "agent"
        self.agent_dir.mkdir(parents=True)
        self.work.mkdir()
        (self.agent_dir / "settings.json").write_text(json.dumps(PI_SETTINGS))
        if gateway is None:
            self.route = {"NODE_EXTRA_CA_CERTS": str(pki.ca_cert)}
            fake_url = f"https://127.0.0.1:{fake.port}"
            (self.agent_dir / "models.json").write_text(json.dumps({"providers": {
                "openrouter": {"baseUrl": f"{fake_url}/api/v1"}, "anthropic": {"baseUrl": fake_url},
                "openai": {"baseUrl": f"{fake_url}/v1"}}}))
        else:
            proxy = gateway.proxy_url(username_for(Identity(agent="pi", session="e2e-pi")))
            self.route = agent_environment(proxy, ca_files(gateway.confdir))

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "HOME": str(self.home), "LANG": "C.UTF-8", "TERM": "dumb",
                "PI_OFFLINE": "1", "PI_TELEMETRY": "0", **KEYS, **self.route}

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([str(agent_binary("pi", "Pi")), *args], env=self.env, cwd=self.work,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def session_files(self) -> list[Path]:
        return sorted((self.agent_dir / "sessions").glob("*/*.jsonl"))


def entries_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def messages_of(path: Path) -> list[tuple[str, str | None]]:
    """(role, stopReason) of the session's messages, oldest first."""
    return [(e["message"]["role"], e["message"].get("stopReason")) for e in entries_of(path) if e["type"] == "message"]


def turns_of(dialect: Dialect, body: dict) -> list[dict]:
    return body["input" if dialect is Dialect.OPENAI_RESPONSES else "messages"]


def user_texts(turn: dict) -> list[str]:
    content = turn["content"]
    return [content] if isinstance(content, str) else [part["text"] for part in content if "text" in part]


def conversation(dialect: Dialect, body: dict) -> list[tuple[str, list[str]]]:
    """(role, texts) of the body's user and assistant turns: the system prompt left out."""
    return [(t["role"], user_texts(t)) for t in turns_of(dialect, body) if t.get("role") in ("user", "assistant")]


@pytest.fixture(scope="module", params=list(DIALECTS), ids=lambda d: str(d))
def failed_then_continued(request, tmp_path_factory, fake, pki):
    """A real Pi session whose first turn failed, continued with `pi --continue -p`; per dialect."""
    agent_binary("pi", "Pi")
    dialect = request.param
    provider, failing, answering, _, _ = DIALECTS[dialect]
    pi = PiHome(tmp_path_factory.mktemp(f"pi-{dialect}"), fake, pki)
    failed = pi.run("--provider", provider, "--model", failing, "-p", "first question")
    [session] = pi.session_files()
    after_failure = messages_of(session)
    continued = pi.run("--continue", "--provider", provider, "--model", answering, "-p", "second question")
    [sent] = [e for e in fake.entries() if e["model"] == answering]
    return dialect, failed, after_failure, continued, sent, session


@pytest.mark.e2e
def test_pi_keeps_failed_answers_in_its_session_and_out_of_its_next_request(failed_then_continued):
    dialect, failed, after_failure, continued, sent, session = failed_then_continued
    assert failed.returncode == 1 and "500" in failed.stderr
    assert after_failure == [("user", None), ("assistant", "error"), ("assistant", "error")]  # one per attempt

    assert continued.returncode == 0, continued.stderr[-2000:]
    assert ANSWER in continued.stdout
    assert sent["status"] == 200
    assert conversation(dialect, sent["request_json"]) == [("user", ["first question"]), ("user", ["second question"])]
    assert messages_of(session)[-2:] == [("user", None), ("assistant", "stop")]  # the failed answers stay


@pytest.mark.e2e
def test_the_repair_merges_the_unanswered_prompt_with_the_next(failed_then_continued):
    dialect, *_, sent, _ = failed_then_continued
    repair = repair_pi_request(dialect, sent["request_json"])
    assert repair is not None and repair.merged == 1
    assert conversation(dialect, repair.body) == [("user", ["first question", "second question"])]
    assert repeated_user_turn(FAKE_API[dialect], repair.body) is None


@pytest.mark.e2e
def test_a_strict_provider_refuses_what_pi_sent_and_takes_it_repaired(failed_then_continued, fake, pki):
    """The body Pi really sent, to a model that demands alternation (the fake's strict-roles), as it
    came and repaired: 400, then an answer."""
    dialect, *_, sent, _ = failed_then_continued
    *_, host, path = DIALECTS[dialect]
    strict = {**sent["request_json"], "model": f"fake/strict-roles-{dialect}", "stream": False}
    repaired = repair_pi_request(dialect, strict).body
    with httpx.Client(verify=trust(pki.ca_cert), trust_env=False, timeout=10) as client:
        def post(body: dict) -> httpx.Response:
            return client.post(f"https://127.0.0.1:{fake.port}{path}", json=body, headers={"host": host})
        refused, answered = post(strict), post(repaired)
    assert refused.status_code == 400
    assert "roles must alternate" in refused.text
    assert answered.status_code == 200, answered.text


@pytest.mark.e2e
def test_pi_leaves_an_aborted_answer_out_in_the_same_process(fake, pki, tmp_path):
    """No resume needed: abort a streaming answer over Pi's RPC mode (what Escape does in the TUI),
    then prompt again."""
    agent_binary("pi", "Pi")
    model = "fake/slow-pi-abort"  # ten pieces 0.2 s apart: time to abort in the middle
    pi = PiHome(tmp_path, fake, pki)
    process = subprocess.Popen([str(agent_binary("pi", "Pi")), "--mode", "rpc", "--provider", "openrouter",
                                "--model", model], env=pi.env, cwd=pi.work, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events: queue.Queue = queue.Queue()

    def read_events() -> None:  # one JSON object a line on stdout
        for line in process.stdout:
            if line.startswith("{"):
                events.put(json.loads(line))

    threading.Thread(target=read_events, daemon=True).start()

    def send(command: dict) -> None:
        process.stdin.write(json.dumps(command) + "\n")
        process.stdin.flush()

    def wait_for(kind: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = events.get(timeout=0.2)
            except queue.Empty:
                continue
            if event.get("type") == kind:
                return event
        raise TimeoutError(f"Pi sent no {kind} event")

    try:
        send({"type": "prompt", "message": "write a story"})
        wait_for("message_update")  # the answer is streaming
        send({"type": "abort"})
        wait_for("agent_end")
        send({"type": "prompt", "message": "shorter please"})
        assert wait_for("agent_end")["messages"][-1]["stopReason"] == "stop"
    finally:
        stop(process)

    [session] = pi.session_files()
    assert messages_of(session) == [("user", None), ("assistant", "aborted"), ("user", None), ("assistant", "stop")]
    second = [e for e in fake.entries() if e["model"] == model][-1]
    assert conversation(Dialect.OPENAI_CHAT, second["request_json"]) == [
        ("user", ["write a story"]), ("user", ["shorter please"])]


@pytest.mark.e2e
def test_removing_the_failed_answers_from_the_session_changes_nothing_pi_sends(fake, pki, tmp_path):
    """Why Clutch does not repair Pi's session files: Pi sends the same bytes either way, and without a
    prompt it sends nothing either way."""
    agent_binary("pi", "Pi")
    pi = PiHome(tmp_path, fake, pki)
    pi.run("--provider", "openrouter", "--model", "fake/fail-500-pi-trim", "-p", "first question")
    [session] = pi.session_files()
    trimmed = session.with_name("trimmed.jsonl")
    kept = [e for e in entries_of(session)
            if not (e["type"] == "message" and e["message"].get("stopReason") in ("error", "aborted"))]
    kept[0] = {**kept[0], "id": "trimmed-" + kept[0]["id"]}  # another session, same history
    trimmed.write_text("".join(json.dumps(e) + "\n" for e in kept))

    def without_prompt(path: Path) -> tuple[int, int]:
        before = len(fake.entries())
        result = pi.run("--session", str(path), "--provider", "openrouter", "--model", "fake/pi-trim", "-p")
        return result.returncode, len(fake.entries()) - before

    assert without_prompt(session) == (1, 0)  # the stale error printed again, nothing sent
    assert without_prompt(trimmed) == (0, 0)  # nothing printed, nothing sent: not a continuation either

    sent = []
    for path in (session, trimmed):
        assert pi.run("--session", str(path), "--provider", "openrouter", "--model", "fake/pi-trim",
                      "-p", "second question").returncode == 0
        sent.append([e for e in fake.entries() if e["model"] == "fake/pi-trim"][-1]["request_json"]["messages"])
    assert sent[0] == sent[1]


@pytest.mark.e2e
def test_pi_continues_on_a_strict_provider_after_a_failed_turn(gateway, fake, pki, tmp_path):
    """Through Clutch, as in real use: the request Clutch forwards must alternate."""
    agent_binary("pi", "Pi")
    pi = PiHome(tmp_path, fake, pki, gateway)
    pi.run("--provider", "openrouter", "--model", "fake/fail-500-pi-strict", "-p", "first question")
    continued = pi.run("--continue", "--provider", "openrouter", "--model", "fake/strict-roles-pi",
                       "-p", "second question")
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert ANSWER in continued.stdout
