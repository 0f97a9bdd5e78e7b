"""Transforms of one tool output: noise, repeats, long logs and JSON arrays, each cut marked."""

from __future__ import annotations

import json
import re

from addons.compression import transforms
from tests import mustkeep as mk
from addons.compression.transforms import LogLimits, shrink_output, strip_terminal_noise

LIMITS = LogLimits()
MARKER = re.compile(r"\[clutch: [^\]\n]+\]")


def pytest_log(passing: int = 300) -> str:
    lines = ["============================= test session starts ==============================",
             "platform linux -- Python 3.12.1, pytest-8.3.0", f"collected {passing + 2} items", ""]
    lines += [f"tests/test_app.py::test_case_{i} PASSED{' ' * 20}[{i * 100 // passing:3d}%]" for i in range(passing)]
    lines += ["tests/test_app.py::test_bad FAILED", "tests/test_app.py::test_worse FAILED", "",
              "=================================== FAILURES ===================================",
              "___________________________________ test_bad ___________________________________",
              "    def test_bad():", ">       assert compute() == 3", "E       AssertionError: assert 2 == 3",
              "tests/test_app.py:41: AssertionError",
              "=========================== short test summary info ============================",
              "FAILED tests/test_app.py::test_bad - AssertionError: assert 2 == 3",
              "FAILED tests/test_app.py::test_worse - KeyError: 'x'",
              f"========================= 2 failed, {passing} passed in 3.21s ========================="]
    return "\n".join(lines)


def test_terminal_noise_goes_and_the_visible_text_stays():
    text = "\x1b[1;32mPASSED\x1b[0m ok\n\x1b]0;title\x07line\nspin -\x08\\\x08|\x08done\n10%\r50%\r100%\nend\r\n"
    assert strip_terminal_noise(text) == "PASSED ok\nline\nspin done\n100%\nend\r\n"


def test_crlf_line_endings_are_not_redraws():
    text = "a\r\nb\r\n"
    assert strip_terminal_noise(text) == text


def test_identical_lines_fold_into_a_count():
    lines = ["start"] + ["Retrying connection..."] * 9 + ["done"]
    assert transforms.fold_repeats(lines, LIMITS) == ["start", "Retrying connection...",
                                                      "[clutch: the line above repeats 8 more times]", "done"]


def test_progress_lines_keep_their_first_and_last():
    lines = [f"Downloading package {i} of 40" for i in range(1, 41)]
    folded = transforms.fold_repeats(lines, LIMITS)
    assert folded[0] == lines[0] and folded[-1] == lines[-1] and len(folded) == 3
    assert re.fullmatch(r"\[clutch: 38 similar lines \(\d+ tokens\) that differ only in their numbers folded\]",
                        folded[1])


def test_error_lines_never_fold_into_a_count_of_similar_lines():
    lines = [f"error: file{i}.c:{i}: undefined reference to `f{i}'" for i in range(10)]
    assert transforms.fold_repeats(lines, LIMITS) == lines


def test_a_long_test_log_keeps_failures_summary_head_and_tail():
    log = pytest_log()
    out = shrink_output(log, LIMITS, log_hint=True)
    assert len(out) < len(log) / 3
    for line in log.split("\n"):
        if "FAILED" in line or "AssertionError" in line or " passed in " in line or line.startswith("collected"):
            assert line in out
    markers = MARKER.findall(out)
    assert markers and all(re.search(r"\d[\d,]* (?:similar )?lines \(\d[\d,]* tokens\)", m) for m in markers)


def test_the_cut_counts_are_true():
    log = pytest_log()
    out = shrink_output(log, LIMITS, log_hint=True)
    kept = [line for line in out.split("\n") if not line.startswith("[clutch: ")]
    amounts = re.findall(r"\[clutch: (?:([\d,]+) (?:similar )?lines|the line above repeats ([\d,]+) more times)", out)
    assert amounts
    cut = sum(int((a or b).replace(",", "")) for a, b in amounts)
    assert len(kept) + cut == len(log.split("\n"))


def test_short_outputs_are_left_alone():
    text = "total 3\n-rw-r--r-- 1 me me 12 README.md\n"
    assert shrink_output(text, LIMITS) == text


def test_prose_below_the_output_limit_is_not_cut():
    text = "\n".join(f"Paragraph {i}: the design says the cache must hold." for i in range(150))
    assert shrink_output(text, LIMITS) == text


def test_a_warning_repeated_for_every_file_is_kept_once():
    lines = []
    for i in range(60):
        lines += ["==> dep", f"Compiling {i} files (.ex)", "    warning: single-quoted strings are deprecated",
                  f"    └─ lib/dep_{i}.ex:{i}:3", "Generated dep app"]
    out = shrink_output("\n".join(lines), LIMITS, log_hint=True)
    assert out.count("warning: single-quoted strings are deprecated") < 10
    assert "lib/dep_0.ex:0:3" in out


