"""Compression of whole requests: what may change, in every dialect, checked over the dev corpus
with the must-keep checker (mustkeep.py) and for prefix stability across the turns of a session."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from harness import ROOT, SHARED, corpus_files, deepest_per_session, session_turns
from mustkeep import check, prefix_stable, tool_outputs

from addons.compression.history import RewriteGate
from addons.compression.policy import Mode, Settings, compress_request
from addons.wire.dialects import Dialect
from addons.wire.tokens import count_text

SAFE, MAX = Settings(mode=Mode.CACHE_SAFE), Settings(mode=Mode.MAX)
LOG = "\n".join(["collected 400 items"] + [f"tests/test_m.py::test_{i} PASSED" for i in range(400)]
                + ["FAILED tests/test_m.py::test_bad - AssertionError: 1 != 2", "==== 1 failed, 400 passed in 2.0s ===="])


def dialect(record: dict) -> Dialect:
    return Dialect.ANTHROPIC if record["format"] == "anthropic" else Dialect.OPENAI_CHAT


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    """The dev corpus, each record's id (its file name) in meta.id."""
    records = []
    for path in corpus_files("*.json"):
        record = json.loads(path.read_text())
        record["meta"]["id"] = path.stem
        records.append(record)
    return records


@pytest.mark.parametrize("settings", [Settings(mode=mode) for mode in Mode], ids=[mode.value for mode in Mode])
def test_every_corpus_request_passes_the_must_keep_checks(corpus, settings):
    """The strict checker (every output judged by its place, every marker against the text it replaced)
    finds no loss in any request, in any mode: 45 bodies, 1,727 outputs in the dev corpus."""
    failures, cut, checked = [], 0, 0
    for record in corpus:
        original = copy.deepcopy(record["body"])
        outcome = compress_request(dialect(record), record["body"], settings)
        assert record["body"] == original, "the agent's body must not be modified in place"
        report = check(record["format"], record["body"], outcome.body)
        failures += [f"{record['meta'].get('id')}: {f.check} {f.where}: {f.detail}" for f in report.findings]
        cut += len(outcome.cuts)
        checked += len(tool_outputs(record["format"], record["body"]))
    assert not failures, "\n".join(failures[:20])
    assert checked > 1000
    # the corpus has long logs and repeats: a compressor that cuts nothing proves nothing
    assert cut > 40 if settings.mode is not Mode.OFF else cut == 0


def test_cache_safe_never_rewrites_and_max_does_only_for_history(corpus):
    for record in corpus:
        assert compress_request(dialect(record), record["body"], SAFE).rewrites == []
    kinds = {c.kind for r in corpus for c in compress_request(dialect(r), r["body"], MAX).cuts}
    assert {"stale_read", "write_echo", "shrunk"} <= kinds


def test_cache_safe_output_at_turn_t_is_a_byte_prefix_of_turn_t_plus_1_over_whole_sessions(corpus):
    checked, max_rewrites = 0, 0
    for record in deepest_per_session(corpus):
        previous = previous_max = None
        for body in session_turns(record)[-40:]:
            out = compress_request(dialect(record), body, SAFE).body
            out_max = compress_request(dialect(record), body, MAX).body
            if previous is not None:
                ok, where = prefix_stable(previous, out)
                assert ok, f"{record['meta']['id']}: turn of {len(body['messages'])} messages rewrites message {where}"
                checked += 1
                max_rewrites += not prefix_stable(previous_max, out_max)[0]
            previous, previous_max = out, out_max
    assert checked > 300
    assert max_rewrites >= 5  # max trades cache hits for tokens, and the check sees it


def test_the_corpus_pairs_are_prefix_stable_in_cache_safe(corpus):
    by_id = {r["meta"]["id"]: r for r in corpus}
    pairs = [(by_id[r["meta"]["pair_of"]], r) for r in corpus if r["meta"].get("pair_of") in by_id]
    assert len(pairs) >= 10
    for first, second in pairs:
        a, b = (compress_request(dialect(first), r["body"], SAFE).body for r in (first, second))
        assert prefix_stable(a, b)[0], first["meta"]["id"]


