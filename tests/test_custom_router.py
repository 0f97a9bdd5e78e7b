"""The user's custom router: called with a time limit, fail open on errors, reloaded when edited."""

from __future__ import annotations

import time

import pytest

from addons.custom_router import CustomRouter, RouterContext

CONTEXT = RouterContext("claude", "s1", "anthropic", "anthropic", "claude-opus-4-8", None, ("think",))


@pytest.fixture
def router():
    r = CustomRouter()
    yield r
    r.close()


def write(path, code):
    path.write_text(code)
    return path


async def test_returns_the_target_and_sees_the_context(router, tmp_path):
    path = write(tmp_path / "r.py", "def route(request, context):\n"
                                    "    return f'openrouter:{context.agent}/{request[\"model\"]}'\n")
    outcome = await router.run(path, {"model": "m"}, CONTEXT, 2.0)
    assert (outcome.target, outcome.note) == ("openrouter:claude/m", None)


async def test_async_route_functions_work(router, tmp_path):
    path = write(tmp_path / "r.py", "import asyncio\nasync def route(request, context):\n"
                                    "    await asyncio.sleep(0)\n    return 'openrouter,x/y'\n")
    assert (await router.run(path, {}, CONTEXT, 2.0)).target == "openrouter,x/y"


async def test_time_limit_falls_through(router, tmp_path):
    path = write(tmp_path / "r.py", "import time\ndef route(request, context):\n    time.sleep(3)\n    return 'a:b'\n")
    started = time.monotonic()
    outcome = await router.run(path, {}, CONTEXT, 0.2)
    assert time.monotonic() - started < 1.5
    assert outcome.target is None and "took longer than 0.2 s" in outcome.note


@pytest.mark.parametrize("code,message", [
    ("def route(request, context):\n    raise KeyError('boom')\n", "raised KeyError"),
    ("def route(request, context):\n    return 42\n", "returned int"),
    ("def route(:\n", "raised SyntaxError"),
    ("def other():\n    pass\n", "defines no route"),
])
async def test_errors_are_logged_and_fall_through(router, tmp_path, caplog, code, message):
    path = write(tmp_path / "r.py", code)
    outcome = await router.run(path, {}, CONTEXT, 2.0)
    assert outcome.target is None and message in outcome.note
    assert message in caplog.text


def test_edits_are_picked_up_and_sync_calls_work(router, tmp_path):
    path = write(tmp_path / "r.py", "def route(request, context):\n    return 'a:one'\n")
    assert router.run_sync(path, {}, CONTEXT, 2.0).target == "a:one"
    time.sleep(0.01)
    write(path, "def route(request, context):\n    return 'a:second'\n")
    assert router.run_sync(path, {}, CONTEXT, 2.0).target == "a:second"
    assert router.run_sync(path, {}, CONTEXT, 2.0).note is None
