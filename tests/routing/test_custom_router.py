"""The user's custom router: called with a time limit, fail open on errors, reloaded when edited; a
router that is slow on some requests does not starve the others, and a hung one costs bounded threads."""

from __future__ import annotations

import concurrent.futures
import textwrap
import time

import httpx
import pytest
from harness import gateway_on_rules, trust
from mitmproxy import io

from addons.routing.custom_router import MAX_THREADS, WORKERS, CustomRouter, RouterContext

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


# ------------------------------------------------------------------ through a real gateway

ROUTER_RULES = textwrap.dedent("""\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai]}
    routes: {custom: router.py}
""")
# Sleeps (until the test releases it) when the prompt says "slow", answers at once otherwise.
SLOW_OR_FAST = """\
import os, time

def route(request, context):
    if "slow" in str(request.get("messages")):
        deadline = time.monotonic() + 60
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.02)
        return "openrouter:router/too-late"
    return "openrouter:router/fast-pick"
"""
ASYNC_ROUTER = """\
import asyncio

async def route(request, context):
    await asyncio.sleep(0.01)
    return "openrouter:router/async-pick"
"""


def router_gateway(workdir, fake, pki, *extra):
    workdir.mkdir(parents=True, exist_ok=True)
    release = workdir / "release"
    (workdir / "router.py").write_text(SLOW_OR_FAST.replace("{release!r}", repr(str(release))))
    gateway = gateway_on_rules(workdir, fake, pki, ROUTER_RULES, "--set", "clutch_router_timeout_ms=300", *extra)
    return gateway, release


def ask(client, model: str, prompt: str) -> str:
    """The model the fake provider was asked for, for one request with this prompt."""
    answer = client.post("https://openrouter.ai/api/v1/chat/completions", headers={"x-test-id": prompt},
                         json={"model": model, "messages": [{"role": "user", "content": prompt}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["model"]


def test_slow_router_calls_do_not_starve_the_fast_ones_and_async_routers_work(tmp_path, fake, pki):
    gateway, release = router_gateway(tmp_path, fake, pki)
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-qip"), verify=trust(gateway.ca_cert), trust_env=False,
                          timeout=30) as client:
            for n in range(6):  # more than the router's 4 threads, each left running past its limit
                assert ask(client, "agent/own", f"slow {n}") == "agent/own"  # fell through to the rules
            assert ask(client, "agent/own", "fast") == "router/fast-pick"  # still asked, and in time
            (tmp_path / "router.py").write_text(ASYNC_ROUTER)
            assert ask(client, "agent/own", "async") == "router/async-pick"
    finally:
        release.touch()
        gateway.stop()
    assert "custom router router.py took longer than 0.3 s" in gateway.output()


def test_past_the_thread_bound_the_router_is_not_asked_and_says_so(tmp_path, fake, pki):
    flows = tmp_path / "flows.mitm"
    gateway, release = router_gateway(tmp_path, fake, pki, "-w", str(flows))
    try:
        with httpx.Client(proxy=gateway.proxy_url("xx-qip"), verify=trust(gateway.ca_cert), trust_env=False,
                          timeout=30) as client, concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for batch in range(MAX_THREADS // WORKERS):  # each batch takes the 4 threads serving then
                prompts = [f"slow {batch}.{n}" for n in range(WORKERS)]
                assert set(pool.map(lambda p: ask(client, "agent/own", p), prompts)) == {"agent/own"}
            assert ask(client, "agent/own", "fast, but too late") == "agent/own"  # every thread is stuck
            release.touch()  # the slow calls end, and their threads serve again
            deadline = time.monotonic() + 10
            while ask(client, "agent/own", "fast again") != "router/fast-pick":
                assert time.monotonic() < deadline, "the router was never asked again"
    finally:
        release.touch()
        gateway.stop()
    output = gateway.output()
    assert f"custom router router.py not asked: {MAX_THREADS} earlier calls are still running" in output
    assert "custom router router.py is asked again" in output
    with open(flows, "rb") as f:
        saved = [flow for flow in io.FlowReader(f).stream() if flow.request.path.endswith("/chat/completions")]
    refused = next(flow for flow in saved if flow.request.headers.get("x-test-id") == "fast, but too late")
    assert any("not asked" in note for note in refused.metadata["clutch.route"]["notes"])
    assert "not asked" in refused.comment
