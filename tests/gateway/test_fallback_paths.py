"""Failures as agents see them, through a real gateway (mitmdump -s addons/clutch.py), the official SDKs
and the fake provider: every fallback method sends what it should, the model that answered is the one
booked, silent and slow streams, forced tool calls in streams, the error when every candidate fails,
404s, and honest outcomes for cut, timed-out, aborted and retried requests."""

from __future__ import annotations

import json
import secrets
import socket
import textwrap
import time

import anthropic
import httpx
import httpx2
import openai
import pytest
from harness import MITMDUMP, MITMWEB, gateway_on_rules, trust

from addons.wire.identity import Identity, username_for
from launcher.tables import WatchLayout, render_request

PROVIDERS = """\
    version: 1
    providers:
      openrouter: {base_url: "https://openrouter.ai/api/v1", dialects: [openai_chat], hosts: [openrouter.ai],
                   key_env: OPENROUTER_API_KEY}
      anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
                  key_env: ANTHROPIC_API_KEY}
      misplaced: {base_url: "https://api.openai.com/no/such/path/v1", dialects: [openai_chat],
                  key_env: OPENAI_API_KEY}
      openai: null  # the defaults' provider at the same host
    compression: {mode: "off"}
"""
ENV = {"OPENROUTER_API_KEY": "sk-or-v1-rules", "ANTHROPIC_API_KEY": "sk-ant-api03-rules",
       "OPENAI_API_KEY": "sk-proj-rules"}
OPTIONS = {"clutch_retries": 0, "clutch_sticky_ms": 0, "clutch_silence_timeout_ms": 1000,
           "clutch_first_token_timeout_ms": 8000, "clutch_idle_timeout_ms": 6000}


def start(workdir, fake, pki, body: str, tool: str = MITMDUMP, **options):
    settings = {**OPTIONS, "clutch_state_dir": workdir / "state", **options}
    args = [arg for name, value in settings.items() for arg in ("--set", f"{name}={value}")]
    return gateway_on_rules(workdir, fake, pki, textwrap.dedent(PROVIDERS) + textwrap.dedent(body), *args, env=ENV,
                            tool=tool)


def chat(gateway, session: str | None = None, key="sk-or-v1-agent") -> openai.OpenAI:
    client = httpx2.Client(proxy=gateway.proxy_url(username_for(Identity(agent="opencode", session=session))),
                           verify=trust(gateway.ca_cert), timeout=30)
    return openai.OpenAI(base_url="https://openrouter.ai/api/v1", api_key=key, http_client=client, max_retries=0)


def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-api03-agent", max_retries=0, http_client=httpx2.Client(
        proxy=gateway.proxy_url(username_for(Identity(agent="claude"))), verify=trust(gateway.ca_cert), timeout=30))


