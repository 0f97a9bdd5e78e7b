"""An output's identity is its place in the body, not its tool-call id: real trajectories reuse ids
(SWE-agent repeats one id across many calls), and a reused id must never make one output stand for
another, in any of the shapes, in cache_safe or in max."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from mustkeep import check

from addons.compression.history import RewriteGate
from addons.compression.policy import Mode, Settings, compress_request
from addons.compression.tool_outputs import find_outputs
from addons.wire.dialects import Dialect

LOG = "\n".join(["collected 400 items"] + [f"tests/test_m.py::test_{i} PASSED" for i in range(400)]
                + ["FAILED tests/test_m.py::test_bad - AssertionError: 1 != 2", "==== 1 failed, 400 passed in 2.0s ===="])
# SWE-agent's session, every call with the same id: the newest `python reproduce.py` and `ls -F` are the
# ones the agent needs; the first run is superseded by the second, which repeats it word for word.
RUNS = [("python reproduce.py", LOG), ("ls -F", "reproduce.py\nsetup.py\nsrc/"),
        ("python reproduce.py", LOG), ("ls -F", "reproduce.py\nsetup.py\nsrc/\ntests/")]
SUPERSEDED = re.compile(r"\[clutch: superseded output of `([^`]*)`")
SAME = re.compile(r"\[clutch: same output as tool call (\S+) \((message|input item) (\d+), `([^`]*)`\) above;")


def anthropic(runs: list[tuple[str, str]]) -> dict[str, Any]:
    messages: list[dict] = [{"role": "user", "content": "fix the bug"}]
    for command, output in runs:
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": "bash",
                                                        "input": {"command": command}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": output}]}]
    return {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": messages}


def chat(runs: list[tuple[str, str]]) -> dict[str, Any]:
    messages: list[dict] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "fix the bug"}]
    for command, output in runs:
        messages += [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_0", "type": "function",
                      "function": {"name": "bash", "arguments": json.dumps({"command": command})}}]},
                     {"role": "tool", "tool_call_id": "call_0", "content": output}]
    return {"model": "m", "messages": messages}


def responses(runs: list[tuple[str, str]]) -> dict[str, Any]:
    items: list[dict] = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]}]
    for command, output in runs:
        items += [{"type": "function_call", "call_id": "call_0", "name": "shell",
                   "arguments": json.dumps({"command": ["bash", "-lc", command]})},
                  {"type": "function_call_output", "call_id": "call_0", "output": output}]
    return {"model": "gpt-5-codex", "instructions": "be brief", "input": items}


def observations(runs: list[tuple[str, str]]) -> dict[str, Any]:
    """SWE-agent acting through text: its observations' ids are their places (obs@<index>) already."""
    messages: list[dict] = [{"role": "system", "content": "sys"}, {"role": "user", "content": "fix the bug"}]
    for command, output in runs:
        messages += [{"role": "assistant", "content": f"Let me run it.\n```bash\n{command}\n```"},
                     {"role": "user", "content": f"{output}\n(Open file: n/a)\n(Current directory: /repo)\nbash-$"}]
    return {"model": "m", "messages": messages}


SHAPES = {"anthropic": (anthropic, Dialect.ANTHROPIC, "anthropic"), "chat": (chat, Dialect.OPENAI_CHAT, "openai"),
          "responses": (responses, Dialect.OPENAI_RESPONSES, None),
          "observations": (observations, Dialect.OPENAI_CHAT, "openai")}


def text_at(body: Any, path: tuple) -> str:
    for key in path:
        body = body[key]
    return body


def compressed_outputs(shape: str, mode: Mode, runs=RUNS) -> list[tuple[str, str, str]]:
    """(command, original, compressed) of every output; the strict must-keep checker passes where it reads the shape."""
    build, dialect, fmt = SHAPES[shape]
    body = build(runs)
    out = compress_request(dialect, body, Settings(mode=mode)).body
    if fmt is not None:
        report = check(fmt, body, out)
        assert report.ok, [f"{f.check} {f.where}: {f.detail}" for f in report.findings]
    return [(o.command, o.text, text_at(out, o.path)) for o in find_outputs(dialect, body) or []]


