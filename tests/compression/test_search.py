"""Search and fetch results are answers the agent asked for, not logs: never cut to head and tail
(addons/compression/search.py), each request also held to the must-keep checker's M8."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from harness import corpus_files
from mustkeep import check

from addons.compression import shell
from addons.compression.policy import Mode, Settings, compress_request
from addons.wire.dialects import Dialect
from addons.wire.tokens import count_text

SAFE, MAX = Settings(mode=Mode.CACHE_SAFE), Settings(mode=Mode.MAX)
LOCK_LINE = ('  "node_modules/@babel/helper-module-{i}": {{"version": "7.24.{i}", "resolved": '
             '"https://registry.npmjs.org/@babel/helper-module-{i}/-/helper-module-{i}-7.24.{i}.tgz", "integrity": '
             '"sha512-{h}", "dependencies": {{"@babel/types": "^7.24.{i}", "@babel/traverse": "^7.24.{i}"}}}},')


def anthropic(tool: str, call: dict, text: str, later: list | None = None) -> dict:
    """A Claude Code request whose newest turn is one tool call and its result."""
    return {"model": "claude-opus-4-6", "max_tokens": 1000, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Find it."}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": call}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": text}]},
        *(later or [])]}


def result(outcome, index: int = 2) -> str:
    return outcome.body["messages"][index]["content"][0]["content"]


def lock_grep() -> tuple[dict, list[str]]:
    """Claude Code's Grep over one lock file: 67 long matches, 10k+ tokens, in rg's `line:` form."""
    matches = [f"{100 + 40 * i}:" + LOCK_LINE.format(i=i, h=base64.b64encode(hashlib.sha512(bytes([i])).digest()).decode())
               for i in range(67)]
    body = anthropic("Grep", {"pattern": "helper-module", "path": "/home/u/app/package-lock.json",
                              "output_mode": "content", "-n": True}, "\n".join(matches))
    return body, matches


def test_a_grep_over_the_limit_keeps_all_67_matches_in_cache_safe():
    body, matches = lock_grep()
    assert count_text("\n".join(matches)) > 10_000
    outcome = compress_request(Dialect.ANTHROPIC, body, SAFE)
    kept = result(outcome).split("\n")
    assert [m for m in matches if m not in kept] == []
    assert not check("anthropic", body, outcome.body).findings


def test_in_max_the_marker_lists_every_dropped_matchs_file_and_line():
    body, matches = lock_grep()
    outcome = compress_request(Dialect.ANTHROPIC, body, MAX)
    lines = result(outcome).split("\n")
    markers = [line for line in lines if line.startswith("[clutch: ")]
    dropped = [m for m in matches if m not in lines]
    assert dropped and len(markers) == 1 and f"{len(dropped)} matches" in markers[0]
    for match in dropped:
        where = "/home/u/app/package-lock.json:" + match.split(":")[0]
        assert re.search(re.escape(where) + r"(,|\])", markers[0]), match
    assert count_text(result(outcome)) < count_text("\n".join(matches)) / 2
    assert not check("anthropic", body, outcome.body).findings


def test_a_real_webfetch_of_1400_lines_is_not_cut_to_head_and_tail():
    path = next(p for p in corpus_files("cc-258c7280-agent-a881341-r002.json"))
    body = json.loads(path.read_text())["body"]
    fetched = [b["content"] for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b.get("type") == "tool_result"]
    assert fetched[0].count("\n") > 1400
    outcome = compress_request(Dialect.ANTHROPIC, body, SAFE)
    after = [b["content"] for m in outcome.body["messages"] if isinstance(m["content"], list)
             for b in m["content"] if b.get("type") == "tool_result"]
    for before, now in zip(fetched, after):
        assert set(before.split("\n")) <= set(now.split("\n"))
    # in max, the sections past the limit go behind a marker that names each of them and the URL
    maxed = compress_request(Dialect.ANTHROPIC, body, MAX)
    marker = next(line for c in maxed.cuts for line in c.after.split("\n") if line.startswith("[clutch: "))
    assert "claude_code_docs_map.md" in marker and '"Deployment"' in marker


def test_strings_piped_to_grep_keeps_every_match():
    found = [f"flag_table_{i:04d}_0x{i * 7919:08x}_padding_for_the_section_{i % 13}" for i in range(900)]
    found[450] = "flag{str1ngs_in_the_m1ddle_4re_answ3rs}"
    body = anthropic("Bash", {"command": "strings ./rock | grep flag"}, "\n".join(found))
    for settings in (SAFE, MAX):
        outcome = compress_request(Dialect.ANTHROPIC, body, settings)
        assert "flag{str1ngs_in_the_m1ddle_4re_answ3rs}" in result(outcome) or "output line 451" in result(outcome)
    assert set(found) <= set(result(compress_request(Dialect.ANTHROPIC, body, SAFE)).split("\n"))


def test_a_pipeline_ending_in_grep_counts_as_search():
    assert shell.is_search("cat app.log | grep ERROR") and shell.read_path("cat app.log | grep ERROR") is None
    assert shell.is_search("cd /srv && journalctl -u api | grep -n timeout | head -50")
    assert not shell.is_search("make 2>&1 | tee build.log")
    # run again later, the first search is superseded: its ERROR lines stay (it is no file read that
    # a "superseded read" marker may drop whole)
    errors = "\n".join(f"2026-12-01T10:{i // 60:02d}:{i % 60:02d}Z ERROR worker {i}: upstream reset" for i in range(200))
    again = [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "Bash",
                                                "input": {"command": "cat app.log | grep ERROR"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": errors}]}]
    body = anthropic("Bash", {"command": "cat app.log | grep ERROR"}, errors, again)
    outcome = compress_request(Dialect.ANTHROPIC, body, MAX)
    assert set(errors.split("\n")) <= set(result(outcome).split("\n"))


def test_a_plain_build_log_is_still_cut_as_before():
    log = "\n".join([f"[{i:3d}%] Building CXX object src/CMakeFiles/core.dir/module_{i}.cpp.o" for i in range(100)]
                    + [f"  note: compiling unit {i} with -O2 -g -fPIC and a long list of flags" for i in range(200)]
                    + ["[100%] Linking CXX executable core", "Build finished"])
    body = anthropic("Bash", {"command": "make -j2"}, log)
    after = result(compress_request(Dialect.ANTHROPIC, body, SAFE))
    assert "[clutch: " in after and len(after) < len(log) / 2