def ask(client: openai.OpenAI, model: str, stream: bool = False, **extra):
    """A chat request through the gateway: (headers, text)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, stream=stream, messages=[{"role": "user", "content": extra.pop("prompt", "hi")}], **extra)
    answer = raw.parse()
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    else:
        text = answer.choices[0].message.content
    return raw.headers, text


def calls(fake, prefix: str) -> list[dict]:
    return [e for e in fake.entries() if (e.get("model") or "").startswith(prefix)
            or ((e.get("native") or {}).get("asked") or "").startswith(prefix)]


# ---------------------------------------------------------------- 1. every fallback method


@pytest.mark.parametrize("method", ["cascade", "openrouter_native", "both"])
def test_each_fallback_method_sends_what_it_says(tmp_path, fake, pki, method):
    """The provider's log is the proof: `cascade` asks model by model with no `models` list; the native
    methods send one request whose `models` list OpenRouter falls back along (the fake does as OpenRouter
    documents), and the agent is served either way, booked to the model that answered."""
    prefix = f"n1{method[:2]}"
    gateway = start(tmp_path, fake, pki, f"""\
        cascades:
          "openrouter:{prefix}/fail-429": ["openrouter:{prefix}/chunks-2", "openrouter:{prefix}/chunks-3"]
        fallback: {{method: {method}}}
    """)
    try:
        headers, text = ask(chat(gateway), f"{prefix}/fail-429", stream=True)
        assert text == "pong from the fake upstream"
        assert headers["x-clutch-model"] == f"openrouter:{prefix}/chunks-2"
        sent = [e["request_json"] for e in calls(fake, f"{prefix}/")]
        if method == "cascade":
            assert [b["model"] for b in sent] == [f"{prefix}/fail-429", f"{prefix}/chunks-2"]
            assert all("models" not in b and "provider" not in b for b in sent)
        else:
            assert len(sent) == 1, sent  # OpenRouter itself went down the list
            assert sent[0]["models"] == [f"{prefix}/fail-429", f"{prefix}/chunks-2", f"{prefix}/chunks-3"]
            assert sent[0]["provider"] == {"sort": "throughput"}
            assert headers["x-clutch-attempts"] == "2"  # the primary failed at OpenRouter, its fallback answered
    finally:
        gateway.stop()


# ---------------------------------------------------------------- 2. the model that served


def test_openrouter_fallback_is_booked_to_the_model_that_answered(tmp_path, fake, pki):
    """With `both`, a primary that always answers 429 is moved past by OpenRouter: the header, the
    journal, the usage rows, the breakers and the flow's trail name the model that answered, and the
    primary's failures count until its breaker opens and it leaves the `models` list."""
    gateway = start(tmp_path, fake, pki, """\
        cascades:
          "openrouter:n2/fail-429": ["openrouter:n2/good"]
        fallback: {method: both}
    """, save_stream_file=tmp_path / "flows.out")
    try:
        client = chat(gateway)
        for stream in (True, False, True):
            headers, text = ask(client, "n2/fail-429", stream=stream)
            assert headers["x-clutch-model"] == "openrouter:n2/good" and text == "pong from the fake upstream"
        state = gateway.local("/resilience")["breakers"]
        assert state["openrouter:n2/fail-429"]["state"] == "open"  # three failures at OpenRouter
        assert state.get("openrouter:n2/good", {"state": "closed"})["state"] == "closed"
        headers, _ = ask(client, "n2/fail-429")
        assert headers["x-clutch-attempts"] == "1"
        assert calls(fake, "n2/")[-1]["request_json"].get("models") is None  # the open primary is left out
        rows = gateway.usage_rows(requested_model="n2/fail-429")
        served = [r for r in rows if r["served"]]
        assert [r["model"] for r in served] == ["n2/good"] * 4 and all(r["fallback"] for r in served)
        assert all(r["input_tokens"] and r["output_tokens"] for r in served)
        primary = [r for r in rows if r["model"] == "n2/fail-429"]
        assert len(primary) == 3 and all(r["outcome"] == "failed" and not r["input_tokens"] for r in primary)
        assert all(r["error_class"] == "openrouter_fallback" for r in primary)
        by_model = {r["key"]: r for r in gateway.local("/usage?by=model")["rows"]}
        assert by_model["openrouter:n2/fail-429"]["failed_attempts"] == 3
        assert by_model["openrouter:n2/fail-429"]["input_tokens"] == 0
        entries = gateway.journal("n2/fail-429", count=4)
        assert [e["served_by"] for e in entries] == ["openrouter:n2/good"] * 4 and all(e["fallback"] for e in entries)
    finally:
        gateway.stop()
    from mitmproxy import io
    with open(tmp_path / "flows.out", "rb") as saved:
        flows = [f for f in io.FlowReader(saved).stream() if "n2/fail-429" in f.comment]
    assert flows and "OpenRouter fallback" in flows[0].comment and "failed at OpenRouter" in flows[0].comment
    assert flows[0].marked == ":repeat:"  # mitmweb's marker: a fallback answered


