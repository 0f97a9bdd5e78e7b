"""Finding the tool outputs of a request in each dialect: which call made each, where its text is,
and whether it is a file read (never shrunk)."""

from __future__ import annotations

import json

import pytest

from addons.wire.dialects import Dialect
from addons.compression.tool_outputs import find_outputs


def test_anthropic_results_are_paired_with_their_calls_and_reads_are_known():
    body = {"messages": [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/r/a.py", "offset": 10}},
            {"type": "tool_use", "id": "t2", "name": "Bash", "input": {"command": "pytest -q"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "1→x"},
                                     {"type": "tool_result", "tool_use_id": "t2",
                                      "content": [{"type": "text", "text": "1 passed"}]},
                                     {"type": "text", "text": "thanks"}]}]}
    read, run = find_outputs(Dialect.ANTHROPIC, body)
    assert (read.id, read.tool, read.read_of, read.read_key) == ("t1", "read", "/r/a.py", '{"offset": 10}')
    assert read.path == ("messages", 1, "content", 0, "content")
    assert (run.id, run.command, run.read_of, run.text) == ("t2", "pytest -q", None, "1 passed")
    assert run.path == ("messages", 1, "content", 1, "content", 0, "text")


def test_an_output_with_an_image_or_several_parts_is_left_alone():
    body = {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]}]}]}
    assert find_outputs(Dialect.ANTHROPIC, body) == []


def test_codex_shell_reads_are_reads():
    body = {"input": [{"type": "function_call", "call_id": "c1", "name": "shell",
                       "arguments": json.dumps({"command": ["bash", "-lc", "sed -n '1,40p' src/app.rs"]})},
                      {"type": "function_call_output", "call_id": "c1", "output": "fn main() {}"}]}
    (output,) = find_outputs(Dialect.OPENAI_RESPONSES, body)
    assert (output.command, output.read_of, output.path) == ("sed -n '1,40p' src/app.rs", "src/app.rs",
                                                             ("input", 1, "output"))


def test_observations_take_the_command_of_the_last_fenced_block():
    body = {"messages": [{"role": "user", "content": "task"},
                         {"role": "assistant", "content": "THOUGHT: look\n```bash\nls\n```\nor\n```bash\ncat a.py\n```"},
                         {"role": "user", "content": "<returncode>0</returncode>\n<output>\nx = 1\n</output>"}]}
    (output,) = find_outputs(Dialect.OPENAI_CHAT, body)
    assert (output.id, output.command, output.read_of) == ("obs@2", "cat a.py", "a.py")


@pytest.mark.parametrize("dialect, body", [(Dialect.ANTHROPIC, {"messages": "x"}), (Dialect.GEMINI, {"contents": {}}),
                                           (Dialect.OPENAI_RESPONSES, {"input": "just text"})])
def test_unreadable_shapes_have_no_outputs_to_find(dialect, body):
    assert find_outputs(dialect, body) is None
