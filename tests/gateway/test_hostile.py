"""The hostile-input suite: malformed bodies, headers, encodings and sizes, through a real gateway.

Every input is sent the way an attacker (or a broken agent) would: raw bytes over a real CONNECT
tunnel with real TLS interception by the gateway's CA, to the LLM paths of two dialects (OpenAI
Chat and Anthropic Messages). For every input the suite asserts that

* the gateway answers within a bound (no hang), with a status of the expected kind;
* a refusal by Clutch is a JSON error in the agent's dialect (what its SDK can parse);
* the gateway's peak RSS stays under a bound;
* a normal request right after it is served (the gateway is still healthy).

The fake provider is the only stand-in. The compression mode is `max` and Anthropic's `claude-*`
models are routed to OpenAI Chat, so the inputs go through compression, token counting, routing and
translation, not just the proxy.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import socket
import ssl
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import gateway_on_rules, trust

RULES = """\
version: 1
providers:
  openai: {base_url: "https://api.openai.com/v1", dialects: [openai_chat, openai_responses],
           hosts: [api.openai.com], key_env: OPENAI_API_KEY}
  anthropic: {base_url: "https://api.anthropic.com", dialects: [anthropic], hosts: [api.anthropic.com],
              key_env: ANTHROPIC_API_KEY}
aliases: {"claude-routed": "openai:gpt-4o-mini", "gpt-routed": "anthropic:claude-sonnet-4-5"}
compression: {mode: max}
"""
ENV = {"OPENAI_API_KEY": "sk-proj-rules", "ANTHROPIC_API_KEY": "sk-ant-api03-rules"}

ANSWER_WITHIN_S = 60  # generous: CI has 2 cores, and the biggest inputs are tens of megabytes
PEAK_RSS_MB = 1536  # the bound the suite holds the gateway to, whatever it was sent (docs: Limits)
MB = 1024 * 1024

OPENAI = ("api.openai.com", "/v1/chat/completions")
ANTHROPIC = ("api.anthropic.com", "/v1/messages")
RESPONSES = ("api.openai.com", "/v1/responses")


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    head: bytes  # the raw status line and header block

    def json(self):
        return json.loads(self.body)


def exchange(port: int, ca: Path, host: str, raw: bytes, timeout: float = ANSWER_WITHIN_S) -> Answer:
    """Send `raw` (a whole HTTP/1.1 request, head and body) through the gateway's proxy port to
    `host`:443 over a CONNECT tunnel and the gateway's TLS, and read the answer to its end."""
    deadline = time.monotonic() + timeout
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        reply = _read_head(sock, deadline)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        tls = trust(ca).wrap_socket(sock, server_hostname=host)
        _send_all(tls, raw, deadline)
        return _read_answer(tls, deadline, bytearray())
    finally:
        sock.close()


def _send_all(tls: ssl.SSLSocket, raw: bytes, deadline: float) -> None:
    """Send the whole request as HTTP/1.1 clients do, even when the gateway answers before reading the
    body; stop without an exception when the gateway closes or stops reading (the answer tells)."""
    tls.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        tls.sendall(raw)
    except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
        pass


def _read_head(sock, deadline: float, buffered: bytearray | None = None) -> bytes:
    data = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before the head: {bytes(data[:200])!r}")
        data += piece
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    if buffered is not None:
        buffered[:] = rest
    return head


