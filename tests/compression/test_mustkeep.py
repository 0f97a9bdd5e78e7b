"""The must-keep checker (tests/mustkeep.py): hand-made requests that pass and ones that break each
check, plus the corpus with the identity compressor (passes) and a truncating one (fails)."""

from __future__ import annotations

import copy
import json
import time

import pytest

from harness import corpus_files

from tests import mustkeep as mk
from tests.mustkeep import check, deterministic, prefix_stable

# --------------------------------------------------------------------------------------------
# A small Claude Code request


PYTEST_LOG = "\n".join([
    "============================= test session starts ==============================",
    "collected 3 items",
    "",
    "tests/test_app.py .F.                                                     [100%]",
    "",
    "=================================== FAILURES ===================================",
    "______________________________ test_divide ______________________________",
    "    def test_divide():",
    ">       assert divide(4, 0) == 0",
    "E       ZeroDivisionError: division by zero",
    "",
    "app/main.py:3: ZeroDivisionError",
    "=========================== short test summary info ============================",
    "FAILED tests/test_app.py::test_divide - ZeroDivisionError: division by zero",
    "========================= 1 failed, 2 passed in 0.12s ==========================",
] + [f"filler line {n} of the log" for n in range(40)])
MAIN_PY = "     1→import os\n     2→def divide(a, b):\n     3→    return a / b\n"
UTIL_PY = "     1→def helper():\n     2→    raise ValueError('helper not found')\n     3→    return 1\n"


def text(t):
    return {"type": "text", "text": t}


def use(uid, name, **inputs):
    return {"type": "tool_use", "id": uid, "name": name, "input": inputs}


def result(uid, content, **extra):
    return {"type": "tool_result", "tool_use_id": uid, "content": content, **extra}


def anthropic_body():
    return {
        "model": "claude-opus-4-6",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [text("Fix the failing test in app/main.py")]},
            {"role": "assistant", "content": [text("Reading it."), use("toolu_r1", "Read", file_path="/repo/app/main.py")]},
            {"role": "user", "content": [result("toolu_r1", MAIN_PY)]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Run the tests.", "signature": "sig-abc"},
                use("toolu_b1", "Bash", command="pytest -q")]},
            {"role": "user", "content": [result("toolu_b1", PYTEST_LOG, is_error=True)]},
            {"role": "assistant", "content": [use("toolu_e1", "Edit", file_path="/repo/app/main.py",
                                                  old_string="    return a / b",
                                                  new_string="    return a / b if b else 0")]},
            {"role": "user", "content": [result("toolu_e1", "The file /repo/app/main.py has been updated successfully.")]},
            {"role": "assistant", "content": [use("toolu_r2", "Read", file_path="/repo/app/util.py")]},
            {"role": "user", "content": [result("toolu_r2", UTIL_PY)]},
            {"role": "assistant", "content": [use("toolu_w1", "Write", file_path="/repo/app/log.txt",
                                                  content="step 1\nError: disk full on /dev/sda\nstep 2\n")]},
            {"role": "user", "content": [result("toolu_w1", "The file /repo/app/log.txt has been updated. "
                                                "Here's the result of running `cat -n` on a snippet of the edited file:\n"
                                                "     1→step 1\n     2→Error: disk full on /dev/sda\n     3→step 2")]},
            {"role": "assistant", "content": [use("toolu_b2", "Bash", command="pytest -q")]},
            {"role": "user", "content": [result("toolu_b2", PYTEST_LOG, is_error=True), text("also check the docs")]},
        ],
    }


def found(report):
    return {(f.check, f.where) for f in report.findings}


def where(body, uid):
    for i, message in enumerate(body["messages"]):
        for j, block in enumerate(message["content"] if isinstance(message["content"], list) else []):
            if block.get("tool_use_id") == uid:
                return f"messages[{i}].content[{j}] ({uid})"
    raise KeyError(uid)


