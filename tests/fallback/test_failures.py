"""Tests of addons/fallback/policy.py, checks.py, stream_watch.py and retry_after.py: every fault of the fake
upstream, fetched over HTTP in every dialect, streamed and whole, classified from the real bytes; then the
shapes the fake does not produce, built by hand."""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import json
import re
import time

import httpx
import pytest
import pytest_asyncio
from fake_upstream import SLOW_CHUNKS, FakeUpstream, split_answer

from addons.fallback import checks, policy
from addons.fallback.checks import from_answer
from addons.fallback.policy import Failure, from_status, from_transport
from addons.fallback.stream_watch import StreamWatch
from addons.translate.errors import translate_error
from addons.wire.dialects import Dialect

ANSWER = "pong from the fake upstream"
ROUTES = ("openrouter", "openai", "anthropic", "responses", "gemini")
DIALECT = {"openrouter": Dialect.OPENAI_CHAT, "openai": Dialect.OPENAI_CHAT, "anthropic": Dialect.ANTHROPIC,
           "responses": Dialect.OPENAI_RESPONSES, "gemini": Dialect.GEMINI}
SCHEMA = {"type": "object", "properties": {}}
TOOLS = {"openrouter": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
         "openai": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
         "anthropic": [{"name": "get_weather", "input_schema": SCHEMA}],
         "responses": [{"type": "function", "name": "get_weather", "parameters": SCHEMA}],
         "gemini": [{"functionDeclarations": [{"name": "get_weather", "parameters": SCHEMA}]}]}
FORCED = {"openrouter": {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
          "openai": {"tool_choice": "required"},
          "anthropic": {"tool_choice": {"type": "any"}},
          "responses": {"tool_choice": "required"},
          "gemini": {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}}
TOOL_MARKERS = ("call_fake_1", "toolu_fake_1", "functionCall")  # what the first event of a tool call names


@dataclasses.dataclass
class Wire:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    request: dict


@pytest_asyncio.fixture
async def upstream():
    fake = FakeUpstream(answer=ANSWER, slow_delay=0.005)  # `slow`: its ten pieces matter here, not their pace
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest_asyncio.fixture
async def http():
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def build(route: str, model: str, stream: bool, text: str = "ping", tools: bool = False,
          forced: bool = False) -> tuple[str, dict]:
    """The path and body of one request in the route's dialect."""
    if route == "gemini":
        path = f"/v1beta/models/g-{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        body: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    elif route == "responses":
        path, body = "/v1/responses", {"model": f"fake/{model}", "input": [{"role": "user", "content": text}],
                                       "stream": stream}
    else:
        path = {"openrouter": "/api/v1/chat/completions", "openai": "/v1/chat/completions",
                "anthropic": "/v1/messages"}[route]
        body = {"model": f"fake/{model}", "max_tokens": 50, "messages": [{"role": "user", "content": text}],
                "stream": stream}
    if tools:
        body["tools"] = TOOLS[route]
    if forced:
        body.update(FORCED[route])
    return path, body


async def fetch(http: httpx.AsyncClient, fake: FakeUpstream, route: str, model: str, stream: bool,
                **options) -> Wire:
    path, body = build(route, model, stream, **options)
    async with http.stream("POST", fake.url + path, json=body) as r:
        raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return Wire(r.status_code, list(r.headers.raw), raw, body)


def events_of(raw: bytes) -> list[bytes]:
    """The stream cut after every blank line (one SSE event or comment per piece)."""
    return [piece for piece in re.split(rb"(?<=\r\n\r\n)|(?<=\n\n)", raw) if piece]


def watch_each(route: str, wire: Wire) -> tuple[StreamWatch, int | None, int | None, list[bytes]]:
    """Feed a stream event by event: the watch, the piece at which it became meaningful, and the piece at
    which its failure appeared."""
    watch = StreamWatch(DIALECT[route], wire.request)
    pieces = events_of(wire.body)
    meaningful_at = failed_at = None
    for i, piece in enumerate(pieces):
        watch.feed(piece)
        if watch.meaningful and meaningful_at is None:
            meaningful_at = i
        if watch.failure is not None and failed_at is None:
            failed_at = i
    return watch, meaningful_at, failed_at, pieces


def bytewise(route: str, wire: Wire) -> StreamWatch:
    watch = StreamWatch(DIALECT[route], wire.request)
    for i in range(len(wire.body)):
        watch.feed(wire.body[i:i + 1])
    return watch


def until_utc_midnight() -> float:
    tomorrow = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)
    return datetime.datetime.combine(tomorrow, datetime.time(), datetime.UTC).timestamp() - time.time()


