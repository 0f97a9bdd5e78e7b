"""The must-keep checker is strict: every output of every id is checked by its place (agents reuse
ids), and every marker is held to the text it replaced. Each check is shown to catch a wrong marker."""

from __future__ import annotations

import copy

from test_mustkeep import PYTEST_LOG, anthropic_body, found

from tests import mustkeep as mk
from tests.mustkeep import check

B1, B2, E1 = "messages[4].content[0] (toolu_b1)", "messages[12].content[0] (toolu_b1)", "messages[6].content[0] (toolu_e1)"
KEPT = [line for line in PYTEST_LOG.split("\n") if mk.ERROR_WORDS.search(line) or " passed" in line]


def superseded(command: str) -> str:
    return "\n".join([f"[clutch: superseded output of `{command}`: the same command runs again later; kept its "
                      f"{len(KEPT)} error and summary lines, removed 50 lines (400 tokens)]", *KEPT])


def reused_bash_id() -> dict:
    """The Claude Code request, with both `pytest -q` runs sharing the id toolu_b1 (messages 3-4, 11-12)."""
    body = anthropic_body()
    body["messages"][11]["content"][0]["id"] = body["messages"][12]["content"][0]["tool_use_id"] = "toolu_b1"
    return body


def replaced(body: dict, index: int, content: str) -> dict:
    out = copy.deepcopy(body)
    out["messages"][index]["content"][0]["content"] = content
    return out


def test_a_superseded_run_marker_naming_the_command_that_runs_again_passes():
    body = reused_bash_id()
    assert check("anthropic", body, replaced(body, 4, superseded("pytest -q"))).ok


def test_a_superseded_run_marker_naming_another_command_is_caught():
    body = reused_bash_id()
    assert found(check("anthropic", body, replaced(body, 4, superseded("ls -F")))) == {("M6", B1)}


def test_a_superseded_run_marker_on_a_command_that_does_not_run_again_is_caught():
    body = reused_bash_id()
    assert ("M6", B2) in found(check("anthropic", body, replaced(body, 12, superseded("pytest -q"))))


def test_a_reference_by_a_reused_id_alone_is_ambiguous():
    body = reused_bash_id()
    body["messages"][5]["content"][0]["id"] = body["messages"][6]["content"][0]["tool_use_id"] = "toolu_b1"
    reference = "[clutch: same output as tool call toolu_b1{} above; 55 lines (400 tokens) removed]"
    assert ("M6", B2) in found(check("anthropic", body, replaced(body, 12, reference.format(""))))
    assert check("anthropic", body, replaced(body, 12, reference.format(" (message 4, `pytest -q`)"))).ok
    wrong = found(check("anthropic", body, replaced(body, 12, reference.format(" (message 6)"))))
    assert ("M6", B2) in wrong  # the Edit's result, another text
    assert ("M6", B2) in found(check("anthropic", body, replaced(body, 12, reference.format(" (message 4, `ls`)"))))


def test_every_fresh_read_of_a_reused_id_is_checked():
    """Two fresh reads with one id: a change to the first is caught (the old checker looked at the last)."""
    body = anthropic_body()
    body["messages"][5]["content"][0]["input"]["file_path"] = "/repo/app/other.py"  # main.py stays fresh
    body["messages"][7]["content"][0]["id"] = body["messages"][8]["content"][0]["tool_use_id"] = "toolu_r1"
    report = check("anthropic", body, replaced(body, 2, "[clutch: 3 lines (30 tokens) removed]"))
    assert ("M5", "messages[2].content[0] (toolu_r1)") in found(report)
    assert report.fresh_reads == 2


def test_an_outdated_snippet_marker_naming_another_file_is_caught():
    body = anthropic_body()
    marker = ("[clutch: outdated snippet of /repo/app/util.py: the file was changed or read again later; "
              "1 lines (10 tokens) removed]")
    assert found(check("anthropic", body, replaced(body, 6, marker))) == {("M6", E1)}


def test_a_stale_read_marker_of_a_file_not_written_later_is_caught():
    body = anthropic_body()
    marker = ("[clutch: stale read of /repo/app/util.py: the file was changed after this read; 3 lines "
              "(30 tokens) removed, read it again for the current content]")
    assert ("M6", "messages[8].content[0] (toolu_r2)") in found(check("anthropic", body, replaced(body, 8, marker)))