def set_result(body, uid, content):
    for message in body["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("tool_use_id") == uid:
                block["content"] = content
                return body
    raise KeyError(uid)


def cut(log: str, keep: int = 15) -> str:
    """The first `keep` lines and a well-formed cut marker."""
    lines = log.split("\n")
    return "\n".join(lines[:keep] + [f"[clutch: {len(lines) - keep} lines (300 tokens) cut: kept errors, "
                                     "warnings, the summary and the first and last lines]"])


# --- passing requests


def test_identity_passes_with_the_facts_counted():
    body = anthropic_body()
    report = check("anthropic", body, copy.deepcopy(body))
    assert report.ok, report.findings
    assert report.fresh_reads == 1 and report.fresh_reads_verbatim == 1  # util.py; main.py was edited
    assert report.test_ids == 2 and report.test_ids_kept == 2  # the FAILED node id and the summary
    assert report.error_lines == report.error_lines_kept > 0
    assert report.paths == report.paths_kept > 0
    assert report.markers == 0


def test_honest_compression_passes():
    body = anthropic_body()
    out = copy.deepcopy(body)
    set_result(out, "toolu_b1", cut(PYTEST_LOG))
    set_result(out, "toolu_b2", "[clutch: same output as tool call toolu_b1 above; 55 lines (400 tokens) removed]")
    set_result(out, "toolu_r1", "[clutch: stale read of /repo/app/main.py: the file was changed after this read; "
                                "3 lines (30 tokens) removed, read it again for the current content]")
    set_result(out, "toolu_w1", "The file /repo/app/log.txt has been updated.\n[clutch: listing of the written "
                                "file removed (3 lines, 20 tokens); it is the content of this Write call]")
    report = check("anthropic", body, out)
    assert report.ok, report.findings
    assert report.markers == 4


def test_lossless_normalisation_needs_no_marker():
    body = anthropic_body()
    set_result(body, "toolu_b1", "\x1b[31mError: boom happened\x1b[0m   \r\n10%\r50%\r100%\ndone  \n")
    out = set_result(copy.deepcopy(body), "toolu_b1", "Error: boom happened\n100%\ndone")
    assert check("anthropic", body, out).ok


def test_a_cut_keeping_the_error_lines_in_another_spacing_passes():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_b1", "=================================== FAILURES ===================================\n"
                     "E ZeroDivisionError:   division by zero\n"
                     "app/main.py:3:\tZeroDivisionError\n"
                     "FAILED tests/test_app.py::test_divide - ZeroDivisionError: division by zero\n"
                     "========================= 1 failed, 2 passed in 0.12s ==========================\n"
                     "[clutch: 51 lines (600 tokens) cut: kept errors, warnings, the summary and the first and last lines]")
    report = check("anthropic", body, out)
    assert report.ok, report.findings


# --- M1


@pytest.mark.parametrize("change, key", [
    (lambda b: b["system"][0].update(text="You are Clutch."), "system"),
    (lambda b: b.update(temperature=0), "temperature"),
    (lambda b: b.pop("tools"), "tools"),
    (lambda b: b.update(max_tokens=1000), "max_tokens"),
])
def test_m1_envelope(change, key):
    body = anthropic_body()
    out = copy.deepcopy(body)
    change(out)
    assert found(check("anthropic", body, out)) == {("M1", key)}


# --- M2


def test_m2_a_dropped_message_is_one_finding():
    body = anthropic_body()
    out = copy.deepcopy(body)
    del out["messages"][3:5]
    assert found(check("anthropic", body, out)) == {("M2", "messages")}


@pytest.mark.parametrize("change, index", [
    (lambda m: m[4]["content"][0].update(tool_use_id="toolu_zz"), 4),
    (lambda m: m[4]["content"][0].pop("is_error"), 4),
    (lambda m: m[2]["content"][0].update(is_error=True), 2),
    (lambda m: m[4]["content"][0].update(content=[text(PYTEST_LOG)]), 4),  # str became list
    (lambda m: m[3]["content"][1].update(id="toolu_other"), 3),
    (lambda m: m[12]["content"].reverse(), 12),  # block order
    (lambda m: m[0].update(role="assistant"), 0),
    (lambda m: m[0].update(content="Fix the failing test in app/main.py"), 0),  # list became str
])
def test_m2_structure(change, index):
    body = anthropic_body()
    out = copy.deepcopy(body)
    change(out["messages"])
    assert found(check("anthropic", body, out)) == {("M2", f"messages[{index}]")}


def test_m2_a_list_result_keeps_its_block_types():
    body = anthropic_body()
    set_result(body, "toolu_b1", [text(PYTEST_LOG), text("second part")])
    out = set_result(copy.deepcopy(body), "toolu_b1", [text(cut(PYTEST_LOG)), text("second part")])
    assert check("anthropic", body, out).ok
    out = set_result(copy.deepcopy(body), "toolu_b1", [text(cut(PYTEST_LOG))])
    assert found(check("anthropic", body, out)) == {("M2", "messages[4]")}