# ---------------------------------------------------------------- error statuses from the fake


ERROR_FAULTS = {  # fault: (status, retryable, counts_for_breaker, retry_after_s or "midnight")
    "fail-429": (429, True, True, 2.0),
    "rampup-429": (429, True, True, 2.0),
    "daily-cap-429": (429, True, True, "midnight"),
    "fail-401": (401, False, False, None),
    "fail-500": (500, True, True, None),
    "fail-502": (502, True, True, None),
    "fail-503": (503, True, True, 2.0),
    "fail-529": (529, True, True, 2.0),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fault", list(ERROR_FAULTS))
async def test_error_statuses_of_every_dialect(upstream, http, fault, route, stream):
    wire = await fetch(http, upstream, route, fault, stream)
    status, retryable, counts, wait = ERROR_FAULTS[fault]
    assert wire.status == status
    failure = from_status(wire.status, wire.headers, wire.body, key_from_rules=False)
    assert failure is not None and failure.kind == "status" and failure.status == status
    assert not failure.soft and failure.body == wire.body
    assert failure.message.startswith(f"HTTP {status}: ") and len(failure.message) <= policy.MAX_MESSAGE + 3
    free_cap = fault == "daily-cap-429" and route == "openrouter"  # only OpenRouter's free-models-per-day
    routing = fault == "fail-503" and route == "openrouter"  # "No allowed providers are available ..."
    assert failure.free_daily_cap is free_cap
    assert failure.routing is routing
    assert failure.rampup is (fault == "rampup-429")
    assert failure.retryable is retryable
    assert failure.counts_for_breaker is (counts and not free_cap and not routing)
    if wait == "midnight":
        assert failure.retry_after_s == pytest.approx(until_utc_midnight(), abs=3)
    else:
        assert failure.retry_after_s == wait
    assert policy.retry_after_header(failure) == (None if failure.retry_after_s is None
                                                    else str(int(-(-failure.retry_after_s // 1))))
    if free_cap:
        assert "free-models-per-day" in failure.message


@pytest.mark.parametrize("route", ROUTES)
async def test_a_key_from_the_rules_makes_401_retryable(upstream, http, route):
    wire = await fetch(http, upstream, route, "fail-401", False)
    agents = from_status(401, wire.headers, wire.body, key_from_rules=False)
    rules = from_status(401, wire.headers, wire.body, key_from_rules=True)
    assert (agents.retryable, agents.counts_for_breaker) == (False, False)  # the agent's own key stays bad
    assert (rules.retryable, rules.counts_for_breaker) == (True, True)  # another provider has another key
    assert rules.message == agents.message


async def test_2xx_is_no_failure(upstream, http):
    wire = await fetch(http, upstream, "openai", "good", False)
    assert from_status(wire.status, wire.headers, wire.body, key_from_rules=False) is None
    assert from_status(204, [], b"", key_from_rules=False) is None


# ---------------------------------------------------------------- answers and streams from the fake


@pytest.mark.parametrize("model", ["good", "chunks-3"])
@pytest.mark.parametrize("route", ROUTES)
async def test_whole_answers_that_work(upstream, http, route, model):
    wire = await fetch(http, upstream, route, model, False)
    assert wire.status == 200
    assert from_answer(DIALECT[route], json.loads(wire.body), wire.request) is None


@pytest.mark.parametrize("model,pieces", [("slow", SLOW_CHUNKS), ("chunks-3", 3)])
@pytest.mark.parametrize("route", ROUTES)
async def test_streams_commit_at_the_first_content(upstream, http, route, model, pieces):
    wire = await fetch(http, upstream, route, model, True)
    watch, meaningful_at, failed_at, parts = watch_each(route, wire)
    first = json.dumps(split_answer(ANSWER, pieces)[0]).encode()  # e.g. b'"pon"' as a JSON string value
    assert meaningful_at == next(i for i, part in enumerate(parts) if first in part)
    assert meaningful_at > 0 or route == "gemini"  # message_start, role-only deltas, comments: not yet
    assert failed_at is None and watch.failure is None and watch.finish() is None and watch.end_seen
    assert watch.events == upstream.log[-1]["chunks_sent"]  # every event counted, comments not
    again = bytewise(route, wire)  # chunk boundaries do not matter
    assert (again.meaningful, again.events, again.finish(), again.end_seen) == (True, watch.events, None, True)


@pytest.mark.parametrize("route", ROUTES)
async def test_empty_answers(upstream, http, route):
    whole = await fetch(http, upstream, route, "empty", False)
    failure = from_answer(DIALECT[route], json.loads(whole.body), whole.request)
    assert failure is not None and failure.kind == "empty" and failure.soft and failure.retryable
    assert failure.counts_for_breaker and failure.status == 200 and not failure.body

    streamed = await fetch(http, upstream, route, "empty", True)
    watch, meaningful_at, _, _ = watch_each(route, streamed)
    assert meaningful_at is None and watch.failure is None
    verdict = watch.finish()
    assert verdict is not None and verdict.kind == "empty" and verdict.soft


ERROR_200_STATUS = {"openrouter": 502, "openai": 500, "anthropic": 529, "responses": 500, "gemini": 500}


@pytest.mark.parametrize("route", ROUTES)
async def test_errors_inside_a_200(upstream, http, route):
    whole = await fetch(http, upstream, route, "error-200", False)
    assert whole.status == 200
    failure = from_answer(DIALECT[route], json.loads(whole.body), whole.request)
    assert failure is not None and failure.kind == "error_in_200" and not failure.soft
    assert failure.status == ERROR_200_STATUS[route] and failure.retryable and failure.counts_for_breaker
    # the kept body is an error body of the upstream's dialect: it translates with its message intact
    message = json.loads(whole.body)["error"]["message"]
    assert message in failure.message
    assert message in json.loads(translate_error(failure.body, failure.status, Dialect.ANTHROPIC))["error"]["message"]

    streamed = await fetch(http, upstream, route, "error-200", True)
    watch, meaningful_at, failed_at, _ = watch_each(route, streamed)
    assert failed_at is not None and meaningful_at is None  # before the commit point: the cascade moves on
    assert watch.failure.kind == "stream_error" and watch.failure.status == ERROR_200_STATUS[route]
    assert watch.failure.retryable and watch.finish() is watch.failure


MIDSTREAM_STATUS = {"openrouter": 500, "openai": 500, "anthropic": 529, "responses": 500, "gemini": 500}


@pytest.mark.parametrize("route", ROUTES)
async def test_errors_after_the_commit_point(upstream, http, route):
    wire = await fetch(http, upstream, route, "midstream-error", True)
    watch, meaningful_at, failed_at, parts = watch_each(route, wire)
    assert meaningful_at is not None and failed_at is not None and meaningful_at < failed_at
    assert failed_at == len(parts) - 1  # the last event is the error
    failure = watch.failure
    assert failure.kind == "stream_error" and failure.status == MIDSTREAM_STATUS[route] and failure.retryable
    assert watch.finish() is failure and not watch.end_seen
    assert bytewise(route, wire).failure == failure


@pytest.mark.parametrize("route", ROUTES)
async def test_tool_calls_commit_at_the_call_and_satisfy_tool_choice(upstream, http, route):
    wire = await fetch(http, upstream, route, "chunks-3", True, text="please use-tool now", tools=True, forced=True)
    watch, meaningful_at, _, parts = watch_each(route, wire)
    assert meaningful_at == next(i for i, part in enumerate(parts) if any(m.encode() in part for m in TOOL_MARKERS))
    assert watch.finish() is None
    whole = await fetch(http, upstream, route, "chunks-3", False, text="please use-tool now", tools=True, forced=True)
    assert from_answer(DIALECT[route], json.loads(whole.body), whole.request) is None

    # the same forced tool_choice answered with text: a soft failure, streamed and whole
    text = await fetch(http, upstream, route, "chunks-3", True, tools=True, forced=True)
    verdict = watch_each(route, text)[0].finish()
    assert verdict is not None and verdict.kind == "no_tool_call" and verdict.soft and verdict.retryable
    whole = await fetch(http, upstream, route, "chunks-3", False, tools=True, forced=True)
    assert from_answer(DIALECT[route], json.loads(whole.body), whole.request).kind == "no_tool_call"
    # ... and without tool_choice, text is fine
    free = await fetch(http, upstream, route, "chunks-3", True, tools=True)
    assert watch_each(route, free)[0].finish() is None


async def test_hang_after_headers_never_commits(upstream):
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.3)) as http:
        path, body = build("anthropic", "hang-after-headers", True)
        watch = StreamWatch(Dialect.ANTHROPIC, body)
        with pytest.raises(httpx.ReadTimeout) as caught:
            async with http.stream("POST", upstream.url + path, json=body) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_raw():
                    watch.feed(chunk)
    assert not watch.meaningful and watch.events == 0 and watch.failure is None
    failure = from_transport("timeout_idle", str(caught.value) or "no bytes for 0.3 s")
    assert failure.kind == "timeout_idle" and failure.retryable and failure.status is None and not failure.body


# ---------------------------------------------------------------- transport failures


def test_transport_failures_are_retryable():
    for kind in policy.TRANSPORT_KINDS:
        failure = from_transport(kind, "boom")
        assert (failure.kind, failure.status, failure.retryable, failure.soft) == (kind, None, True, False)
        assert failure.counts_for_breaker and "boom" in failure.message
    with pytest.raises(ValueError):
        from_transport("gremlins", "boom")


# ---------------------------------------------------------------- retry-after


NOW = 1_750_000_000.0


def wait(headers: dict[str, str], body: dict | None = None, status: int = 429) -> float | None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return from_status(status, raw, json.dumps(body or {}).encode(), key_from_rules=False, now=NOW).retry_after_s


def test_retry_after_seconds_and_http_dates():
    assert wait({"Retry-After": "7"}) == 7
    assert wait({"retry-after": "1.5"}) == 1.5
    assert wait({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}) == pytest.approx(90)
    assert wait({"Retry-After": email.utils.formatdate(NOW - 90, usegmt=True)}) == 0  # in the past: now
    assert wait({"retry-after-ms": "250", "retry-after": "3"}) == 0.25  # the precise one first
    assert wait({"Retry-After": "soon"}) is None
    assert wait({"Retry-After": "inf", "retry-after-ms": "nan", "x-ratelimit-reset": "Infinity"}) is None
    assert wait({}) is None


def test_rate_limit_resets():
    assert wait({"X-RateLimit-Reset": str(int((NOW + 42) * 1000))}) == pytest.approx(42)  # OpenRouter: epoch ms
    assert wait({"x-ratelimit-reset": str(int(NOW + 42))}) == pytest.approx(42)  # epoch seconds
    assert wait({"x-ratelimit-reset": "12"}) == 12  # seconds from now
    assert wait({"Retry-After": "3", "X-RateLimit-Reset": str(int((NOW + 42) * 1000))}) == 3  # Retry-After wins
    # OpenAI: Go durations; the limit that is used up decides
    assert wait({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s",
                 "x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "100"}) == 1
    assert wait({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s",
                 "x-ratelimit-remaining-requests": "5", "x-ratelimit-remaining-tokens": "0"}) == 360
    assert wait({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1h2m3.5s"}) == 3723.5
    # Anthropic: RFC 3339 times
    stamp = datetime.datetime.fromtimestamp(NOW + 30, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert wait({"anthropic-ratelimit-requests-reset": stamp, "anthropic-ratelimit-requests-remaining": "0"}) == \
        pytest.approx(30)


def test_retry_after_from_bodies():
    openrouter = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min.",
                            "metadata": {"headers": {"X-RateLimit-Reset": str(int((NOW + 5) * 1000))}}}}
    assert wait({}, openrouter) == pytest.approx(5)
    gemini = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38.5s"}]}}
    assert wait({}, gemini) == 38.5
    openai = {"error": {"message": "Rate limit reached for requests. Please try again in 7m12s.",
                        "type": "requests", "code": "rate_limit_exceeded"}}
    assert wait({}, openai) == 432


def test_free_daily_cap_waits_for_the_utc_day():
    body = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock "
                                              "1000 free model requests per day"}}
    failure = from_status(429, [(b"retry-after", b"2")], json.dumps(body).encode(), key_from_rules=False, now=NOW)
    midnight = datetime.datetime.combine(datetime.datetime.fromtimestamp(NOW, datetime.UTC).date()
                                         + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    assert failure.free_daily_cap and not failure.counts_for_breaker and failure.retryable
    assert failure.retry_after_s == pytest.approx(midnight.timestamp() - NOW)  # not the 2 s of a minute's limit
    variant = {"error": {"code": "429", "message": "Rate limit exceeded: free-models-per-day-high-balance.",
                         "metadata": {"limit_source": "openrouter_free_tier_daily"}}}
    assert from_status(429, [], json.dumps(variant).encode(), key_from_rules=False, now=NOW).free_daily_cap
    minute = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min."}}
    assert not from_status(429, [], json.dumps(minute).encode(), key_from_rules=False, now=NOW).free_daily_cap


def test_retry_after_header_rounds_up():
    def header(seconds: float | None) -> str | None:
        return policy.retry_after_header(Failure("status", 429, True, False, "x", retry_after_s=seconds))

    assert (header(None), header(0), header(0.2), header(2), header(2.01)) == (None, "0", "1", "2", "3")


# ---------------------------------------------------------------- statuses the fake does not send


def judge(status: int, body: dict | str = "", headers: dict[str, str] | None = None, rules: bool = False) -> Failure:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return from_status(status, [(k.encode(), v.encode()) for k, v in (headers or {}).items()], raw,
                       key_from_rules=rules)


def test_client_errors_do_not_trip_breakers():
    plain = judge(400, {"error": {"message": "Invalid value for tool_choice", "type": "invalid_request_error"}})
    assert (plain.retryable, plain.counts_for_breaker) == (False, False)
    too_long = judge(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                      "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
    assert (too_long.retryable, too_long.counts_for_breaker) == (True, False)  # a bigger context may take it
    large = judge(413, {"error": {"message": "This model's maximum context length is 8192 tokens",
                                  "code": "context_length_exceeded"}})
    assert (large.retryable, large.counts_for_breaker) == (True, False)
    assert (judge(422, {"detail": "bad"}).retryable, judge(415, "").retryable) == (False, False)


def test_auth_billing_and_moderation():
    assert (judge(403, {"error": {"message": "forbidden"}}).retryable, judge(403, "", rules=True).retryable) == \
        (False, True)
    moderated = judge(403, {"error": {"code": 403, "message": "Input was flagged",
                                      "metadata": {"reasons": ["violence"], "flagged_input": "..."}}})
    assert (moderated.retryable, moderated.counts_for_breaker) == (True, False)
    credits = {"error": {"code": 402, "message": "Insufficient credits",
                         "metadata": {"limit_source": "openrouter_credits"}}}
    assert (judge(402, credits).retryable, judge(402, credits).counts_for_breaker) == (False, False)
    in_flight = judge(402, credits, {"Retry-After": "4"})
    assert (in_flight.retryable, in_flight.retry_after_s, in_flight.counts_for_breaker) == (True, 4, False)


def test_missing_models_timeouts_and_gateways():
    gone = judge(404, {"error": {"code": 404, "message": "Model fake/nope does not exist"}})
    # a wrong model name or URL: another candidate may exist, but it is a mistake to fix, not an outage
    assert (gone.retryable, gone.counts_for_breaker, gone.routing, gone.misconfigured) == (True, False, False, True)
    no_endpoint = judge(404, {"error": {"code": 404, "message": "No endpoints found that support tool use."}})
    assert (no_endpoint.retryable, no_endpoint.counts_for_breaker, no_endpoint.routing) == (True, False, True)
    routing = judge(503, {"error": {"code": 503, "message": "There is no available model provider that meets "
                                                           "your routing requirements"}})
    assert (routing.retryable, routing.counts_for_breaker, routing.routing) == (True, False, True)
    assert (judge(408, "").retryable, judge(408, "").counts_for_breaker) == (True, True)
    assert (judge(409, "").retryable, judge(409, "").counts_for_breaker) == (True, False)
    assert (judge(520, "").retryable, judge(520, "").counts_for_breaker) == (True, True)  # Cloudflare
    assert (judge(301, "").retryable, judge(301, "").counts_for_breaker) == (False, False)


def test_messages_of_bodies_that_are_not_json():
    html = judge(502, "<html><head><style>p{}</style></head><body><h1>502 Bad Gateway</h1> nginx</body></html>")
    assert html.message == "HTTP 502: 502 Bad Gateway nginx" and html.retryable
    assert judge(500, "").message == "HTTP 500: an empty body"
    long = judge(500, "x" * 5000)
    assert len(long.message) <= policy.MAX_MESSAGE + 3 and long.body == b"x" * 5000
    relayed = judge(502, {"error": {"code": 502, "message": "Provider returned error",
                                    "metadata": {"provider_name": "Chutes", "raw": "upstream connect error"}}})
    assert relayed.message == "HTTP 502: Provider returned error (Chutes: upstream connect error)"


# ---------------------------------------------------------------- answers the fake does not send


def test_reasoning_only_answers_are_not_empty():
    cases = {
        Dialect.OPENAI_CHAT: {"choices": [{"message": {"role": "assistant", "content": "", "reasoning": "hmm"},
                                           "finish_reason": "length"}]},
        Dialect.ANTHROPIC: {"type": "message", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
                            "stop_reason": "max_tokens"},
        Dialect.OPENAI_RESPONSES: {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                                   "output": [{"type": "reasoning", "summary": [{"type": "summary_text",
                                                                                 "text": "hmm"}]}]},
        Dialect.GEMINI: {"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]},
                                         "finishReason": "MAX_TOKENS"}]},
    }
    for dialect, answer in cases.items():
        assert from_answer(dialect, answer, None) is None, dialect
    hidden = {"choices": [{"message": {"content": ""}, "finish_reason": "length"}],
              "usage": {"completion_tokens_details": {"reasoning_tokens": 512}}}
    assert from_answer(Dialect.OPENAI_CHAT, hidden, None) is None  # reasoning tokens count too
    # ... but reasoning does not stand in for a forced tool call
    forced = from_answer(Dialect.ANTHROPIC, cases[Dialect.ANTHROPIC], {"tool_choice": {"type": "tool", "name": "x"}})
    assert forced.kind == "no_tool_call"


def test_token_limit_before_any_content():
    cases = {
        Dialect.OPENAI_CHAT: {"choices": [{"message": {"content": "  \n"}, "finish_reason": "length"}]},
        Dialect.ANTHROPIC: {"type": "message", "content": [], "stop_reason": "max_tokens"},
        Dialect.OPENAI_RESPONSES: {"status": "incomplete", "output": [],
                                   "incomplete_details": {"reason": "max_output_tokens"}},
        Dialect.GEMINI: {"candidates": [{"content": {"parts": []}, "finishReason": "MAX_TOKENS"}]},
    }
    for dialect, answer in cases.items():
        failure = from_answer(dialect, answer, None)
        assert failure.kind == "length_no_content" and failure.soft and failure.retryable, dialect
    cut_text = {"choices": [{"message": {"content": "half an ans"}, "finish_reason": "length"}]}
    assert from_answer(Dialect.OPENAI_CHAT, cut_text, None) is None


def test_other_errors_inside_answers():
    failed = {"id": "resp_1", "status": "failed", "output": [],
              "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached. Please try again in 20s."}}
    failure = from_answer(Dialect.OPENAI_RESPONSES, failed, None)
    assert (failure.kind, failure.status, failure.retry_after_s) == ("error_in_200", 429, 20)
    choice_error = {"choices": [{"message": {"content": ""}, "finish_reason": "error",
                                 "error": {"code": 502, "message": "Provider disconnected"}}]}
    assert from_answer(Dialect.OPENAI_CHAT, choice_error, None).status == 502
    blocked = from_answer(Dialect.GEMINI, {"promptFeedback": {"blockReason": "SAFETY"}}, None)
    assert blocked.kind == "empty" and "SAFETY" in blocked.message
    assert from_answer(Dialect.OPENAI_CHAT, {"error": "model is loading"}, None).kind == "error_in_200"


def test_what_forces_a_tool_call():
    required = checks.tool_required
    assert required(Dialect.OPENAI_CHAT, {"tool_choice": "required"})
    assert required(Dialect.OPENAI_CHAT, {"function_call": {"name": "f"}})
    assert not required(Dialect.OPENAI_CHAT, {"tool_choice": "auto"})
    assert required(Dialect.ANTHROPIC, {"tool_choice": {"type": "tool", "name": "f"}})
    assert not required(Dialect.ANTHROPIC, {"tool_choice": {"type": "auto"}})
    assert not required(Dialect.ANTHROPIC, {"tool_choice": "required"})  # not Anthropic's spelling
    assert required(Dialect.OPENAI_RESPONSES, {"tool_choice": {"type": "function", "name": "f"}})
    assert required(Dialect.OPENAI_RESPONSES, {"tool_choice": {"type": "allowed_tools", "mode": "required"}})
    assert not required(Dialect.OPENAI_RESPONSES, {"tool_choice": {"type": "allowed_tools", "mode": "auto"}})
    assert required(Dialect.GEMINI, {"tool_config": {"function_calling_config": {"mode": "any"}}})
    assert not required(Dialect.GEMINI, {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}})
    assert not required(Dialect.OPENAI_CHAT, None)


# ---------------------------------------------------------------- streams the fake does not send


def sse(*events: dict | str, named: bool = False) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        name = f"event: {event['type']}\n" if named and isinstance(event, dict) else ""
        out += f"{name}data: {data}\n\n".encode()
    return out


def test_reasoning_deltas_are_meaningful_and_whitespace_is_not():
    watch = StreamWatch(Dialect.OPENAI_CHAT, None)
    watch.feed(b": OPENROUTER PROCESSING\n\n" + sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]}))
    watch.feed(sse({"choices": [{"delta": {"content": "\n\n"}}]}))
    assert not watch.meaningful and watch.events == 2
    watch.feed(sse({"choices": [{"delta": {"reasoning": "Let me think"}}]}))
    assert watch.meaningful
    watch.feed(sse({"choices": [{"delta": {}, "finish_reason": "length"}]}, "[DONE]"))
    assert watch.finish() is None and watch.end_seen  # reasoning-only, cut by length: exempt

    anthropic = StreamWatch(Dialect.ANTHROPIC, None)
    anthropic.feed(sse({"type": "message_start", "message": {"content": []}},
                       {"type": "content_block_start", "index": 0,
                        "content_block": {"type": "thinking", "thinking": ""}},
                       named=True))
    assert not anthropic.meaningful
    anthropic.feed(sse({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "thinking_delta", "thinking": "Hmm"}}, named=True))
    assert anthropic.meaningful

    responses = StreamWatch(Dialect.OPENAI_RESPONSES, None)
    responses.feed(sse({"type": "response.reasoning_summary_text.delta", "delta": "Thinking"}, named=True))
    assert responses.meaningful


