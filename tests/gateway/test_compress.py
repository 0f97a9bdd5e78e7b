"""Compress through a real gateway: official SDKs (and raw httpx for Codex's and Gemini's shapes) send
agent-shaped requests through `mitmdump -s addons/clutch.py`, and the fake provider's log shows what
went upstream.

What must hold (addons/compression/policy.py's docstring): only the text of tool outputs changes, long logs
keep their failing tests and summary and say what was cut, file reads are never shrunk, each request
is the previous one plus the new turn byte for byte (cache_safe), `max` replaces reads made stale by
a later edit, `off` and unknown shapes pass the agent's bytes unchanged, and no key reaches the log.

Most checks use `differences(sent, received)`: every JSON path at which the body the fake received
differs from the one the client put on the wire (values, types, key order, list lengths). Asserting
that it is exactly the tool output's path proves system prompt, tools, assistant messages, user text,
reads and tool-call ids all arrived byte-identical, in one line with a readable failure.
"""

from __future__ import annotations

import gzip
import importlib
import json
import textwrap
import time

import anthropic
import httpx
import openai
import pytest
from harness import gateway_on_rules, trust

MARKER = "[clutch: "
KEYS = {  # realistic prefixes; each must reach the fake and never the gateway's log
    "anthropic": "sk-ant-api03-compress-secret-5kQ2vX9",
    "openai": "sk-proj-compress-secret-Lr7mW3",
    "gemini": "AIzaSyCompressSecret-8hTz0",
}

RULES = textwrap.dedent("""\
    version: 1
    providers:
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
               hosts: [api.openai.com], key_env: OPENAI_API_KEY}
      gemini: {base_url: "https://generativelanguage.googleapis.com", dialects: [gemini],
               hosts: [generativelanguage.googleapis.com], key_env: GEMINI_API_KEY}
    compression: {mode: cache_safe}
""")
# Claude gets max, other agents the rules' cache_safe, and a launch with profile 1 (`xx cip1`) none:
# the launch profile outranks the agent's. Max rewrites an already-sent output only once the session
# has been idle for a second.
MAX_RULES = RULES.replace("{mode: cache_safe}", "{mode: cache_safe, rewrites: when_cold, cold_after_s: 1}") + \
    textwrap.dedent("""\
        profiles:
          claude: {compression: max}
          "1": {compression: off}
    """)


# ---------------------------------------------------------------- gateways

def _start(tmp_path_factory, fake, pki, name: str, rules: str, *extra: str):
    workdir = tmp_path_factory.mktemp(name)
    return gateway_on_rules(workdir, fake, pki, rules, "--set", "clutch_retries=0",
                            "--set", f"clutch_state_dir={workdir / 'state'}", *extra)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, fake, pki):
    """The rules' compression section alone: cache_safe for everyone."""
    process = _start(tmp_path_factory, fake, pki, "compress", RULES)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def max_gateway(tmp_path_factory, fake, pki):
    """Profiles: max for Claude, off for launch profile 1; rewrites when_cold after 1 s."""
    process = _start(tmp_path_factory, fake, pki, "compress-max", MAX_RULES)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def off_gateway(tmp_path_factory, fake, pki):
    """The same rules as max_gateway, overridden by the option: it outranks rules and profiles."""
    process = _start(tmp_path_factory, fake, pki, "compress-off", MAX_RULES, "--set", "clutch_compression=off")
    yield process
    process.stop()


# ---------------------------------------------------------------- tool outputs as agents send them