def test_m2_the_body_must_serialise():
    body = anthropic_body()
    out = copy.deepcopy(body)
    out["messages"][4]["content"][0]["content"] = PYTEST_LOG
    out["messages"][4]["content"][0]["extra"] = {1, 2}
    report = check("anthropic", body, out)
    assert ("M2", "body") in found(report)


# --- M3


@pytest.mark.parametrize("change, place", [
    (lambda m: m[3]["content"][0].update(signature="sig-xyz"), "messages[3].content[0]"),
    (lambda m: m[3]["content"][0].update(thinking="Run the tests now."), "messages[3].content[0]"),
    (lambda m: m[5]["content"][0]["input"].update(old_string="return a/b"), "messages[5].content[0]"),
    (lambda m: m[1]["content"][0].update(text="Reading it"), "messages[1].content[0]"),
    (lambda m: m[0]["content"][0].update(text="Fix the test"), "messages[0].content[0]"),
    (lambda m: m[12]["content"][1].update(text="also check the docs."), "messages[12].content[1]"),
    (lambda m: m[4].update(extra=1), "messages[4]"),
    (lambda m: m.__setitem__(1, {"content": m[1]["content"], "role": "assistant"}), "messages[1]"),  # key order
    (lambda m: m[4]["content"].__setitem__(0, dict(reversed(m[4]["content"][0].items()))), "messages[4].content[0]"),
])
def test_m3_everything_but_tool_output_text_is_protected(change, place):
    body = anthropic_body()
    out = copy.deepcopy(body)
    change(out["messages"])
    assert found(check("anthropic", body, out)) == {("M3", place)}


# --- M4


def test_m4_an_error_line_dropped_from_its_output():
    body = anthropic_body()
    log = PYTEST_LOG.replace("E       ZeroDivisionError: division by zero\n", "")
    out = set_result(copy.deepcopy(body), "toolu_b1", cut(log))
    report = check("anthropic", body, out)
    assert found(report) == {("M4", where(body, "toolu_b1"))}
    assert "ZeroDivisionError: division by zero" in report.findings[0].detail
    assert report.error_lines - report.error_lines_kept == 1


def test_m4_an_error_line_elsewhere_does_not_count():
    """The same error line in toolu_b2 does not excuse losing it from toolu_b1."""
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_b1", cut("\n".join(PYTEST_LOG.split("\n")[:9]), keep=9))
    assert found(check("anthropic", body, out)) == {("M4", where(body, "toolu_b1"))}


GO_LOG = "=== RUN   TestDivide\n--- FAIL: TestDivide (0.00s)\n    main_test.go:12: got 1 want 2\nFAIL\nFAIL\texample.com/app\t0.005s"


def test_m4_failing_test_ids_must_survive_somewhere():
    body = anthropic_body()
    set_result(body, "toolu_b1", GO_LOG)
    set_result(body, "toolu_b2", GO_LOG)  # no error lines; one failing test id
    out = copy.deepcopy(body)
    set_result(out, "toolu_b1", "[clutch: 5 lines (40 tokens) cut]")
    assert check("anthropic", body, out).ok  # toolu_b2 still names TestDivide
    set_result(out, "toolu_b2", "[clutch: 5 lines (40 tokens) cut]")
    report = check("anthropic", body, out)
    assert found(report) == {("M4", where(body, "toolu_b1"))}  # where the id was first seen
    assert "TestDivide" in report.findings[0].detail
    assert report.test_ids == 1 and report.test_ids_kept == 0


def test_m4_pytest_ids_and_summary_lines():
    body = anthropic_body()
    short = "\n".join(PYTEST_LOG.split("\n")[:13])  # everything before the short summary
    out = copy.deepcopy(body)
    set_result(out, "toolu_b1", short + "\n[clutch: 42 lines (500 tokens) cut: kept errors]")
    set_result(out, "toolu_b2", short + "\n[clutch: 42 lines (500 tokens) cut: kept errors]")
    report = check("anthropic", body, out)
    # the FAILED and summary lines are error lines of both outputs as well as test facts
    assert found(report) == {("M4", where(body, "toolu_b1")), ("M4", where(body, "toolu_b2"))}
    details = " ".join(f.detail for f in report.findings)
    assert "tests/test_app.py::test_divide" in details and "'1 failed, 2 passed in 0.12s'" in details
    assert report.test_ids == 2 and report.test_ids_kept == 0


