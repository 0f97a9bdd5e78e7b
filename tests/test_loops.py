"""The two loops (docs/testing.md): `--fast` leaves out every test marked gateway or e2e, by folder,
by fixture or by hand, and fails a test of the fast loop that starts a process anyway."""

from __future__ import annotations

import os
import subprocess
import sys

import harness
import pytest
from harness import ROOT, FakeProcess, Gateway, agent_binary

FILES = ["tests/gateway/test_rulebook.py", "tests/e2e/test_e2e_opencode.py", "tests/routing/test_custom_router.py",
         "tests/launcher/test_gateway_cli.py"]


def collected(*args: str) -> list[str]:
    """The test ids pytest collects in this checkout with `args`."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_the_fast_loop_leaves_out_what_starts_a_process():
    every, fast = collected(*FILES), collected("--fast", *FILES)
    left_out = set(every) - set(fast)
    assert set(fast) < set(every)
    assert {t for t in every if t.startswith(("tests/gateway/", "tests/e2e/"))} <= left_out  # by folder
    router = "tests/routing/test_custom_router.py::"
    assert {t for t in left_out if t.startswith(router)} == {  # by fixture: these two take `fake`
        router + "test_slow_router_calls_do_not_starve_the_fast_ones_and_async_routers_work",
        router + "test_past_the_thread_bound_the_router_is_not_asked_and_says_so"}
    assert "tests/launcher/test_gateway_cli.py::test_clutch_start_serves_health_on_loopback" in left_out  # by hand
    assert router + "test_time_limit_falls_through" in fast
    assert "tests/launcher/test_gateway_cli.py::test_env_prints_the_recipe" in fast


@pytest.mark.parametrize("start", [
    lambda tmp_path: Gateway(tmp_path, None, None, expect_start=False),
    lambda tmp_path: FakeProcess(tmp_path, None),
    lambda tmp_path: agent_binary("claude", "Claude Code"),
], ids=["mitmdump", "fake provider", "agent CLI"])
def test_a_fast_test_that_starts_a_process_fails_and_says_how_to_mark_it(tmp_path, monkeypatch, start):
    monkeypatch.setattr(harness, "PROCESSES_ALLOWED", False)  # as under --fast
    with pytest.raises(pytest.fail.Exception, match=r"fast loop \(--fast\) never does: put it under tests/gateway/"):
        start(tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before anything started