def _read_answer(sock, deadline: float, buffered: bytearray) -> Answer:
    head = _read_head(sock, deadline, buffered)
    status = int(head.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    body = bytearray(buffered)

    def more() -> bytes:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            return sock.recv(65536)
        except ssl.SSLError:
            return b""

    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            piece = more()
            if not piece:
                break
            body += piece
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not bytes(body).endswith(b"0\r\n\r\n"):
            piece = more()
            if not piece:
                break
            body += piece
        body = bytearray(_unchunk(bytes(body)))
    else:
        while piece := more():
            body += piece
    return Answer(status, headers, bytes(body), head)


def _unchunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


def request(target: tuple[str, str], body: bytes, headers: dict[str, str] | None = None,
            framing: str = "length") -> tuple[str, bytes]:
    """(host, the raw request) for an LLM path, with the headers an SDK sends unless overridden."""
    host, path = target
    fields = {"Host": host, "Content-Type": "application/json", "Accept": "application/json",
              "User-Agent": "hostile-suite/1"}
    if host == ANTHROPIC[0]:
        fields |= {"x-api-key": "sk-ant-api03-agent", "anthropic-version": "2023-06-01"}
    else:
        fields["Authorization"] = "Bearer sk-proj-agent"
    fields |= headers or {}
    if framing == "length":
        fields.setdefault("Content-Length", str(len(body)))
        payload = body
    else:  # chunked, in pieces of 1 MiB
        fields["Transfer-Encoding"] = "chunked"
        pieces = [body[i:i + MB] for i in range(0, len(body), MB)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value is not None)
    return host, f"POST {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + payload


def chat(messages, model="gpt-4o-mini", **extra) -> bytes:
    return json.dumps({"model": model, "messages": messages, **extra}).encode()


def messages(content, model="claude-sonnet-4-5", **extra) -> bytes:
    return json.dumps({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": content}],
                       **extra}).encode()


def tool_history(output: str) -> list[dict]:
    """An OpenAI Chat history whose last tool output is `output` (what compression reads)."""
    return [{"role": "user", "content": "run it"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd":"ls"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": output}]


def gzip_bomb(inflated: int) -> bytes:
    """A small gzip member that inflates to `inflated` bytes of JSON-ish text (zeros in a string)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    head = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
    out = [compressor.compress(head)]
    block = b"0" * MB
    for _ in range(inflated // MB):
        out.append(compressor.compress(block))
    out.append(compressor.compress(b'"}]}'))
    out.append(compressor.flush())
    return b"".join(out)


OK = {200}
REFUSED = {400, 413, 415, 422}  # what a malformed input may get (from Clutch, or from the provider)
TOO_BIG = {413}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    target: tuple[str, str]
    body: bytes | Callable[[], bytes] = b""  # big bodies are built when their test runs
    expect: frozenset[int] = frozenset(REFUSED)
    headers: tuple[tuple[str, str], ...] = ()
    framing: str = "length"
    reaches_provider: bool | None = None  # None: either is fine


def case(name, target, body, expect, headers=None, framing="length", reaches_provider=None) -> Case:
    return Case(name, target, body, frozenset(expect), tuple((headers or {}).items()), framing, reaches_provider)


SPACES = " " * 1_000_000  # tiktoken overflows its stack on this (a BaseException)
BODIES = [
    case("empty body", OPENAI, b"", REFUSED),
    case("truncated json", OPENAI, b'{"model": "gpt-4o-mini", "messages": [', REFUSED),
    case("json array", ANTHROPIC, b"[]", REFUSED),
    case("json string", OPENAI, b'"hello"', REFUSED),
    case("json null", ANTHROPIC, b"null", REFUSED),
    case("invalid utf-8", OPENAI, b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
         REFUSED),
    case("NaN literal", OPENAI, b'{"model": "gpt-4o-mini", "temperature": NaN, "messages": []}', REFUSED | OK),
    case("nesting 100k deep", OPENAI, lambda: b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000
         + b"}", REFUSED),
    case("model is a number", OPENAI, chat([{"role": "user", "content": "hi"}], model=5), REFUSED,
         reaches_provider=False),
    case("model is a list", ANTHROPIC, messages("hi", model=["claude-sonnet-4-5"]), REFUSED, reaches_provider=False),
    case("model is null", OPENAI, chat([{"role": "user", "content": "hi"}], model=None), REFUSED),
    case("model with CR LF", OPENAI, chat([{"role": "user", "content": "hi"}], model="gpt-4o\r\nx-evil: 1"),
         REFUSED, reaches_provider=False),
    case("model of 100 KB", ANTHROPIC, messages("hi", model="m" * 100_000), REFUSED),
    case("messages is a string", OPENAI, json.dumps({"model": "gpt-4o-mini", "messages": "x"}).encode(), REFUSED),
    case("content is a number (routed)", ANTHROPIC, messages(5, model="claude-routed"), REFUSED,
         reaches_provider=False),
    case("content is an object (routed)", ANTHROPIC, messages({"a": 1}, model="claude-routed"), REFUSED,
         reaches_provider=False),
    case("unknown block type (routed)", ANTHROPIC, messages([{"type": "bogus", "x": 1}], model="claude-routed"),
         REFUSED | OK),
    case("tools is a number (routed)", ANTHROPIC, messages("hi", model="claude-routed", tools=7), REFUSED,
         reaches_provider=False),
    case("system is an object (routed)", ANTHROPIC, messages("hi", model="claude-routed", system={"x": 1}), REFUSED,
         reaches_provider=False),
    case("stream is a string", OPENAI, chat([{"role": "user", "content": "hi"}], stream="yes"), REFUSED | OK),
    case("lone surrogate", OPENAI, b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
         REFUSED | OK),
    case("NUL characters", ANTHROPIC, messages("a\u0000b" * 1000), OK),
    case("1M spaces in a message", OPENAI, lambda: chat([{"role": "user", "content": SPACES}]), OK),
    case("1M spaces in a tool output", OPENAI, lambda: chat(tool_history(SPACES)), OK),
    case("1M spaces (routed, translated)", ANTHROPIC, lambda: messages(SPACES, model="claude-routed"), OK),
    case("1M newlines in a tool output", OPENAI, lambda: chat(tool_history("\n" * 1_000_000)), OK),
    case("10 MB one string", ANTHROPIC, lambda: messages("x" * (10 * MB)), OK),
    case("100k tiny messages", OPENAI, lambda: chat([{"role": "user", "content": "hi"}] * 100_000), OK),
    case("duplicate keys", OPENAI, b'{"model": "gpt-4o-mini", "model": "gpt-4o", "messages": '
         b'[{"role": "user", "content": "hi"}]}', OK),
]
HEADERS = [
    case("header of 70 KB", OPENAI, chat([{"role": "user", "content": "hi"}]), {400, 431},
         headers={"x-big": "a" * 70_000}, reaches_provider=False),
    case("1000 headers", OPENAI, chat([{"role": "user", "content": "hi"}]), {200, 400, 431},
         headers={f"x-h{i}": "v" for i in range(1000)}),
    case("latin-1 header bytes", ANTHROPIC, messages("hi"), {200, 400}, headers={"x-name": "caf\xe9"}),
    case("content type text/plain", OPENAI, chat([{"role": "user", "content": "hi"}]), {200, 400, 403, 415},
         headers={"Content-Type": "text/plain"}),
    case("foreign Origin", OPENAI, chat([{"role": "user", "content": "hi"}]), {403},
         headers={"Origin": "https://evil.example"}, reaches_provider=False),
    case("cross-site fetch", ANTHROPIC, messages("hi"), {403}, headers={"Sec-Fetch-Site": "cross-site"},
         reaches_provider=False),
]
ENCODINGS = [
    case("gzip that is not gzip", OPENAI, b"not gzip at all", REFUSED, headers={"Content-Encoding": "gzip"}),
    case("gzip bomb 256 MB", OPENAI, lambda: gzip_bomb(256 * MB), TOO_BIG, headers={"Content-Encoding": "gzip"},
         reaches_provider=False),
    case("gzip, fine", ANTHROPIC, gzip.compress(messages("hi")), OK, headers={"Content-Encoding": "gzip"}),
    case("brotli that is not brotli", ANTHROPIC, b"\x00\x01\x02garbage", REFUSED,
         headers={"Content-Encoding": "br"}),
    case("unknown encoding", OPENAI, chat([{"role": "user", "content": "hi"}]), REFUSED | {415},
         headers={"Content-Encoding": "x-rot13"}),
]
SIZES = [
    case("20 MB of tool outputs", OPENAI, lambda: chat(tool_history("line of output\n" * (20 * MB // 15))), OK),
    case("33 MB with Content-Length", OPENAI, lambda: chat([{"role": "user", "content": "y" * (33 * MB)}]), TOO_BIG,
         reaches_provider=False),
    case("33 MB chunked", ANTHROPIC, lambda: messages("y" * (33 * MB)), TOO_BIG, framing="chunked", reaches_provider=False),
]
CASES = BODIES + HEADERS + ENCODINGS + SIZES


@pytest.fixture(scope="module")
def hostile_gateway(tmp_path_factory, fake, pki):
    workdir = tmp_path_factory.mktemp("hostile")
    gateway = gateway_on_rules(workdir, fake, pki, RULES, "--set", f"clutch_state_dir={workdir / 'state'}",
                               "--set", "clutch_retries=0", env=ENV)
    yield gateway
    gateway.stop()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def marker_model(target) -> str:
    return "gpt-4o-mini" if target is OPENAI else "claude-sonnet-4-5"


def normal_request_works(gateway, fake, target) -> None:
    model = marker_model(target)
    body = chat([{"role": "user", "content": "still there?"}]) if target is OPENAI else messages("still there?")
    host, raw = request(target, body)
    answer = exchange(gateway.port, gateway.ca_cert, host, raw)
    assert answer.status == 200, (answer.status, answer.body[:300])
    assert answer.json()["model"].startswith(model.split("-")[0])


@pytest.mark.parametrize("hostile", CASES, ids=[c.name for c in CASES])
def test_hostile_input(hostile_gateway, fake, hostile: Case):
    gateway = hostile_gateway
    seen_before = len(fake.entries())
    body = hostile.body() if callable(hostile.body) else hostile.body
    host, raw = request(hostile.target, body, dict(hostile.headers), hostile.framing)
    del body
    started = time.monotonic()
    answer = exchange(gateway.port, gateway.ca_cert, host, raw)
    took = time.monotonic() - started
    assert answer.status in hostile.expect, (answer.status, answer.head[:500], answer.body[:500])
    assert took < ANSWER_WITHIN_S
    for name in answer.headers:  # nothing the input carried became a header of its own
        assert not name.startswith("x-evil"), answer.head
    if answer.status >= 400 and answer.headers.get("x-clutch-error") != "status":
        error = answer.json()  # Clutch's own refusal: a JSON error in the agent's dialect (a provider's
        # error passes as the provider wrote it)
        if hostile.target is ANTHROPIC:
            assert error["type"] == "error" and error["error"]["message"], error
        else:
            assert error["error"]["message"], error
    if hostile.reaches_provider is False:
        reached = fake.entries()[seen_before:]
        assert not [e for e in reached if e.get("path", "").startswith(hostile.target[1])], reached
    assert peak_rss_mb(gateway.process.pid) < PEAK_RSS_MB
    normal_request_works(gateway, fake, hostile.target)


# ---------------------------------------------------------------- every field, every wrong type

WRONG = [5, -1, 1e308, "x", "", [], [5], [{}], [None], {}, {"x": 1}, None, True]
GOOD = {
    "chat": (OPENAI, {"model": "gpt-4o-mini", "stream": False, "max_tokens": 16, "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
        "tools": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "temperature": 0.2, "stream_options": {"include_usage": True}}),
    "messages": (ANTHROPIC, {"model": "claude-sonnet-4-5", "max_tokens": 16, "system": "be brief", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}],
        "tools": [{"name": "bash", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u"}}),
    "responses": (RESPONSES, {"model": "gpt-4o-mini", "instructions": "be brief", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call", "call_id": "c1", "name": "bash", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
        "tools": [{"type": "function", "name": "bash", "parameters": {"type": "object"}}],
        "reasoning": {"effort": "low"}, "store": False}),
}
# each dialect sent as it is (the provider judges it) and routed to the other family (Clutch translates)
ROUTES = {"chat": ("gpt-4o-mini", "gpt-routed"), "messages": ("claude-sonnet-4-5", "claude-routed"),
          "responses": ("gpt-4o-mini", "gpt-routed")}


def mutations(body: dict):
    """(where, body) with one field, top-level or in the first message / content block / tool, made wrong."""
    for key in body:
        for value in WRONG:
            yield f"{key}={json.dumps(value)[:12]}", {**body, key: value}
    for list_key in ("messages", "input", "tools"):
        items = body.get(list_key)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            for field in item:
                for value in WRONG:
                    changed = [dict(x) for x in items]
                    changed[index][field] = value
                    yield f"{list_key}[{index}].{field}={json.dumps(value)[:12]}", {**body, list_key: changed}


@pytest.mark.parametrize("dialect", sorted(GOOD))
@pytest.mark.parametrize("routed", [False, True], ids=["direct", "translated"])
def test_every_field_with_every_wrong_type(hostile_gateway, fake, dialect, routed):
    """Hundreds of malformed requests (each field of a realistic request, one at a time, given each
    wrong JSON type): none may cost a 5xx, hang, or reach the provider past a route Clutch could not
    translate; each refusal is a JSON error in the dialect; the gateway serves a normal request after."""
    gateway = hostile_gateway
    target, good = GOOD[dialect]
    model = ROUTES[dialect][1 if routed else 0]
    problems, tried, statuses = [], 0, collections.Counter()
    for where, body in mutations({**good, "model": model}):
        if where.startswith("model="):
            continue  # the model itself: its own cases above
        host, raw = request(target, json.dumps(body).encode())
        answer = exchange(gateway.port, gateway.ca_cert, host, raw, timeout=30)
        tried += 1
        statuses[answer.status] += 1
        if answer.status >= 500:
            problems.append(f"{where}: {answer.status} {answer.body[:160]!r}")
        elif answer.status >= 400 and answer.headers.get("x-clutch-error") != "status":
            try:
                error = answer.json()
                assert (error["error"]["message"] if target is not ANTHROPIC else
                        error["type"] == "error" and error["error"]["message"])
            except (ValueError, KeyError, TypeError, AssertionError):
                problems.append(f"{where}: {answer.status} not a dialect error: {answer.body[:160]!r}")
    assert tried > 150
    assert not problems, f"{len(problems)} of {tried} malformed requests went wrong:\n" + "\n".join(problems[:40])
    assert peak_rss_mb(gateway.process.pid) < PEAK_RSS_MB
    normal_request_works(gateway, fake, target if target is not RESPONSES else OPENAI)