def test_m4_a_same_output_reference_needs_the_errors_in_the_referenced_output():
    body = anthropic_body()
    out = copy.deepcopy(body)
    set_result(out, "toolu_b2", "[clutch: same output as tool call toolu_b1 above; 55 lines (400 tokens) removed]")
    set_result(out, "toolu_b1", "[clutch: 55 lines (400 tokens) cut]")
    report = check("anthropic", body, out)
    assert found(report) == {("M4", where(body, "toolu_b1")), ("M4", where(body, "toolu_b2"))}


def test_m4_a_write_echo_needs_the_errors_in_the_write_content():
    body = anthropic_body()
    out = copy.deepcopy(body)
    out["messages"][9]["content"][0]["input"]["content"] = "step 1\nstep 2\n"
    body["messages"][9]["content"][0]["input"]["content"] = "step 1\nstep 2\n"  # the Write lacks the line
    set_result(out, "toolu_w1", "[clutch: listing of the written file removed (3 lines, 20 tokens); "
                                "it is the content of this Write call]")
    assert found(check("anthropic", body, out)) == {("M4", where(body, "toolu_w1"))}


# --- M5


def test_m5_a_fresh_read_must_be_verbatim():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r2", "     1→def helper():\n     2→    raise ValueError('helper not found')\n"
                     "[clutch: 1 lines (5 tokens) cut]")
    report = check("anthropic", body, out)
    assert found(report) == {("M5", where(body, "toolu_r2"))}
    assert report.fresh_reads == 1 and report.fresh_reads_verbatim == 0


def test_m5_even_trailing_whitespace_on_a_fresh_read():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r2", UTIL_PY.rstrip())
    assert found(check("anthropic", body, out)) == {("M5", where(body, "toolu_r2"))}


def test_m5_a_later_read_makes_an_earlier_one_superseded():
    body = anthropic_body()
    body["messages"][11:11] = [
        {"role": "assistant", "content": [use("toolu_r3", "Read", file_path="/repo/app/util.py")]},
        {"role": "user", "content": [result("toolu_r3", UTIL_PY)]},
    ]
    marker = "[clutch: superseded read of /repo/app/util.py: the file is read again later; 3 lines (30 tokens) removed]"
    out = set_result(copy.deepcopy(body), "toolu_r2", marker)
    assert check("anthropic", body, out).ok
    out = set_result(copy.deepcopy(body), "toolu_r3", marker)  # the latest read is the fresh one
    report = check("anthropic", body, out)
    r3 = where(body, "toolu_r3")
    assert found(report) == {("M5", r3), ("M6", r3), ("M4", r3)}  # not exempt: its error line is lost


# --- M6


def test_m6_a_change_without_a_marker():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_b1", PYTEST_LOG.replace("filler line 3 of the log\n", ""))
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_b1"))}


def test_m6_an_emptied_output():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_e1", "")
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_e1"))}


@pytest.mark.parametrize("marker", [
    "[clutch: some lines cut]",  # no amount
    "[clutch: output shortened by 40%]",  # no unit
    "[clutch: 12 lines\ncut]",  # not one line
    "[clutch 12 lines cut]",  # not the marker syntax: no marker at all
])
def test_m6_a_marker_must_say_how_much_was_removed(marker):
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_b1", PYTEST_LOG.replace("filler line 3 of the log\n", marker + "\n"))
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_b1"))}


@pytest.mark.parametrize("marker", [
    "[clutch: the line above repeats 37 more times]",
    "[clutch: 40 more similar items (2,000 tokens) removed]",
    "[clutch: 1,200 lines (34,000 tokens) cut: kept errors, warnings, the summary and the first and last lines]",
    "[clutch: 4096 bytes of binary data removed]",
])
def test_m6_markers_that_state_an_amount(marker):
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_b1", PYTEST_LOG.replace("filler line 3 of the log", marker))
    assert check("anthropic", body, out).ok


STALE_UTIL = ("[clutch: stale read of /repo/app/util.py: the file was changed after this read; "
              "3 lines (30 tokens) removed, read it again for the current content]")