@pytest.mark.parametrize("shape", SHAPES)
def test_in_max_a_reused_id_never_gives_an_output_another_outputs_verdict(shape):
    outputs = compressed_outputs(shape, Mode.MAX)
    assert [command for command, _, _ in outputs] == [command for command, _ in RUNS]
    first, listing, newest, newest_listing = outputs
    assert SUPERSEDED.match(first[2]).group(1) == "python reproduce.py"  # run again later: replaced
    assert "FAILED tests/test_m.py::test_bad" in first[2]
    for _, before, after in (listing, newest, newest_listing):
        assert "superseded" not in after and len(after) <= len(before)
    assert listing[2] == listing[1] and newest_listing[2] == newest_listing[1]  # too short to replace
    assert "FAILED tests/test_m.py::test_bad" in newest[2] and "[clutch: " in newest[2]  # shrunk, the newest run


@pytest.mark.parametrize("shape", SHAPES)
def test_a_repeat_names_which_earlier_output_it_repeats_when_ids_are_reused(shape):
    outputs = compressed_outputs(shape, Mode.CACHE_SAFE)
    reference = outputs[2][2]
    if shape == "observations":  # ids unique: the id alone says which
        assert reference.startswith("[clutch: same output as tool call obs@3 above;")
        return
    match = SAME.match(reference)
    assert match, reference
    assert match.group(1) == "call_0" and int(match.group(3)) == {"anthropic": 2, "chat": 3, "responses": 2}[shape]
    assert match.group(4) == "python reproduce.py"


def test_a_unique_id_keeps_the_short_reference():
    runs = [("python reproduce.py", LOG), ("python reproduce.py", LOG)]
    body = anthropic(runs)
    body["messages"][3]["content"][0]["id"] = body["messages"][4]["content"][0]["tool_use_id"] = "call_1"
    out = compress_request(Dialect.ANTHROPIC, body, Settings(mode=Mode.CACHE_SAFE)).body
    assert out["messages"][4]["content"][0]["content"].startswith("[clutch: same output as tool call call_0 above;")


@pytest.mark.parametrize("shape", ["anthropic", "chat", "responses"])
def test_cache_safe_with_reused_ids_compresses_each_output_the_same_on_every_later_turn(shape):
    build, dialect, _ = SHAPES[shape]
    key = "input" if dialect is Dialect.OPENAI_RESPONSES else "messages"
    previous = None
    for turn in range(1, len(RUNS) + 1):
        out = compress_request(dialect, build(RUNS[:turn]), Settings(mode=Mode.CACHE_SAFE)).body
        if previous is not None:
            assert out[key][:len(previous[key])] == previous[key]
        previous = out


def test_a_failed_call_does_not_excuse_another_call_with_its_id():
    """A failed Edit changes nothing, so the read before it stays; an Edit that worked, with the same
    id, makes the read before it stale."""
    read = "\n".join(f"{i:6}→x = {i}" for i in range(300))
    messages: list[dict] = [{"role": "user", "content": "fix it"}]
    for tool, call, result, failed in [("Read", {"file_path": "/r/a.py"}, read, False),
                                       ("Edit", {"file_path": "/r/a.py", "old_string": "x", "new_string": "y"}, "ok", False),
                                       ("Edit", {"file_path": "/r/a.py", "old_string": "q", "new_string": "y"},
                                        "String to replace not found", True)]:
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": "call_0", "name": tool, "input": call}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0", "content": result,
                                                   **({"is_error": True} if failed else {})}]}]
    body = {"model": "m", "max_tokens": 1, "messages": messages}
    out = compress_request(Dialect.ANTHROPIC, body, Settings(mode=Mode.MAX))
    assert out.body["messages"][2]["content"][0]["content"].startswith("[clutch: stale read of /r/a.py:")
    assert check("anthropic", body, out.body).ok


def test_the_rewrite_gate_remembers_positions_not_ids():
    """What a session replaced stays replaced; an output at another place with the same id is not
    thereby replaced while the cache is warm."""
    gate = RewriteGate("when_cold", 300, clock=lambda: 0.0)
    first = anthropic(RUNS[:3])
    assert compress_request(Dialect.ANTHROPIC, first, Settings(mode=Mode.MAX), gate).rewrites == ["call_0"]
    later = anthropic([*RUNS, ("python reproduce.py", LOG + "\nmore")])  # warm: only the first run stays replaced
    body = compress_request(Dialect.ANTHROPIC, later, Settings(mode=Mode.MAX), gate).body
    assert SUPERSEDED.match(body["messages"][2]["content"][0]["content"])
    assert "superseded" not in body["messages"][6]["content"][0]["content"]