def test_compression_is_deterministic_across_processes(corpus):
    script = ("import json,sys; from harness import corpus_files; from addons.compression.policy import *; "
              "from addons.wire.dialects import Dialect\n"
              "for p in corpus_files('*.json'):\n"
              "    r = json.loads(p.read_text()); d = Dialect.ANTHROPIC if r['format'] == 'anthropic' else Dialect.OPENAI_CHAT\n"
              "    for m in (Mode.CACHE_SAFE, Mode.MAX):\n"
              "        sys.stdout.write(json.dumps(compress_request(d, r['body'], Settings(mode=m)).body) + '\\n')\n")
    runs = [subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PYTHONHASHSEED": seed, "PATH": "/usr/bin",
                                "CLUTCH_SHARED": str(SHARED)}).stdout
            for seed in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].count("\n") == 2 * len(corpus)


# ---------------------------------------------------------------- the shapes, one by one

def anthropic_body(result: str, tool: str = "Bash", call: dict | None = None) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
            "tools": [{"name": tool, "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "run the tests"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": tool,
                                                            "input": call or {"command": "pytest"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result},
                                                      {"type": "text", "text": "why did it fail?"}]}]}


def test_an_anthropic_tool_result_is_shrunk_and_nothing_else_changes():
    body = anthropic_body(LOG)
    out = compress_request(Dialect.ANTHROPIC, body, SAFE)
    result = out.body["messages"][2]["content"][0]["content"]
    assert len(result) < len(LOG) / 4 and "FAILED tests/test_m.py::test_bad" in result and "[clutch: " in result
    for key in ("model", "system", "tools", "max_tokens"):
        assert out.body[key] == body[key]
    assert out.body["messages"][:2] == body["messages"][:2]
    assert out.body["messages"][2]["content"][1] == {"type": "text", "text": "why did it fail?"}
    assert out.tokens_saved > 1000 and [c.kind for c in out.cuts] == ["shrunk"]


def test_the_shrink_cache_keeps_no_agent_output_alive():
    """Shrunk outputs are remembered by their original's length and hash: a key holding the original
    kept every long output of every request alive, outside the cache's size bound. An output left
    as it was is remembered as None; a second request gets the same answer from the cache."""
    from addons.compression import policy
    policy._shrunk.clear()
    long_log, short = LOG + "\n# run 2", "3 passed in 0.1s"
    first = compress_request(Dialect.ANTHROPIC, anthropic_body(long_log), SAFE)
    assert compress_request(Dialect.ANTHROPIC, anthropic_body(short), SAFE).tokens_saved == 0
    assert not [part for key in policy._shrunk for part in key if isinstance(part, str)]
    assert sorted(value is None for value in policy._shrunk.values()) == [False, True]
    again = compress_request(Dialect.ANTHROPIC, anthropic_body(long_log), SAFE)
    assert again.body == first.body and again.tokens_saved == first.tokens_saved > 1000


def test_a_file_read_is_never_shrunk_even_when_long():
    source = "\n".join(f"    {i}→raise ValueError('error {i}')" for i in range(2000))
    body = anthropic_body(source, "Read", {"file_path": "/repo/app.py"})
    assert compress_request(Dialect.ANTHROPIC, body, SAFE).body is body


def read_then_edit(edit_result: str, is_error: bool = False) -> dict:
    """A Read of /repo/app.py, then an Edit of it with the given result."""
    body = anthropic_body("1→x = 1\n" * 300, "Read", {"file_path": "/repo/app.py"})
    result = {"type": "tool_result", "tool_use_id": "toolu_2", "content": edit_result, **({"is_error": True} if is_error else {})}
    body["messages"] += [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Edit",
                                                             "input": {"file_path": "/repo/app.py", "old_string": "x = 1",
                                                                       "new_string": "x = 2"}}]},
                         {"role": "user", "content": [result]}]
    return body