def test_mitmweb_lists_an_openrouter_fallback_with_its_marker(tmp_path, fake, pki):
    """The same fallback under a real `mitmweb -s addons/clutch.py`: its flow list (GET /flows, the JSON
    the UI reads) shows the engine's marker, as mitmweb renders it (the emoji of ":repeat:"), and the
    comment naming the fallback model. mitmweb 12 refuses its API without the web password (sent as a
    bearer token, as its option's help says), and never prints a password it was given."""
    password, web_port = secrets.token_hex(16), _free_port()
    gateway = start(tmp_path, fake, pki, """\
        cascades:
          "openrouter:nw/fail-429": ["openrouter:nw/good"]
        fallback: {method: both}
    """, tool=MITMWEB, web_host="127.0.0.1", web_port=web_port, web_open_browser="false", web_password=password)
    web = f"http://127.0.0.1:{web_port}"
    try:
        headers, text = ask(chat(gateway), "nw/fail-429", stream=True)
        assert headers["x-clutch-model"] == "openrouter:nw/good" and text == "pong from the fake upstream"
        assert httpx.get(f"{web}/flows", trust_env=False, timeout=10).status_code == 403
        deadline, flow = time.monotonic() + 10, None
        while flow is None or not flow["marked"]:  # mitmweb updates its list when the hooks have run
            assert time.monotonic() < deadline, f"mitmweb lists no marked flow: {flow and flow['comment']}"
            listed = httpx.get(f"{web}/flows", headers={"authorization": f"Bearer {password}"}, trust_env=False,
                               timeout=10)
            assert listed.status_code == 200
            flow = next((f for f in listed.json() if "nw/fail-429" in (f.get("comment") or "")), None)
            time.sleep(0.05)
        assert flow["marked"] == "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"  # ":repeat:"
        assert flow["request"]["host"] == "openrouter.ai" and flow["response"]["status_code"] == 200
        assert "served by openrouter:nw/good (OpenRouter fallback)" in flow["comment"]
    finally:
        gateway.stop()
    assert password not in gateway.output() and "Traceback" not in gateway.output()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- 3. silent and slow streams


@pytest.fixture(scope="module")
def stalls(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("stalls"), fake, pki, """\
        cascades:
          "openrouter:s1/hang-after-headers": ["openrouter:s1/chunks-2"]
          "anthropic:s2/hang-after-headers": ["anthropic:s2/good"]
          "openrouter:s3/first-token-2500": ["openrouter:s3/chunks-2"]
          "openrouter:s4/first-token-60000": ["openrouter:s4/chunks-2"]
        fallback: {method: cascade}
    """, clutch_first_token_timeout_ms=4000)
    yield gateway
    gateway.stop()


def test_a_model_that_answers_200_and_then_sends_nothing_is_replaced(stalls, fake):
    started = time.monotonic()
    headers, text = ask(chat(stalls), "s1/hang-after-headers", stream=True)
    assert text == "pong from the fake upstream" and headers["x-clutch-model"] == "openrouter:s1/chunks-2"
    assert time.monotonic() - started > 0.9  # the silence limit (1 s) passed first
    assert fake.wait_for(lambda e: e.get("model") == "s1/hang-after-headers")["outcome"] == "aborted"
    rows = stalls.usage_rows(requested_model="s1/hang-after-headers")
    assert [(r["outcome"], r["error_class"]) for r in rows] == [("failed", "timeout_silent"), ("success", None)]