def test_a_json_array_of_similar_objects_is_summarised_and_stays_json():
    items = [{"id": i, "name": f"user{i}", "status": "active"} for i in range(50)]
    items[20]["status"] = "error: locked"
    out = transforms.summarise_json_array(json.dumps(items), LIMITS)
    parsed = json.loads(out)
    assert parsed[0] == items[0] and parsed[-1] == items[-1] and items[20] in parsed
    markers = [p for p in parsed if isinstance(p, str)]
    assert markers and all(MARKER.fullmatch(m) and "similar items" in m for m in markers)
    assert sum(int(re.search(r"([\d,]+) more", m).group(1)) for m in markers) == 50 - (len(parsed) - len(markers))


def test_json_that_is_not_an_array_of_records_is_not_summarised():
    assert transforms.summarise_json_array(json.dumps(list(range(100))), LIMITS) is None
    assert transforms.summarise_json_array('{"a": 1}', LIMITS) is None


def test_shrinking_is_deterministic():
    log = pytest_log(500)
    assert shrink_output(log, LIMITS, True) == shrink_output(log, LIMITS, True)


def test_essentials_keep_each_error_and_summary_once():
    kept = transforms.essentials(pytest_log(20) + "\n" + pytest_log(20))
    assert kept.count("FAILED tests/test_app.py::test_bad - AssertionError: assert 2 == 3") == 1
    assert any(" 2 failed, 20 passed" in line for line in kept)
    assert not any("PASSED" in line for line in kept)


def test_lines_are_found_by_their_own_index_even_when_lower_casing_changes_lengths():
    lines = ["İİİİ Istanbul"] * 3 + ["plain line"] * 3 + ["ERROR: disk full", "see lib/a.py:12 for more"]
    assert transforms.must_keep_lines(lines) == {6}
    assert transforms.first_keep_lines(lines) == {7}


def test_the_hint_scan_finds_exactly_the_lines_the_pattern_finds():
    log = pytest_log(50).split("\n") + ["ok 3 - parses", "Ran 12 tests in 0.1s", "Tests: 2 failed", "- FAIL x",
                                          "request timed out", 'File "a.py", line 3, in f', "9 deselected",
                                          "warning: old", "DeprecationWarning at lib/x.py:9", "nothing here"]
    by_regex = {i for i, line in enumerate(log) if transforms.is_important(line)}
    assert transforms.must_keep_lines(log) == by_regex and len(by_regex) > 10
    first = {i for i, line in enumerate(log) if transforms._FIRST_KEEP.search(line)}
    assert transforms.first_keep_lines(log) == first


def test_a_tally_of_zero_names_no_failure_but_every_nonzero_tally_and_the_runs_total_stay():
    """Maven's surefire prints a `Failures: 0, Errors: 0` line for every passing test class: those may
    be cut; a class with a failure, the run's total and any other line saying "failed: 0" may not."""
    lines = ["[INFO] Tests run: 1, Failures: 0, Errors: 0, Skipped: 0, Time elapsed: 0.1 s -- in shop.ATest",
             "[ERROR] Tests run: 1, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.1 s <<< FAILURE! -- in x.B",
             "[ERROR] Tests run: 2, Failures: 0, Errors: 1, Skipped: 0, Time elapsed: 0 s <<< ERROR! -- in x.C",
             "[INFO] Tests run: 63, Failures: 0, Errors: 0, Skipped: 0",
             "Failures: 0 but the JVM crashed with an exception",
             "upload failed: 0 bytes written", "Check failed: 0 == status (0 vs. 5)", "Build failed: 0.52s"]
    assert [transforms.is_important(line) for line in lines] == [False] + [True] * 7
    assert transforms.must_keep_lines(lines) == set(range(1, 8))
    assert mk.error_lines(mk.norm_text("\n".join(lines))) == set(lines[1:])


def test_line_end_anchored_keeps_hold_with_crlf_line_endings():
    """Windows and pseudo-terminal output end lines with \\r\\n: the anchored keep patterns still match."""
    lines = ["   at ShopTests.TotalWithTax() in C:\\src\\ShopTests.cs:line 12",
             "  3) test discount never negative (ShopTest)", "[INFO] Tests run: 63, Failures: 0, Errors: 0, Skipped: 0",
             "=========== 2 failed, 3 passed in 0.12s ==========="]
    for line in lines:
        assert transforms.is_important(line + "\r"), line
    assert transforms.must_keep_lines([line + "\r" for line in lines]) == set(range(len(lines)))


def test_a_dotnet_frame_with_its_source_file_is_kept_and_a_runtime_frame_is_not():
    """`dotnet test` prints `at Type.Method() in /path/File.cs:line N` for frames with sources (the
    project's own code); the runtime's frames have no ` in ...:line` (no dotnet runner on the machine
    that made the fixtures: the shape is the one vstest documents)."""
    assert transforms.is_important("   at ShopTests.TotalWithTax() in /src/Shop.Tests/ShopTests.cs:line 12")
    assert not transforms.is_important("   at System.RuntimeMethodHandle.InvokeMethod(Object target, Span`1& args)")