def pytest_log(failing: tuple[str, ...] = ("test_bad", "test_worse"), total: int = 400) -> str:
    """`pytest -v` on 400 tests: start-up lines, one PASSED line per test (modules alternate, so the
    lines do not fold as repeats and the log reduction proper runs), the failures with their
    tracebacks, the short summary and the final count."""
    modules = ("test_api", "test_models", "test_views", "test_utils", "test_x")
    lines = ["============================= test session starts ==============================",
             "platform linux -- Python 3.12.3, pytest-8.3.2, pluggy-1.5.0 -- /repo/.venv/bin/python",
             "rootdir: /repo", "configfile: pyproject.toml", f"collected {total} items", ""]
    spots = {120 + 180 * i: name for i, name in enumerate(failing)}
    for n in range(total - len(failing)):
        if n in spots:
            lines.append(f"tests/test_x.py::{spots[n]} FAILED")
        lines.append(f"tests/{modules[n % len(modules)]}.py::test_case_{n} PASSED ✓")
    lines += ["", "=================================== FAILURES ==================================="]
    for name in failing:
        lines += [f"___________________________________ {name} ___________________________________", "",
                  f"    def {name}():", ">       assert compute() == 3, \"boom\"", "E       AssertionError: boom",
                  "E       assert 2 == 3", "E        +  where 2 = compute()", "",
                  "tests/test_x.py:42: AssertionError"]
    lines.append("=========================== short test summary info ============================")
    lines += [f"FAILED tests/test_x.py::{name} - AssertionError: boom" for name in failing]
    lines.append(summary_line(len(failing), total))
    return "\n".join(lines)


def summary_line(failed: int, total: int) -> str:
    return f"===== {failed} failed, {total - failed} passed in 3.2s ====="


LOG = pytest_log()
LOG_AFTER_FIX = pytest_log(failing=("test_worse",))


def read_result(lines: int = 700, scale: str = "0.1") -> str:
    """What Claude Code's Read returns: the file, numbered (`     1→...`). Long enough (over 10,000
    tokens, above output_tokens) that it would be cut if it were taken for an ordinary output, with
    "error" on a few lines, which such a cut would keep."""
    body = []
    for n in range(1, lines + 1):
        if n % 250 == 0:
            text = f"        raise ValueError(\"error: bad input in step {n}\")"
        else:
            text = f"    value_{n} = compute_step({n}, scale={scale}, label=\"step {n} of {lines}\")"
        body.append(f"{n:>6}→{text}")
    return "\n".join(body)


READ = read_result()
READ_AFTER_EDIT = read_result(scale="0.2")
SYSTEM = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
          {"type": "text", "text": "Working directory: /repo\nIs a git repository: true",
           "cache_control": {"type": "ephemeral"}}]
TOOLS = [
    {"name": "Bash", "description": "Executes a bash command.",
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
    {"name": "Read", "description": "Reads a file from the local filesystem.",
     "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
    {"name": "Edit", "description": "Performs exact string replacements in files.",
     "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                       "old_string": {"type": "string"},
                                                       "new_string": {"type": "string"}}}},
]
LAST_TEXT = "Go ahead and fix it, then run the tests again."


def tool_use(id_: str, name: str, arguments: dict, text: str | None = None) -> dict:
    content = ([{"type": "text", "text": text}] if text else []) + [
        {"type": "tool_use", "id": id_, "name": name, "input": arguments}]
    return {"role": "assistant", "content": content}


def tool_result(id_: str, content, is_error: bool = False) -> dict:
    block = {"type": "tool_result", "tool_use_id": id_, "content": content}
    if is_error:
        block["is_error"] = True
    return {"role": "user", "content": [block]}