def test_a_silent_anthropic_stream_is_replaced_for_claude(stalls, fake):
    started = time.monotonic()
    with claude(stalls).messages.stream(model="anthropic:s2/hang-after-headers", max_tokens=64,
                                        messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        served = stream.response.headers["x-clutch-model"]
    assert text == "pong from the fake upstream" and served == "anthropic:s2/good"
    assert time.monotonic() - started > 0.9
    rows = stalls.usage_rows(requested_model="anthropic:s2/hang-after-headers")
    assert [r["error_class"] for r in rows] == ["timeout_silent", None]


def test_a_slow_but_alive_model_is_still_served(stalls, fake):
    """Keep-alives for 2.5 s, then the answer: past the silence limit, within the first-token limit."""
    started = time.monotonic()
    headers, text = ask(chat(stalls), "s3/first-token-2500", stream=True)
    assert text == "pong from the fake upstream" and headers["x-clutch-model"] == "openrouter:s3/first-token-2500"
    assert time.monotonic() - started >= 2.4


def test_keep_alives_without_a_token_are_replaced_at_the_first_token_limit(stalls, fake):
    started = time.monotonic()
    headers, text = ask(chat(stalls), "s4/first-token-60000", stream=True)
    assert text == "pong from the fake upstream" and headers["x-clutch-model"] == "openrouter:s4/chunks-2"
    assert time.monotonic() - started > 3.9
    rows = stalls.usage_rows(requested_model="s4/first-token-60000")
    assert [(r["outcome"], r["error_class"]) for r in rows] == [("failed", "timeout_first_token"), ("success", None)]


def test_the_last_candidate_alive_is_committed_at_the_first_token_limit_and_served(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, "fallback: {method: cascade}\n", clutch_first_token_timeout_ms=1000)
    try:
        client = httpx.Client(proxy=gateway.proxy_url(), verify=trust(gateway.ca_cert), timeout=20)
        with client.stream("POST", "https://openrouter.ai/api/v1/chat/completions",
                           json={"model": "s5/first-token-3000", "stream": True,
                                 "messages": [{"role": "user", "content": "x"}]}) as response:
            body = b"".join(response.iter_raw()).decode()
        assert response.status_code == 200 and "pong" in body and "[DONE]" in body
        row = gateway.usage_rows(requested_model="s5/first-token-3000")[-1]
        # committed at the first-token limit (1 s), before the token (3 s): the agent waited with Clutch
        assert row["outcome"] == "success" and 1000 <= row["ttft_ms"] < 3000
    finally:
        gateway.stop()


# ---------------------------------------------------------------- 4. forced tool calls in streams

TOOLS = [{"type": "function", "function": {"name": "Bash", "description": "run a command",
                                           "parameters": {"type": "object", "properties": {
                                               "command": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def tools(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("tools"), fake, pki, """\
        cascades:
          "openrouter:t1/ignores-tools": ["openrouter:t1/good"]
          "anthropic:t3/ignores-tools": ["anthropic:t3/good"]
        fallback: {method: cascade}
    """)
    yield gateway
    gateway.stop()


def test_a_streamed_answer_without_the_forced_tool_call_moves_on(tools, fake):
    raw = chat(tools).chat.completions.with_raw_response.create(
        model="t1/ignores-tools", stream=True, tools=TOOLS, tool_choice="required",
        messages=[{"role": "user", "content": 'use-tool:Bash:{"command":"ls"}'}])
    calls_seen = [c.choices[0].delta.tool_calls for c in raw.parse() if c.choices and c.choices[0].delta.tool_calls]
    assert raw.headers["x-clutch-model"] == "openrouter:t1/good"
    assert calls_seen and calls_seen[0][0].function.name == "Bash"
    rows = tools.usage_rows(requested_model="t1/ignores-tools")
    assert [(r["model"], r["outcome"], r["error_class"]) for r in rows] == [
        ("t1/ignores-tools", "soft_failure", "no_tool_call"), ("t1/good", "success", None)]


def test_claude_code_forced_tool_stream_moves_on_too(tools, fake):
    with claude(tools).messages.stream(
            model="anthropic:t3/ignores-tools", max_tokens=64, tool_choice={"type": "any"},
            tools=[{"name": "Bash", "input_schema": {"type": "object", "properties": {}}}],
            messages=[{"role": "user", "content": "use-tool:Bash"}]) as stream:
        message = stream.get_final_message()
        served = stream.response.headers["x-clutch-model"]
    assert served == "anthropic:t3/good" and message.content[0].type == "tool_use"


def test_text_before_a_forced_tool_call_is_held_until_the_call_begins(tools, fake):
    """The answer opens with text (3 pieces, 0.3 s apart) and then calls the tool: nothing reaches the
    agent before the call begins, then everything does, text included."""
    client = httpx.Client(proxy=tools.proxy_url(), verify=trust(tools.ca_cert), timeout=20)
    started = time.monotonic()
    with client.stream("POST", "https://openrouter.ai/api/v1/chat/completions", json={
            "model": "t2/text-before-tool-delay-300", "stream": True, "tools": TOOLS, "tool_choice": "required",
            "messages": [{"role": "user", "content": 'use-tool:Bash:{"command":"ls"}'}]}) as response:
        pieces = response.iter_raw()
        first = next(pieces)
        waited = time.monotonic() - started
        body = (first + b"".join(pieces)).decode()
    assert waited >= 0.85  # the text was held, not sent as it came
    row = tools.usage_rows(requested_model="t2/text-before-tool-delay-300")[-1]
    assert row["ttft_ms"] >= 850  # measured from the attempt's start: committed at the call, after the text
    assert '"tool_calls"' in body and '"content":"pong' in body


# ---------------------------------------------------------------- 5. every candidate failing


@pytest.fixture(scope="module")
def failing(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("failing"), fake, pki, """\
        cascades:
          "openrouter:a1/fail-500": ["openrouter:a1/fail-429", "anthropic:a1/fail-529"]
          "openrouter:a2/fail-500": ["openrouter:a2/fail-429", "anthropic:a2/fail-529"]
          "openrouter:m1/fail-404": ["openrouter:m1/good"]
          "misplaced:m3/good": ["openrouter:m3/good"]
        fallback: {method: cascade}
    """)
    yield gateway
    gateway.stop()


def test_when_every_candidate_fails_the_error_names_each_one(failing, fake):
    with pytest.raises(openai.RateLimitError) as error:
        ask(chat(failing), "a1/fail-500")
    message = error.value.message
    for part in ("openrouter:a1/fail-500: HTTP 500", "openrouter:a1/fail-429: HTTP 429",
                 "anthropic:a1/fail-529: HTTP 529", "3 candidates tried"):
        assert part in message, message
    response = error.value.response
    assert response.headers["x-clutch-attempts"] == "3"
    assert 1 <= int(response.headers["retry-after"]) <= 60  # when the rate-limited model frees up


def test_claude_code_gets_the_same_in_anthropic_shape(failing, fake):
    with pytest.raises(anthropic.RateLimitError) as error:
        claude(failing).messages.create(model="openrouter:a2/fail-500", max_tokens=16,
                                        messages=[{"role": "user", "content": "hi"}])
    body = error.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "anthropic:a2/fail-529" in body["error"]["message"] and "openrouter:a2/fail-500" in body["error"]["message"]
    assert int(error.value.response.headers["retry-after"]) >= 1


# ---------------------------------------------------------------- 6. configuration mistakes


def test_a_404_moves_on_and_never_opens_its_breaker(failing, fake):
    for _ in range(4):
        headers, _ = ask(chat(failing), "m1/fail-404")
        assert headers["x-clutch-model"] == "openrouter:m1/good"
    assert len([e for e in calls(fake, "m1/fail-404")]) == 4  # asked every time: no breaker opened
    breakers = failing.local("/resilience")["breakers"]
    assert breakers.get("openrouter:m1/fail-404", {"state": "closed"})["state"] == "closed"


def test_a_404_is_not_retried_and_the_error_names_target_and_url(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, "fallback: {method: cascade}\n", clutch_retries=2)
    try:
        with pytest.raises(openai.NotFoundError) as error:
            ask(chat(gateway), "openrouter:m2/fail-404")
        assert len(calls(fake, "m2/")) == 1  # not retried
        message = error.value.message
        assert "openrouter:m2/fail-404" in message and "https://openrouter.ai/api/v1/chat/completions" in message
        assert "configuration" in message
        # the log names target and URL too, though this provider's 404 body names neither
        logged = [line for line in gateway.output().splitlines() if "answered 404" in line]
        assert logged and "openrouter:m2/fail-404" in logged[0]
        assert "https://openrouter.ai/api/v1/chat/completions" in logged[0]
    finally:
        gateway.stop()


def test_a_wrong_base_url_names_the_url_that_answered_404(failing, fake):
    headers, text = ask(chat(failing), "misplaced:m3/good")
    assert headers["x-clutch-model"] == "openrouter:m3/good"  # the next candidate served
    rows = failing.usage_rows(requested_model="misplaced:m3/good")
    assert [(r["model"], r["status"], r["error_class"]) for r in rows][0] == ("m3/good", 404, "status")
    breakers = failing.local("/resilience")["breakers"]
    assert breakers.get("misplaced:m3/good", {"state": "closed"})["state"] == "closed"
    assert "no/such/path/v1/chat/completions" in failing.output()  # the log names the URL to fix


# ---------------------------------------------------------------- 7. honest outcomes


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, fake, pki):
    gateway = start(tmp_path_factory.mktemp("outcomes"), fake, pki, """\
        cascades:
          "openrouter:o4/empty": ["openrouter:o4/good"]
        fallback: {method: cascade}
    """, clutch_retries=1)
    yield gateway
    gateway.stop()


def test_a_cut_stream_is_shown_as_cut_and_its_tokens_estimated(outcomes, fake):
    text = ""
    with pytest.raises(openai.APIError) as error:
        for chunk in chat(outcomes).chat.completions.create(
                model="o1/stream-cut-delay-100", stream=True, messages=[{"role": "user", "content": "x"}]):
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert text and "cut" in str(error.value)  # the agent learns the answer is incomplete
    entry = outcomes.journal("o1/stream-cut-delay-100")[-1]
    assert (entry["status"], entry["outcome"], entry["error"]) == (200, "broken", "stream_cut")
    assert " cut " in render_request(entry, WatchLayout.for_width(80))  # the line `xx watch` prints for it
    row = outcomes.usage_rows(requested_model="o1/stream-cut-delay-100")[-1]
    assert (row["outcome"], row["error_class"], row["served"]) == ("broken", "stream_cut", True)
    assert row["tokens_estimated"] and row["output_tokens"] > 0, json.dumps(row)


def test_an_aborted_stream_is_shown_as_aborted(outcomes, fake):
    client = httpx.Client(proxy=outcomes.proxy_url(), verify=trust(outcomes.ca_cert), timeout=20)
    with client.stream("POST", "https://openrouter.ai/api/v1/chat/completions",
                       json={"model": "o2/slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}) \
            as response:
        next(response.iter_raw())  # the first piece, then the agent goes away
    client.close()
    fake.wait_for(lambda e: e.get("model") == "o2/slow")
    entries = outcomes.journal("o2/slow")
    assert entries and entries[-1]["outcome"] == "aborted", json.dumps(entries)
    assert " aborted " in render_request(entries[-1], WatchLayout.for_width(80))
    row = outcomes.usage_rows(requested_model="o2/slow")[-1]
    assert row["outcome"] == "aborted" and row["tokens_estimated"] and row["output_tokens"] is not None


def test_a_retry_of_the_same_model_is_not_a_fallback(outcomes, fake):
    headers, text = ask(chat(outcomes), "o3/once-429")
    assert text == "pong from the fake upstream" and headers["x-clutch-attempts"] == "2"
    rows = outcomes.usage_rows(requested_model="o3/once-429")
    assert [(r["outcome"], r["fallback"]) for r in rows] == [("failed", False), ("success", False)]
    entry = outcomes.journal("o3/once-429")[-1]
    assert entry["fallback"] is False and entry["attempts"] == 2


def test_the_usage_an_empty_answer_reported_is_kept(outcomes, fake):
    ask(chat(outcomes), "o4/empty", stream=True)
    empty, good = outcomes.usage_rows(requested_model="o4/empty")
    assert (empty["outcome"], empty["error_class"]) == ("soft_failure", "empty")
    assert empty["input_tokens"] and empty["output_tokens"] is not None and not empty["tokens_estimated"]
    assert good["outcome"] == "success"


def test_an_idle_timeout_after_the_commit_point_is_shown(tmp_path, fake, pki):
    """The first piece comes at once (committed), the next after 3 s: past the 1 s idle timeout."""
    gateway = start(tmp_path, fake, pki, "fallback: {method: cascade}\n", clutch_idle_timeout_ms=1000)
    model = "o5/chunks-3-delay-3000"
    try:
        text = ""
        with pytest.raises(openai.APIError) as error:
            for chunk in chat(gateway).chat.completions.create(
                    model=model, stream=True, messages=[{"role": "user", "content": "x"}]):
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        assert text and "upstream sent nothing for 1 s" in str(error.value)
        entries = gateway.journal(model)
        assert (entries[-1]["outcome"], entries[-1]["error"]) == ("broken", "timeout_idle")
        assert gateway.usage_rows(requested_model=model)[-1]["outcome"] == "broken"
    finally:
        gateway.stop()



# ---------------------------------------------------------------- what a review found


def test_with_both_a_stalled_openrouter_stream_is_still_replaced(tmp_path, fake, pki):
    """OpenRouter's `models` list names the next model too, but a stall means OpenRouter never went down
    the list: Clutch's own cascade moves on at the silence limit."""
    gateway = start(tmp_path, fake, pki, """\
        cascades:
          "openrouter:b1/hang-after-headers": ["openrouter:b1/good"]
        fallback: {method: both}
    """)
    try:
        headers, text = ask(chat(gateway), "b1/hang-after-headers", stream=True)
        assert text == "pong from the fake upstream" and headers["x-clutch-model"] == "openrouter:b1/good"
        rows = gateway.usage_rows(requested_model="b1/hang-after-headers")
        assert [(r["model"], r["error_class"]) for r in rows] == [("b1/hang-after-headers", "timeout_silent"),
                                                                  ("b1/good", None)]
    finally:
        gateway.stop()


def test_a_model_named_after_the_commit_is_still_the_one_booked(tmp_path, fake, pki):
    """OpenRouter sends only comments until its model's first chunk: the last candidate is committed on
    them (x-clutch-model can only name the model asked for), and the model the stream then names is the
    one the usage row, the journal and the breakers book."""
    gateway = start(tmp_path, fake, pki, """\
        cascades:
          "openrouter:d1/fail-429": ["openrouter:d1/first-token-3000"]
        fallback: {method: openrouter_native}
    """, clutch_first_token_timeout_ms=1000)
    try:
        headers, text = ask(chat(gateway), "d1/fail-429", stream=True)
        assert text == "pong from the fake upstream"
        rows = gateway.usage_rows(requested_model="d1/fail-429")
        assert [(r["model"], r["outcome"], r["served"]) for r in rows] == [
            ("d1/fail-429", "failed", False), ("d1/first-token-3000", "success", True)]
        assert gateway.journal("d1/fail-429")[-1]["served_by"] == "openrouter:d1/first-token-3000"
        assert gateway.local("/resilience")["breakers"]["openrouter:d1/fail-429"]["failures"] == 1
    finally:
        gateway.stop()


def test_an_agent_that_leaves_before_the_headers_is_recorded_as_aborted(outcomes, fake):
    with httpx.Client(proxy=outcomes.proxy_url(), verify=trust(outcomes.ca_cert), timeout=1.0) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("https://openrouter.ai/api/v1/chat/completions",
                        json={"model": "o6/hang", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert fake.wait_for(lambda e: e.get("model") == "o6/hang")["outcome"] == "aborted"
    entries = outcomes.journal("o6/hang")
    assert entries and entries[-1]["outcome"] == "aborted", json.dumps(entries)
    assert outcomes.usage_rows(requested_model="o6/hang")[-1]["outcome"] == "aborted"


def test_a_last_candidate_committed_on_keep_alives_ends_if_no_token_follows(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, "fallback: {method: cascade}\n", clutch_first_token_timeout_ms=500,
                    clutch_idle_timeout_ms=1500)
    try:
        with pytest.raises(openai.APIError) as error:
            for _ in chat(gateway).chat.completions.create(
                    model="o7/first-token-60000", stream=True, messages=[{"role": "user", "content": "x"}]):
                pass
        assert "only keep-alives" in str(error.value)
        entry = gateway.journal("o7/first-token-60000")[-1]
        assert (entry["outcome"], entry["error"]) == ("broken", "timeout_first_token")
        assert fake.wait_for(lambda e: e.get("model") == "o7/first-token-60000")["outcome"] == "aborted"
    finally:
        gateway.stop()


def test_a_silent_last_candidate_after_a_silent_one_is_a_504(tmp_path, fake, pki):
    gateway = start(tmp_path, fake, pki, """\
        cascades:
          "openrouter:h1/hang-after-headers": ["openrouter:h2/hang-after-headers"]
        fallback: {method: cascade}
    """, clutch_idle_timeout_ms=2000)
    try:
        with pytest.raises(openai.APIStatusError) as error:
            ask(chat(gateway), "h1/hang-after-headers", stream=True)
        assert error.value.status_code == 504
        assert "openrouter:h1/hang-after-headers" in error.value.message
        assert "openrouter:h2/hang-after-headers" in error.value.message
    finally:
        gateway.stop()


def test_an_answer_that_is_json_but_no_object_is_a_failure():
    from addons.upstream.attempts import _judge_whole
    from addons.routing.plan import Plan
    from addons.wire.dialects import Dialect
    plan = Plan("openrouter", "https://x/", [], b"", "m", Dialect.OPENAI_CHAT, Dialect.OPENAI_CHAT, False, "agent")
    assert _judge_whole(plan, b"[1]", [1]).kind == "error_in_200"


def test_openrouter_names_a_versioned_model_by_its_longest_entry():
    from addons.upstream.relay import listed_index
    assert listed_index(["openai/gpt-5", "openai/gpt-5-mini"], "openai/gpt-5-mini-2025-08-07") == 1
    assert listed_index(["openai/gpt-5", "openai/gpt-5-mini"], "openai/gpt-5-2025-08-07") == 0
    assert listed_index(["qwen/qwen3-coder:free", "x/y"], "qwen/qwen3-coder") == 0
    assert listed_index(["a/b", "c/d"], "e/f") is None


def test_an_agent_is_told_not_to_retry_when_nothing_frees_up_soon(tmp_path, fake, pki):
    """After its breaker opened, the only model is refused for about a minute: the agent's SDK is told not
    to retry (x-should-retry: false), so its user reads why at once instead of minutes of silent retries;
    a short wait (a 429's Retry-After of 2 s) leaves the SDK's own retry alone."""
    gateway = start(tmp_path, fake, pki, "fallback: {method: cascade}\n", clutch_breaker_failures=1)
    try:
        client = chat(gateway).with_options(max_retries=3)
        with pytest.raises(openai.InternalServerError):
            chat(gateway).chat.completions.create(model="x1/fail-500", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="x1/fail-500", messages=[{"role": "user", "content": "x"}])
        response = refused.value.response
        assert refused.value.status_code == 503 and response.headers["x-should-retry"] == "false"
        assert int(response.headers["retry-after"]) > 30
        assert len(gateway.journal("x1/fail-500", count=2)) == 2  # the SDK did not retry
        with pytest.raises(openai.RateLimitError) as limited:
            chat(gateway).chat.completions.create(model="x2/fail-429", messages=[{"role": "user", "content": "x"}])
        assert "x-should-retry" not in limited.value.response.headers
    finally:
        gateway.stop()