def test_m6_a_stale_marker_on_a_file_not_changed_later():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r2", STALE_UTIL)
    # util.py is never edited: the marker lies, the fresh read is gone, and its error line is lost
    expected = where(body, "toolu_r2")
    assert found(check("anthropic", body, out)) == {("M5", expected), ("M6", expected), ("M4", expected)}


def test_m6_a_stale_marker_naming_another_file():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r1", STALE_UTIL)  # toolu_r1 read main.py
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_r1"))}


def test_m6_a_stale_marker_on_a_non_read():
    body = anthropic_body()
    marker = STALE_UTIL.replace("util.py", "main.py")
    out = set_result(copy.deepcopy(body), "toolu_e1", marker)
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_e1"))}


def test_m6_a_superseded_marker_without_a_later_read():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r1", "[clutch: superseded read of /repo/app/main.py: "
                     "the file is read again later; 3 lines (30 tokens) removed]")
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_r1"))}


@pytest.mark.parametrize("uid, ref", [
    ("toolu_b1", "toolu_b2"),  # a later output, not one above
    ("toolu_b2", "toolu_nope"),  # no such output
    ("toolu_b2", "toolu_e1"),  # a different output
])
def test_m6_a_false_same_output_reference(uid, ref):
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), uid, f"[clutch: same output as tool call {ref} above; "
                     "55 lines (400 tokens) removed]")
    report = check("anthropic", body, out)
    assert ("M6", where(body, uid)) in found(report)
    assert {f.check for f in report.findings} <= {"M4", "M6"}  # and the errors it hid are lost


def test_m6_a_write_echo_marker_on_a_non_write():
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_e1", "[clutch: listing of the written file removed "
                     "(1 lines, 10 tokens); it is the content of this Write call]")
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_e1"))}


def test_m6_a_marker_already_in_the_original_is_not_new():
    body = anthropic_body()
    set_result(body, "toolu_b1", "[clutch: old marker]\n" + PYTEST_LOG)
    out = set_result(copy.deepcopy(body), "toolu_b1", "[clutch: old marker]\n" + PYTEST_LOG.replace("filler line 3 of the log\n", ""))
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_b1"))}


# --------------------------------------------------------------------------------------------
# OpenAI: mini-SWE-agent text actions and SWE-agent tool calls


def act(command):
    return {"role": "assistant", "content": f"THOUGHT: next step.\n\n```bash\n{command}\n```"}


def obs(output):
    return {"role": "user", "content": f"<returncode>0</returncode>\n<output>\n{output}\n</output>"}


def text_action_body():
    return {"model": "gpt-5", "messages": [
        {"role": "system", "content": "You are a helpful assistant that can interact with a shell."},
        {"role": "user", "content": "<pr_description>Fix src/pkg/a.py</pr_description>"},
        act("cat src/pkg/a.py"),                                    # 2
        obs("def f():\n    return 1\n"),                            # 3: stale read (sed -i below)
        act("sed -i 's/return 1/return 2/' src/pkg/a.py"),          # 4
        obs(""),                                                    # 5
        act("cd /testbed && python -m pytest tests -q"),            # 6
        obs("FAILED tests/test_a.py::test_f - AssertionError: assert 2 == 3\n1 failed in 0.01s"),  # 7
        {"role": "assistant", "content": "I am not sure what to do."},  # 8: no command
        {"role": "user", "content": "Please always provide EXACTLY ONE action in triple backticks."},  # 9
        act("nl -ba src/pkg/b.py | sed -n '1,20p'"),                # 10
        obs("     1\tdef g():\n     2\t    raise KeyError('g not found')"),  # 11: fresh read
    ]}


def test_text_actions_identity_passes():
    body = text_action_body()
    report = check("openai", body, copy.deepcopy(body))
    assert report.ok, report.findings
    assert report.fresh_reads == 1 and report.error_lines == 3


def test_text_action_observations_are_tool_outputs():
    body = text_action_body()
    out = copy.deepcopy(body)
    out["messages"][3]["content"] = ("[clutch: stale read of src/pkg/a.py: the file was changed after this read; "
                                     "2 lines (10 tokens) removed, read it again for the current content]")
    assert check("openai", body, out).ok
    out["messages"][11]["content"] = "[clutch: 2 lines (20 tokens) cut]"
    assert found(check("openai", body, out)) == {("M5", "messages[11] (obs@11)"), ("M4", "messages[11] (obs@11)")}