def user_text(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def claude_conversation() -> list[dict]:
    """Claude Code's history after a failing test run and a read of the file under test.
    The pytest log is message 2's tool_result; the Read result is message 4's."""
    return [
        user_text("The tests fail, please fix them."),
        tool_use("toolu_01Bash", "Bash", {"command": "pytest -q"}, text="I'll run the tests first."),
        tool_result("toolu_01Bash", LOG, is_error=True),
        tool_use("toolu_02Read", "Read", {"file_path": "/repo/app.py"}),
        tool_result("toolu_02Read", READ),
        {"role": "assistant", "content": [{"type": "text", "text": "compute() returns 2 where 3 is expected."}]},
        user_text(LAST_TEXT),
    ]


LOG_AT = ("messages", 2, "content", 0, "content")  # where the log sits in claude_conversation()


def claude_edit_conversation() -> list[dict]:
    """A read of /repo/app.py, an edit of it, a fresh read, and a test run whose result shares the
    last user message with the user's text, as Claude Code sends it. max replaces the first read
    (stale), never the fresh one; both modes reduce the log."""
    return [
        user_text("Fix compute() in /repo/app.py."),
        tool_use("toolu_11Read", "Read", {"file_path": "/repo/app.py"}),
        tool_result("toolu_11Read", READ),
        tool_use("toolu_12Edit", "Edit", {"file_path": "/repo/app.py", "old_string": "scale=0.1",
                                          "new_string": "scale=0.2"}, text="Changing the scale."),
        tool_result("toolu_12Edit", "The file /repo/app.py has been updated successfully."),
        tool_use("toolu_13Read", "Read", {"file_path": "/repo/app.py"}),
        tool_result("toolu_13Read", READ_AFTER_EDIT),
        tool_use("toolu_14Bash", "Bash", {"command": "pytest -q"}),
        {"role": "user", "content": [*tool_result("toolu_14Bash", LOG, is_error=True)["content"],
                                     {"type": "text", "text": LAST_TEXT}]},
    ]


FIRST_READ_AT = ("messages", 2, "content", 0, "content")
FRESH_READ_AT = ("messages", 6, "content", 0, "content")
EDIT_LOG_AT = ("messages", 8, "content", 0, "content")


def claude_edit_body(model: str) -> dict:
    return {"model": model, "max_tokens": 128, "system": SYSTEM, "tools": TOOLS,
            "messages": claude_edit_conversation()}


# ---------------------------------------------------------------- helpers

class Sent:
    """An httpx request hook keeping every body a client put on the wire, so comparisons are
    against what the SDK really sent, not what the test meant it to send."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request) -> None:  # an httpx or httpx2 Request
        self.bodies.append(request.read())

    @property
    def last(self) -> dict:
        return json.loads(self.bodies[-1])


def http_client(gateway, user: str | None, sent: Sent | None = None, flavour=httpx) -> httpx.Client:
    """A client through the gateway as `user`, trusting its CA. `flavour`: httpx, or the httpx2 the
    installed SDKs insist on (see sdk_http_client)."""
    return flavour.Client(proxy=gateway.proxy_url(user), verify=trust(gateway.bundle), trust_env=False,
                          timeout=30, event_hooks={"request": [sent]} if sent else None)


def sdk_http_client(sdk, gateway, user: str | None, sent: Sent):
    """http_client in the httpx flavour `sdk` (the anthropic or openai module) accepts: recent
    releases of both run on httpx2 and refuse an httpx.Client."""
    base = importlib.import_module(f"{sdk.__name__}._base_client")
    return http_client(gateway, user, sent, flavour=getattr(base, "httpx2", None) or base.httpx)


def received(fake, model: str) -> dict:
    """The fake's log entry of the (single) request for `model`; each test uses its own model names."""
    return fake.wait_for(lambda e: e.get("model") == model and e.get("outcome") is not None)


def journal_entry(gateway, model: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = httpx.get(f"http://127.0.0.1:{gateway.port}/requests?after=0", timeout=5, trust_env=False).json()
        for entry in page["requests"]:
            if entry["model"] == model:
                return entry
        time.sleep(0.05)
    raise TimeoutError(f"no journal entry for {model}")


def differences(a, b, path: tuple = ()) -> list[tuple]:
    """The JSON paths at which `b` differs from `a`: values, types (1 vs 1.0 vs True), key order."""
    if type(a) is not type(b):
        return [path]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [path]
        return [d for key in a for d in differences(a[key], b[key], (*path, key))]
    if isinstance(a, list):
        if len(a) != len(b):
            return [path]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, (*path, i))]
    return [] if a == b else [path]


def at(body, path: tuple):
    for key in path:
        body = body[key]
    return body