def test_stream_soft_failures_and_failed_responses():
    watch = StreamWatch(Dialect.ANTHROPIC, None)
    watch.feed(sse({"type": "message_start", "message": {"content": []}},
                   {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}},
                   {"type": "message_stop"}, named=True))
    assert watch.finish().kind == "length_no_content" and watch.end_seen

    failed = StreamWatch(Dialect.OPENAI_RESPONSES, None)
    failed.feed(sse({"type": "response.created", "response": {"status": "in_progress", "output": []}},
                    {"type": "response.failed", "response": {"status": "failed", "error": {
                        "code": "server_error", "message": "The model crashed"}}}, named=True))
    assert failed.failure.kind == "stream_error" and failed.failure.status == 500 and not failed.meaningful
    assert "The model crashed" in failed.failure.message
    assert json.loads(failed.failure.body) == {"error": {"code": "server_error", "message": "The model crashed"}}

    capped = StreamWatch(Dialect.OPENAI_CHAT, None)
    capped.feed(sse({"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day. Add 10 credits "
                                                       "to unlock 1000 free model requests per day"}}))
    assert capped.failure.free_daily_cap and capped.failure.status == 429 and capped.failure.retry_after_s > 0


# ---------------------------------------------------------------- the failure reported to the agent


def test_most_informative():
    timeout = from_transport("timeout_first_byte", "nothing for 60 s")
    empty = Failure("empty", 200, True, True, "empty")
    server = judge(502, {"error": {"message": "bad gateway"}})
    in_band = Failure("stream_error", 502, True, False, "in band", body=b"{}")
    auth = judge(401, {"error": {"message": "bad key"}})
    bad = judge(400, {"error": {"message": "bad request"}})
    slow_429 = judge(429, {"error": {"message": "slow down"}}, {"Retry-After": "30"})
    quick_429 = judge(429, {"error": {"message": "slow down"}}, {"Retry-After": "3"})
    bare_429 = judge(429, "")
    most = policy.most_informative
    assert most([timeout]) is timeout
    assert most([timeout, empty]) is empty  # the model answered, unusably
    assert most([timeout, empty, in_band]) is in_band  # the upstream said something
    assert most([timeout, in_band, server]) is server  # a real HTTP status first
    assert most([server, bad]) is bad and most([bad, auth]) is auth
    assert most([server, auth, slow_429, quick_429, bare_429]) is quick_429
    assert most([bare_429, slow_429]) is slow_429  # a wait the agent can honour
    assert most([empty, Failure("no_tool_call", 200, True, True, "x")]) is empty  # ties: the earliest
    with pytest.raises(ValueError):
        most([])