def test_text_action_messages_that_are_no_observation_are_protected():
    for index in (0, 1, 9, 8):
        body = text_action_body()
        out = copy.deepcopy(body)
        out["messages"][index]["content"] += " "
        assert found(check("openai", body, out)) == {("M3", f"messages[{index}]")}


def test_text_action_error_lines_and_test_ids():
    body = text_action_body()
    out = copy.deepcopy(body)
    out["messages"][7]["content"] = "<returncode>0</returncode>\n[clutch: 2 lines (30 tokens) cut]"
    report = check("openai", body, out)
    assert found(report) == {("M4", "messages[7] (obs@7)")}
    assert report.test_ids == 2 and report.test_ids_kept == 0


def test_text_action_same_output_reference():
    body = text_action_body()
    body["messages"] += [act("cd /testbed && python -m pytest tests -q"), copy.deepcopy(body["messages"][7])]
    out = copy.deepcopy(body)
    out["messages"][13]["content"] = "[clutch: same output as tool call obs@7 above; 2 lines (30 tokens) removed]"
    assert check("openai", body, out).ok


def tool_call(cid, name, **args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def tool_calls_body():
    return {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "SETTING: autonomous programmer."},
        {"role": "user", "content": "ISSUE: TimeDelta serialization precision"},
        {"role": "assistant", "content": "Open it.", "tool_calls": [tool_call("call_1", "open", path="src/fields.py")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "[File: /testbed/src/fields.py (3 lines total)]\n1:x = 1\n"
                                                              "(Open file: /testbed/src/fields.py)"},
        {"role": "assistant", "content": "Edit.", "tool_calls": [tool_call("call_2", "edit", search="x = 1", replace="x = 2")]},
        {"role": "tool", "tool_call_id": "call_2", "content": "File updated.\n(Open file: /testbed/src/fields.py)"},
        {"role": "assistant", "content": "Run.", "tool_calls": [tool_call("call_3", "bash", command="python reproduce.py")]},
        {"role": "tool", "tool_call_id": "call_3", "content": "Traceback (most recent call last):\nNameError: name 'y' is not defined"},
    ]}


def test_tool_calls_identity_and_stale_open():
    body = tool_calls_body()
    assert check("openai", body, copy.deepcopy(body)).ok
    out = copy.deepcopy(body)
    out["messages"][3]["content"] = ("[clutch: stale read of src/fields.py: the file was changed after this read; "
                                     "3 lines (10 tokens) removed, read it again for the current content]")
    assert check("openai", body, out).ok  # the edit of SWE-agent's open file makes the open stale