def assert_log_reduced(original: str, compressed: str) -> None:
    """Shorter by far, says what it cut, and keeps every failing test, error line and the summary."""
    assert len(compressed) < len(original) / 2, (len(original), len(compressed))
    assert MARKER in compressed
    kept = set(compressed.split("\n"))
    must = [line for line in original.split("\n") if "FAILED" in line or "Error" in line or " passed in " in line]
    assert len(must) >= 5
    assert [line for line in must if line not in kept] == []


def assert_unchanged_bytes(entry: dict, raw: bytes) -> None:
    """The fake got the agent's body as it was: same size on the wire, same JSON, same key order."""
    assert entry["status"] == 200
    assert entry["body_bytes"] == len(raw)
    assert differences(json.loads(raw), entry["request_json"]) == []


def anthropic_client(gateway, user: str, sent: Sent) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url="https://api.anthropic.com", api_key=KEYS["anthropic"], max_retries=0,
                               http_client=sdk_http_client(anthropic, gateway, user, sent))


def post(gateway, user: str | None, url: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    with http_client(gateway, user) as client:
        return client.post(url, content=raw, headers={"content-type": "application/json", **headers})


def post_anthropic(gateway, user: str, body: dict) -> tuple[httpx.Response, bytes]:
    """A Messages request as raw bytes (so the exact bytes sent are known)."""
    raw = json.dumps(body, ensure_ascii=False).encode()
    response = post(gateway, user, "https://api.anthropic.com/v1/messages", raw,
                    {"x-api-key": KEYS["anthropic"], "anthropic-version": "2023-06-01"})
    return response, raw


def responses_body(model: str, output: str) -> dict:
    """Codex's Responses request after one shell call: the task, the call, its output."""
    return {
        "model": model, "instructions": "You are Codex, a coding agent.", "stream": True, "store": False,
        "tools": [{"type": "function", "name": "shell", "description": "Runs a shell command",
                   "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}}],
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the tests."}]},
            {"type": "function_call", "name": "shell", "call_id": "call_codex_1",
             "arguments": '{"command":["bash","-lc","pytest -q"]}'},
            {"type": "function_call_output", "call_id": "call_codex_1", "output": output},
        ],
    }


def post_responses(gateway, user: str, raw: bytes, encoding: str = "identity") -> httpx.Response:
    headers = {"authorization": f"Bearer {KEYS['openai']}"}
    if encoding == "gzip":
        raw, headers = gzip.compress(raw), {**headers, "content-encoding": "gzip"}
    return post(gateway, user, "https://api.openai.com/v1/responses", raw, headers)


# ---------------------------------------------------------------- 1. Claude Code through the Anthropic SDK

@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_anthropic_sdk_log_is_reduced_and_the_rest_arrives_byte_identical(gateway, fake, stream):
    model = f"compress/claude-{'stream' if stream else 'plain'}"
    sent = Sent()
    messages = claude_conversation()
    with anthropic_client(gateway, "xx-claude.s-c1", sent) as client:
        reply = client.messages.create(model=model, max_tokens=256, system=SYSTEM, tools=TOOLS,
                                       messages=messages, stream=stream)
        if stream:
            text = "".join(e.delta.text for e in reply
                           if e.type == "content_block_delta" and e.delta.type == "text_delta")
        else:
            text = reply.content[0].text
    assert text == "pong from the fake upstream"

    original = sent.last
    assert original["messages"] == messages and original["stream"] is stream  # the SDK sent what we meant
    got = received(fake, model)["request_json"]
    assert differences(original, got) == [LOG_AT]  # system, tools, assistant turns, Read, ids, last text intact
    assert_log_reduced(LOG, at(got, LOG_AT))
    assert at(got, ("messages", 4, "content", 0, "content")) == READ
    assert got["messages"][-1]["content"][0]["text"] == LAST_TEXT

    entry = journal_entry(gateway, model)
    assert entry["compression"] == "cache_safe" and entry["status"] == 200
    assert entry["tokens_before"] > entry["tokens_after"] > 0


def test_anthropic_sdk_stream_helper_is_served_compressed(gateway, fake):
    """`messages.stream()`, as most SDK users stream: the compressed body is still a valid request."""
    model = "compress/claude-helper"
    sent = Sent()
    with anthropic_client(gateway, "xx-claude.s-c2", sent) as client, client.messages.stream(
            model=model, max_tokens=256, system=SYSTEM, tools=TOOLS, messages=claude_conversation()) as stream:
        assert "".join(stream.text_stream) == "pong from the fake upstream"
        assert stream.get_final_message().stop_reason == "end_turn"
    assert differences(sent.last, received(fake, model)["request_json"]) == [LOG_AT]


# ---------------------------------------------------------------- 2. OpenAI chat: tool calls and text actions

def openai_client(gateway, user: str | None, sent: Sent) -> openai.OpenAI:
    return openai.OpenAI(base_url="https://api.openai.com/v1", api_key=KEYS["openai"], max_retries=0,
                         http_client=sdk_http_client(openai, gateway, user, sent))


CHAT_TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]


def test_openai_chat_tool_message_is_reduced(gateway, fake):
    """OpenCode-style chat: the `role: tool` answer to a bash call is the only thing that changes."""
    model = "compress/chat-tools"
    sent = Sent()
    messages = [
        {"role": "system", "content": "You are a coding agent working in /repo."},
        {"role": "user", "content": "Make the test suite pass."},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_pytest_1", "type": "function",
            "function": {"name": "bash", "arguments": json.dumps({"command": "pytest -q"})}}]},
        {"role": "tool", "tool_call_id": "call_pytest_1", "content": LOG},
    ]
    with openai_client(gateway, "xx-opencode.s-o1", sent) as client:
        completion = client.chat.completions.create(model=model, messages=messages, tools=CHAT_TOOLS)
    assert completion.choices[0].message.content == "pong from the fake upstream"
    got = received(fake, model)["request_json"]
    assert differences(sent.last, got) == [("messages", 3, "content")]
    assert_log_reduced(LOG, got["messages"][3]["content"])
    assert journal_entry(gateway, model)["compression"] == "cache_safe"