def test_a_read_later_edited_becomes_a_stale_marker_in_max_only():
    body = read_then_edit("ok")
    assert compress_request(Dialect.ANTHROPIC, body, SAFE).body is body
    out = compress_request(Dialect.ANTHROPIC, body, MAX)
    marker = out.body["messages"][2]["content"][0]["content"]
    assert marker.startswith("[clutch: stale read of /repo/app.py: the file was changed after this read; 301 lines")
    assert out.rewrites == ["toolu_1"]


def test_when_cold_replaces_only_once_the_cache_has_expired_and_then_keeps_it_replaced():
    now = [0.0]
    gate = RewriteGate("when_cold", 300, clock=lambda: now[0])
    edited = read_then_edit("ok")
    before_the_edit = {**edited, "messages": edited["messages"][:3]}
    assert compress_request(Dialect.ANTHROPIC, before_the_edit, MAX, gate).rewrites == []  # the session starts
    now[0] = 10
    warm = compress_request(Dialect.ANTHROPIC, edited, MAX, gate)
    assert warm.body is edited and warm.rewrites == []  # the provider still caches the read
    now[0] = 400
    assert compress_request(Dialect.ANTHROPIC, edited, MAX, gate).rewrites == ["toolu_1"]
    now[0] = 410
    assert compress_request(Dialect.ANTHROPIC, edited, MAX, gate).rewrites == ["toolu_1"]  # stays replaced


def test_when_worth_it_replaces_while_warm_only_what_pays_for_the_cache_miss():
    edited = read_then_edit("ok")  # the stale read is most of the prompt after it: worth it
    gate = RewriteGate("when_worth_it", 300, clock=lambda: 0.0)
    compress_request(Dialect.ANTHROPIC, {**edited, "messages": edited["messages"][:3]}, MAX, gate)
    assert compress_request(Dialect.ANTHROPIC, edited, MAX, gate).rewrites == ["toolu_1"]
    long_tail = read_then_edit("ok")
    long_tail["messages"] += [{"role": "assistant", "content": [{"type": "text", "text": "word " * 20_000}]},
                              {"role": "user", "content": "go on"}]
    gate = RewriteGate("when_worth_it", 300, clock=lambda: 0.0)
    compress_request(Dialect.ANTHROPIC, {**long_tail, "messages": long_tail["messages"][:3]}, MAX, gate)
    assert compress_request(Dialect.ANTHROPIC, long_tail, MAX, gate).rewrites == []  # re-billing 20k for 2k


def test_a_repeated_output_becomes_a_reference_to_the_first():
    body = anthropic_body(LOG)
    body["messages"] += [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Bash",
                                                             "input": {"command": "pytest -x"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": LOG}]}]
    out = compress_request(Dialect.ANTHROPIC, body, SAFE)
    assert out.body["messages"][4]["content"][0]["content"].startswith("[clutch: same output as tool call toolu_1 above;")


def test_claude_codes_write_echo_is_dropped_only_when_it_is_the_written_content():
    content = "".join(f"line {i}\n" for i in range(200))
    listing = "".join(f"{i + 1:6}→line {i}\n" for i in range(200))
    echo = ("The file /repo/a.txt has been updated. Here's the result of running `cat -n` on a snippet of the "
            "edited file:\n" + listing)
    body = anthropic_body(echo, "Write", {"file_path": "/repo/a.txt", "content": content})
    out = compress_request(Dialect.ANTHROPIC, body, SAFE)
    assert out.body["messages"][2]["content"][0]["content"] == (
        f"The file /repo/a.txt has been updated.\n[clutch: listing of the written file removed (200 lines, "
        f"{count_text(listing):,} tokens); it is the content of this Write call]")
    body["messages"][1]["content"][0]["input"]["content"] = content.replace("line 7\n", "line seven\n")
    assert [c.kind for c in compress_request(Dialect.ANTHROPIC, body, SAFE).cuts] == []  # not what was written: kept


def test_openai_tool_messages_and_text_action_observations_are_outputs():
    chat = {"model": "m", "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "fix it"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "bash", "arguments": json.dumps({"command": "pytest"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": LOG},
        {"role": "assistant", "content": "Running again:\n```bash\npytest -q\n```"},
        {"role": "user", "content": f"<returncode>1</returncode>\n<output>\n{LOG}x\n</output>"}]}
    out = compress_request(Dialect.OPENAI_CHAT, chat, SAFE)
    assert [c.output for c in out.cuts] == ["call_1", "obs@5"]
    assert out.body["messages"][:3] == chat["messages"][:3] and out.body["messages"][4] == chat["messages"][4]
    assert out.body["messages"][5]["content"].startswith("<returncode>1</returncode>\n<output>")