def test_tool_calls_structure_and_markers():
    body = tool_calls_body()
    out = copy.deepcopy(body)
    out["messages"][7]["tool_call_id"] = "call_9"
    assert found(check("openai", body, out)) == {("M2", "messages[7]")}
    out = copy.deepcopy(body)
    out["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"path": "src/other.py"}'
    assert found(check("openai", body, out)) == {("M3", "messages[2]")}
    out = copy.deepcopy(body)
    out["messages"][7]["content"] = "Traceback (most recent call last):"
    assert found(check("openai", body, out)) == {("M6", "messages[7] (call_3)"), ("M4", "messages[7] (call_3)")}


# --------------------------------------------------------------------------------------------
# Command heuristics of text actions


@pytest.mark.parametrize("command, path", [
    ("cat src/a.py", "src/a.py"),
    ("cat -n src/a.py | head -50", "src/a.py"),
    ("nl -ba lib/x.py | sed -n '10,40p'", "lib/x.py"),
    ("sed -n '1,20p' lib/x.py", "lib/x.py"),
    ("head -n 20 tests/t.py", "tests/t.py"),
    ("tail -30 a/b.txt", "a/b.txt"),
    ("cd /testbed && cat src/a.py", "/testbed/src/a.py"),
    ("open src/marshmallow/fields.py 1474", "src/marshmallow/fields.py"),
    ("str_replace_editor view /testbed/a.py", "/testbed/a.py"),
    ("nl -ba lib/x.py | grep -n def", None),  # a search, not a read
    ("cat a.py b.py", None),
    ("cat <<'EOF' > a.py\nprint(1)\nEOF", None),
    ("sed -i 's/a/b/' a.py", None),
    ("cat a.py > b.py", None),
    ("python a.py", None),
])
def test_command_read(command, path):
    assert mk.command_read(command) == path


@pytest.mark.parametrize("command, open_file, paths", [
    ("cat <<'EOF' > a.py\nx = 1 > 2\ny = open('b.py', 'w')\nEOF", None, ["a.py"]),
    ("sed -i 's/a/b/' lib/x.py && sed -i -e 's/c/d/' lib/y.py", None, ["lib/x.py", "lib/y.py"]),
    ("cd pkg && echo hi >> notes.txt 2>&1", None, ["pkg/notes.txt"]),
    ("python run.py > /dev/null 2>&1", None, []),
    ("echo x | tee out.log", None, ["out.log"]),
    ("rm -f a.py b.py", None, ["a.py", "b.py"]),
    ("mv a.py b.py", None, ["b.py"]),
    ("edit 4:4\ndef f():\nend_of_edit", "/repo/t.py", ["/repo/t.py"]),
    ("create exploit.py", None, ["exploit.py"]),
    ("str_replace_editor str_replace /testbed/a.py --old_str x --new_str y", None, ["/testbed/a.py"]),
    ("grep -n foo a.py", None, []),
])
def test_command_writes(command, open_file, paths):
    assert mk.command_writes(command, open_file) == paths


@pytest.mark.parametrize("a, b, same", [
    ("/repo/a/b.py", "a/b.py", True),
    ("./a/b.py", "/repo/a/b.py", True),
    ("/repo/a/b.py", "/other/a/b.py", False),
    ("a/b.py", "xa/b.py", False),
    ("a/../a/b.py", "a/b.py", True),
])
def test_same_file(a, b, same):
    assert mk.same_file(a, b) is same


# --------------------------------------------------------------------------------------------
# P1 and M7


def test_prefix_stable():
    prev = anthropic_body()
    prev["messages"] = prev["messages"][:5]
    nxt = anthropic_body()
    assert prefix_stable(prev, nxt) == (True, None)
    moved = copy.deepcopy(nxt)
    moved["messages"][4]["content"][0]["cache_control"] = {"type": "ephemeral"}
    assert prefix_stable(prev, moved) == (True, None)  # cache_control breakpoints may move
    rewritten = set_result(copy.deepcopy(nxt), "toolu_b1", cut(PYTEST_LOG))
    assert prefix_stable(prev, rewritten) == (False, 4)
    assert prefix_stable(prev, {**nxt, "messages": nxt["messages"][:3]}) == (False, 3)
    assert prefix_stable(prev, {**nxt, "system": "other"}) == (False, -1)
    assert prefix_stable(prev, {k: v for k, v in nxt.items() if k != "tools"}) == (False, -1)
    reordered = copy.deepcopy(nxt)
    reordered["messages"][2] = {"content": reordered["messages"][2]["content"], "role": "user"}
    assert prefix_stable(prev, reordered) == (False, 2)  # key order changes the bytes


def test_deterministic():
    body = anthropic_body()
    assert deterministic(lambda b: b, body)
    calls = []

    def drifting(b):
        calls.append(1)
        return set_result(b, "toolu_b1", f"[clutch: {len(calls)} lines cut]")
    assert not deterministic(drifting, body)

    def mutating(b):  # mutates its input: the second run must not see the first run's change
        return set_result(b, "toolu_b1", output_of(b) + "!")
    assert deterministic(mutating, body)
    assert body == anthropic_body()


def output_of(b):
    return b["messages"][4]["content"][0]["content"]


# --------------------------------------------------------------------------------------------
# The corpus


def load(path):
    record = json.loads(path.read_text())
    return record["format"], record["body"]


def truncate_tool_outputs(fmt, body):
    """A bad compressor: every tool output cut to its first 200 characters, without a marker."""
    body = copy.deepcopy(body)
    for out in mk.tool_outputs(fmt, body):
        message = body["messages"][out.index]
        holder = message["content"][out.block] if out.block is not None else message
        key = "content"
        content = holder.get(key)
        if isinstance(content, str):
            holder[key] = content[:200]
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    part["text"] = part["text"][:200]
    return body


def test_corpus_identity_passes():
    files = corpus_files("*.json")
    assert len(files) >= 40
    started = time.monotonic()
    for path in files:
        fmt, body = load(path)
        report = check(fmt, body, copy.deepcopy(body))
        assert report.ok, (path.name, report.findings[:5])
        assert report.error_lines == report.error_lines_kept
        assert report.fresh_reads == report.fresh_reads_verbatim
    assert time.monotonic() - started < 10


def test_corpus_truncation_fails():
    for path in corpus_files("*.json"):
        fmt, body = load(path)
        bad = truncate_tool_outputs(fmt, body)
        long_outputs = [o for o in mk.tool_outputs(fmt, body) if len(mk.output_text(body, o)) > 200]
        report = check(fmt, body, bad)
        if not long_outputs:
            assert report.ok, path.name
            continue
        checks = {f.check for f in report.findings}
        assert "M6" in checks, path.name  # changed without a marker
        assert not checks & {"M1", "M2", "M3"}, (path.name, report.findings[:3])
        assert report.paths_kept <= report.paths


def test_corpus_pairs_are_prefix_stable_raw_and_under_a_per_output_compressor():
    records = {}
    for path in corpus_files("*.json"):
        record = json.loads(path.read_text())
        records[record["meta"]["id"]] = record
    pairs = [(records[r["meta"]["pair_of"]], r) for r in records.values() if r["meta"].get("pair_of") in records]
    assert pairs
    for prev, nxt in pairs:
        fmt = nxt["format"]
        assert prefix_stable(prev["body"], nxt["body"]) == (True, None), nxt["meta"]["id"]
        # truncation decides per output, whatever follows it: the prefix stays stable
        stable = prefix_stable(truncate_tool_outputs(fmt, prev["body"]), truncate_tool_outputs(fmt, nxt["body"]))
        assert stable == (True, None), nxt["meta"]["id"]
        # sparing the last message (a position-from-end rule) rewrites it on the next turn
        last = len(prev["body"]["messages"]) - 1
        spared = truncate_tool_outputs(fmt, prev["body"])
        spared["messages"][last] = copy.deepcopy(prev["body"]["messages"][last])
        if spared["messages"][last] != truncate_tool_outputs(fmt, prev["body"])["messages"][last]:
            assert prefix_stable(spared, truncate_tool_outputs(fmt, nxt["body"])) == (False, last)


def test_claude_code_bash_reads_and_writes_use_the_shell_heuristics():
    body = anthropic_body()
    body["messages"][11:11] = [
        {"role": "assistant", "content": [use("toolu_c1", "Bash", command="cat /repo/app/conf.py")]},
        {"role": "user", "content": [result("toolu_c1", "DEBUG = True\nNAME = 'x'\n")]},
    ]
    out = set_result(copy.deepcopy(body), "toolu_c1", "DEBUG = True\n[clutch: 1 lines (4 tokens) cut]")
    assert found(check("anthropic", body, out)) == {("M5", where(body, "toolu_c1"))}  # a fresh read
    body["messages"][13:13] = [
        {"role": "assistant", "content": [use("toolu_c2", "Bash", command="sed -i 's/True/False/' /repo/app/conf.py")]},
        {"role": "user", "content": [result("toolu_c2", "")]},
    ]
    out = set_result(copy.deepcopy(body), "toolu_c1", "[clutch: stale read of /repo/app/conf.py: the file was "
                     "changed after this read; 2 lines (8 tokens) removed, read it again for the current content]")
    assert check("anthropic", body, out).ok


def test_headroom_stale_markers_fail_m6_but_exempt_their_read_from_m4():
    """The benchmark measures Headroom with this checker: its own stale-read marker is not Clutch's
    grammar (M6), but the read it replaces has a later edit, so its lines need not survive (M4)."""
    body = anthropic_body()
    out = set_result(copy.deepcopy(body), "toolu_r1", "[Read content stale: /repo/app/main.py was modified after "
                                                      "this read — re-read the file for current content.]")
    assert found(check("anthropic", body, out)) == {("M6", where(body, "toolu_r1"))}
    lying = set_result(copy.deepcopy(body), "toolu_r2", "[Read content stale: /repo/app/util.py was modified after "
                                                        "this read — re-read the file for current content.]")
    assert ("M4", where(body, "toolu_r2")) in found(check("anthropic", body, lying))  # util.py is never edited


def test_cache_breakpoints_may_move_anywhere():
    """M1's allow-list: cache_control changes where the cache is written, not the prompt."""
    body = anthropic_body()
    out = copy.deepcopy(body)
    out["system"][0].pop("cache_control")
    out["messages"][4]["content"][0]["cache_control"] = {"type": "ephemeral"}
    assert check("anthropic", body, out).ok