def test_text_action_observation_is_reduced_and_the_task_is_not(gateway, fake):
    """mini-SWE-agent: the command is a fenced block in the assistant's text, its output the next user
    message. The task (the first user message) holds a pasted CI log too: user-authored, so kept."""
    model = "compress/chat-text-action"
    sent = Sent()
    task = f"Fix the failing tests. CI said:\n\n{LOG}"
    observation = f"<returncode>1</returncode>\n<output>\n{LOG}\n</output>"
    messages = [
        {"role": "system", "content": "You are a helpful assistant that can interact with a computer shell."},
        {"role": "user", "content": task},
        {"role": "assistant", "content": "THOUGHT: let me reproduce the failure.\n\n```bash\npytest\n```"},
        {"role": "user", "content": observation},
    ]
    with openai_client(gateway, None, sent) as client:  # mini-SWE-agent names no xx identity
        stream = client.chat.completions.create(model=model, messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "pong from the fake upstream"
    got = received(fake, model)["request_json"]
    assert differences(sent.last, got) == [("messages", 3, "content")]
    assert got["messages"][1]["content"] == task
    reduced = got["messages"][3]["content"]
    assert_log_reduced(observation, reduced)
    assert reduced.startswith("<returncode>1</returncode>\n<output>\n") and reduced.endswith("\n</output>")


# ---------------------------------------------------------------- 3. Codex: the Responses API

@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_responses_function_call_output_is_reduced(gateway, fake, encoding):
    """Codex's shape, streamed. A gzip body is decoded, compressed and sent on as plain JSON."""
    model = f"compress/responses-{encoding}"
    output = f"Exit code: 1\nWall time: 3.4 seconds\nOutput:\n{LOG}"
    body = responses_body(model, output)
    response = post_responses(gateway, "xx-codex.s-x", json.dumps(body).encode(), encoding)
    assert response.status_code == 200 and "response.completed" in response.text
    entry = received(fake, model)
    assert "content-encoding" not in entry["headers"]
    got = entry["request_json"]
    assert differences(body, got) == [("input", 2, "output")]
    assert_log_reduced(output, got["input"][2]["output"])
    assert journal_entry(gateway, model)["compression"] == "cache_safe"


# ---------------------------------------------------------------- 4. prefix stability

def test_each_turn_is_the_previous_one_plus_the_new_turn(gateway, fake):
    """cache_safe: what an output becomes never depends on later messages, so the messages sent
    upstream on turn t are a byte prefix of those of turn t+1 and the provider's cache keeps matching.
    Turn t+1 reruns the same command: max would now rewrite the earlier log (superseded), cache_safe
    must not."""
    history = claude_conversation()[:3]
    turn = [*history, tool_use("toolu_03Bash", "Bash", {"command": "pytest -q"}, text="Rerunning after the fix."),
            tool_result("toolu_03Bash", [{"type": "text", "text": LOG_AFTER_FIX}], is_error=True)]
    sent = Sent()
    with anthropic_client(gateway, "xx-claude.s-prefix", sent) as client:
        for n, messages in enumerate((history, turn)):
            client.messages.create(model=f"compress/prefix-{n}", max_tokens=64, system=SYSTEM, tools=TOOLS,
                                   messages=messages)
    first = received(fake, "compress/prefix-0")["request_json"]
    second = received(fake, "compress/prefix-1")["request_json"]
    assert MARKER in at(first, LOG_AT)  # the earlier log was compressed, and stays so
    dumped = [[json.dumps(m, ensure_ascii=False) for m in body["messages"]] for body in (first, second)]
    assert dumped[1][:len(dumped[0])] == dumped[0]
    assert json.dumps(first["system"]) == json.dumps(second["system"])
    assert json.dumps(first["tools"]) == json.dumps(second["tools"])
    new_output = ("messages", 4, "content", 0, "content", 0, "text")
    assert differences(sent.last, second) == [LOG_AT, new_output]
    assert_log_reduced(LOG_AFTER_FIX, at(second, new_output))


# ---------------------------------------------------------------- 5. off

def test_off_sends_the_agents_bytes_even_where_rules_say_max(off_gateway, fake):
    """`--set clutch_compression=off` outranks the rules and Claude's max profile: the fake gets the
    very bytes the client sent, though the body has a long log and a stale read."""
    model = "compress/off"
    response, raw = post_anthropic(off_gateway, "xx-claude.s-off", claude_edit_body(model))
    assert response.status_code == 200
    assert_unchanged_bytes(received(fake, model), raw)
    assert journal_entry(off_gateway, model)["compression"] in (None, "off")


# ---------------------------------------------------------------- 6. max through a profile

def test_max_profile_replaces_a_read_made_stale_by_a_later_edit(max_gateway, fake):
    """Claude's profile says max: the read before the edit becomes a marker naming the file; the
    fresh read after it, the Edit call (its old_string) and everything else arrive as sent."""
    model = "compress/max-claude"
    body = claude_edit_body(model)
    response, _ = post_anthropic(max_gateway, "xx-claude.s-max1", body)
    assert response.status_code == 200
    got = received(fake, model)["request_json"]
    assert differences(body, got) == [FIRST_READ_AT, EDIT_LOG_AT]  # the Edit, the fresh read, the rest intact
    marker = at(got, FIRST_READ_AT)
    assert marker.startswith(MARKER) and "stale read of /repo/app.py" in marker
    assert at(got, FRESH_READ_AT) == READ_AFTER_EDIT
    assert_log_reduced(LOG, at(got, EDIT_LOG_AT))
    assert journal_entry(max_gateway, model)["compression"] == "max"


def test_other_agents_keep_the_rules_cache_safe_on_the_max_gateway(max_gateway, fake):
    """The same body from Qwen Code: no profile, so the rules' cache_safe, which never drops a read."""
    model = "compress/max-qwen"
    body = claude_edit_body(model)
    response, _ = post_anthropic(max_gateway, "xx-qwen.s-max1", body)
    assert response.status_code == 200
    got = received(fake, model)["request_json"]
    assert differences(body, got) == [EDIT_LOG_AT]  # the log only: both reads stay
    assert journal_entry(max_gateway, model)["compression"] == "cache_safe"


def test_a_launch_profile_outranks_the_agents(max_gateway, fake):
    """`xx cip1` launches Claude with profile 1, whose compression is off: claude's max does not apply."""
    model = "compress/launch-profile"
    response, raw = post_anthropic(max_gateway, "xx-cip1.s-lp", claude_edit_body(model))
    assert response.status_code == 200
    assert_unchanged_bytes(received(fake, model), raw)


def test_when_cold_rewrites_wait_until_the_cache_has_expired(max_gateway, fake):
    """`rewrites: when_cold` (cold_after_s: 1): while the session is warm a read made stale by a later
    edit stays, so each turn is the previous one plus the new turn; once the session has been idle
    past a second the read is replaced (one cache miss), and stays replaced on the next turns."""
    conversation = claude_edit_conversation()
    turns = [conversation[:3], conversation[:5], conversation[:7], conversation]  # read, edit, re-read, log

    def send(n: int) -> list[str]:
        response, _ = post_anthropic(max_gateway, "xx-claude.s-cold", {
            "model": f"compress/cold-{n}", "max_tokens": 64, "system": SYSTEM, "tools": TOOLS,
            "messages": turns[n]})
        assert response.status_code == 200
        return [json.dumps(m, ensure_ascii=False) for m in received(fake, f"compress/cold-{n}")["request_json"]
                ["messages"]]

    first, second = send(0), send(1)  # the first turn of a session is cold: nothing is stale yet
    assert second[:len(first)] == first
    assert json.loads(second[2])["content"][0]["content"] == READ  # stale now, but the cache is warm
    time.sleep(1.5)
    third, fourth = send(2), send(3)
    assert json.loads(third[2])["content"][0]["content"].startswith(f"{MARKER}stale read of /repo/app.py")
    assert fourth[:len(third)] == third


# ---------------------------------------------------------------- 7. Gemini, and a shape the compressor does not know

def test_a_messages_request_without_messages_passes_unchanged(gateway, fake):
    """An old-style `prompt` body on /v1/messages: nothing the compressor knows, so it goes as it came
    (and the provider, not Clutch, says what is wrong with it: Anthropic's "messages: Field required")."""
    model = "compress/no-messages"
    body = {"model": model, "max_tokens": 64, "prompt": f"\n\nHuman: what failed?\n{LOG}\n\nAssistant:"}
    response, raw = post_anthropic(gateway, "xx-claude.s-odd", body)
    assert response.status_code == 400 and "messages: Input should be a valid list" in response.text
    entry = received(fake, model)
    assert entry["body_bytes"] == len(raw) and differences(json.loads(raw), entry["request_json"]) == []


def test_a_gemini_function_response_is_reduced(gateway, fake):
    """Gemini's shape (Gemini CLI's run_shell_command): the log in the functionResponse is reduced, the
    rest of the request arrives as sent."""
    model = "compress-gemini-flash"
    body = {"contents": [
        {"role": "user", "parts": [{"text": "Run the tests."}]},
        {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {"command": "pytest -q"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": LOG}}}]},
    ]}
    response = post(gateway, "xx-antigravity.s-g",
                    f"https://generativelanguage.googleapis.com/v1beta/models/{model}:generateContent",
                    json.dumps(body).encode(), {"x-goog-api-key": KEYS["gemini"]})
    assert response.status_code == 200 and response.json()["candidates"]
    got = received(fake, model)["request_json"]
    assert differences(body, got) == [("contents", 2, "parts", 0, "functionResponse", "response", "output")]
    assert_log_reduced(LOG, got["contents"][2]["parts"][0]["functionResponse"]["response"]["output"])


# ---------------------------------------------------------------- start-up

def test_the_tokenizer_is_built_before_the_gateway_listens(gateway, fake):
    """Building the vocabulary holds the GIL (0.15-1 s): built in a thread once the gateway listened,
    it stalled the event loop under the first requests (bench/first_request.py). It is built before
    mitmproxy listens, so no request meets the build: the log says so, in that order."""
    log = gateway.output()
    assert log.index("tokenizer o200k_base ready in ") < log.index("HTTP(S) proxy listening at ")


# ---------------------------------------------------------------- 8. no secret leaks

def test_no_key_reaches_the_gateway_log_or_the_journal(gateway, max_gateway, off_gateway, fake):
    """Every gateway got a request with each key (the fake shows the keys were really sent); none of
    them is in a gateway's log or journal."""
    for n, process in enumerate((gateway, max_gateway, off_gateway)):
        model = f"compress/leak-{n}"
        assert post_anthropic(process, "xx-claude.s-leak", claude_edit_body(model))[0].status_code == 200
        assert received(fake, model)["headers"]["x-api-key"] == KEYS["anthropic"]
    with openai_client(gateway, "xx-codex.s-leak", Sent()) as client:
        client.chat.completions.create(model="compress/leak-openai", messages=[{"role": "user", "content": "hi"}])
    assert received(fake, "compress/leak-openai")["headers"]["authorization"] == f"Bearer {KEYS['openai']}"
    post(gateway, "xx-antigravity.s-leak",
         "https://generativelanguage.googleapis.com/v1beta/models/compress-leak:generateContent",
         json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).encode(),
         {"x-goog-api-key": KEYS["gemini"]})
    assert received(fake, "compress-leak")["headers"]["x-goog-api-key"] == KEYS["gemini"]
    for process in (gateway, max_gateway, off_gateway):
        journal = httpx.get(f"http://127.0.0.1:{process.port}/requests?after=0", timeout=5, trust_env=False).text
        for where, text in (("log", process.output()), ("journal", journal)):
            leaked = [name for name, key in KEYS.items() if key in text]
            assert leaked == [], f"{where} of {process.workdir.name}"


# ---------------------------------------------------------------- bugs found while writing these tests

def test_the_rules_can_say_off_as_documented(tmp_path_factory, fake, pki):
    """docs/rules.md and rules/example.yaml spell the modes `off | cache_safe | max`, unquoted as YAML is
    written; `compression: {mode: off}` must turn compression off, not stop the gateway."""
    rules = RULES.replace("compression: {mode: cache_safe}", "compression: {mode: off}")
    process = _start(tmp_path_factory, fake, pki, "compress-yaml-off", rules)
    try:
        assert "invalid rules" not in process.output()
        model = "compress/yaml-off"
        response, raw = post_anthropic(process, "xx-claude.s-yaml", claude_edit_body(model))
        assert response.status_code == 200
        assert_unchanged_bytes(received(fake, model), raw)
    finally:
        process.stop()


def test_a_lone_surrogate_does_not_corrupt_a_gzip_request(gateway, fake):
    """JSON may carry a lone surrogate escape (`\\ud83d`): JavaScript agents write one when they cut a
    tool output inside an emoji. The compressor must send such a request compressed or as it came,
    never the agent's gzip bytes without their content-encoding. (The fake cannot log a body holding
    a lone surrogate and answers 500 (tests/fake_upstream.py writes its log as UTF-8), so the
    test asks only that no provider was sent undecodable bytes and that compression did not crash.)"""
    model = "compress/lone-surrogate"
    output = f"Exit code: 1\nOutput:\n{LOG}\nlast line cut inside an emoji: \ud83d"
    raw = json.dumps(responses_body(model, output)).encode()  # ASCII: the surrogate travels as \ud83d
    assert b"\\ud83d" in raw
    before = len(fake.entries())
    response = post_responses(gateway, "xx-codex.s-surrogate", raw, "gzip")
    assert "could not parse the JSON body" not in response.text
    assert [e["status"] for e in fake.entries()[before:] if e["status"] == 400] == []
    assert "surrogates not allowed" not in gateway.output()