def test_a_user_message_after_plain_assistant_text_is_the_users_own():
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                       {"role": "user", "content": LOG}]}
    assert compress_request(Dialect.OPENAI_CHAT, chat, SAFE).body is chat


def test_responses_function_call_outputs_are_shrunk():
    body = {"model": "gpt-5-codex", "instructions": "be brief", "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "test"}]},
        {"type": "function_call", "call_id": "c1", "name": "shell",
         "arguments": json.dumps({"command": ["bash", "-lc", "pytest -q"]})},
        {"type": "function_call_output", "call_id": "c1", "output": LOG}]}
    out = compress_request(Dialect.OPENAI_RESPONSES, body, SAFE)
    assert [c.output for c in out.cuts] == ["c1"] and out.body["input"][:2] == body["input"][:2]
    assert "FAILED tests/test_m.py::test_bad" in out.body["input"][2]["output"]


def test_gemini_function_responses_are_shrunk_and_paired_by_name():
    body = {"contents": [
        {"role": "user", "parts": [{"text": "test"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "run_shell_command", "args": {"command": "pytest"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "run_shell_command", "response": {"output": LOG}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "read_file", "args": {"absolute_path": "/r/a.py"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "read_file", "response": {"output": LOG}}}]}]}
    out = compress_request(Dialect.GEMINI, body, SAFE)
    assert [c.output for c in out.cuts] == ["fn@2.0"]  # the read stays whole
    assert out.body["contents"][:2] == body["contents"][:2] and out.body["contents"][3:] == body["contents"][3:]
    assert "FAILED tests/test_m.py::test_bad" in out.body["contents"][2]["parts"][0]["functionResponse"]["response"]["output"]


@pytest.mark.parametrize("body", [{"model": "m"}, {"messages": "not a list"}, {"contents": [{"parts": []}]},
                                  {"contents": "not a list"}])
def test_unrecognised_bodies_pass_unchanged(body):
    for d in Dialect:
        assert compress_request(d, body, SAFE).body is body


def test_mode_off_changes_nothing():
    body = anthropic_body(LOG)
    assert compress_request(Dialect.ANTHROPIC, body, Settings(mode=Mode.OFF)).body is body


@pytest.mark.parametrize("shown", ["Try this:\n```python\nprint(compute())\n```", "Run:\n```bash\npytest\n```"])
def test_a_log_a_person_pastes_after_the_assistant_showed_code_is_theirs(shown):
    chat = {"model": "m", "messages": [{"role": "user", "content": "it fails"}, {"role": "assistant", "content": shown},
                                       {"role": "user", "content": "here is what I get:\n" + LOG}]}
    assert compress_request(Dialect.OPENAI_CHAT, chat, SAFE).body is chat


def test_a_failed_edit_does_not_make_the_read_before_it_stale():
    body = read_then_edit("<tool_use_error>String to replace not found in file.</tool_use_error>", is_error=True)
    assert compress_request(Dialect.ANTHROPIC, body, MAX).body is body
