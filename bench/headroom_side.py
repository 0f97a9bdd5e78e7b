#!/usr/bin/env python3
"""Headroom side of the compression benchmark: what Headroom's proxy (PyPI headroom-ai 0.42.0)
does to real coding-agent requests, and what it costs in latency, so Clutch's own compressor can be
compared with it on the same corpus in the same run.

    python bench/headroom_side.py --corpus ../shared/corpus/dev --workload requests \
        --modes token,cache --out /tmp/hr-requests.jsonl [--limit N]
    python bench/headroom_side.py --corpus ../shared/corpus/dev --workload replay \
        --modes token --out /tmp/hr-replay-token.jsonl [--max-turns-per-session 60]
    python bench/headroom_side.py --setup-only     # only create/verify bench/.headroom-venv

What it measures, per request and per Headroom mode (`--mode token` or `cache`):
  * the body Headroom forwards upstream. A recording fake upstream (stdlib http.server on
    127.0.0.1) stands in for Anthropic and OpenAI and keeps the exact bytes it received: the
    forwarded body, not Headroom's own statistics, is what a compressor comparison must count;
  * the latency Headroom adds: added_ms = proxied round trip (client -> headroom -> fake) minus
    the direct round trip (client -> fake) of the same bytes, measured back to back.

Workloads:
  * requests: every corpus file once, in file-name order (which is session order);
  * replay:   every turn of each session's deepest request, in order (the last
    --max-turns-per-session of them), so Headroom's per-session state (token mode's stale-read
    rewrites, cache mode's frozen prefix) behaves as with a real agent. A turn ends with what the
    client appended: a user message, or for OpenAI also a `tool` result (function-calling agents).

The script itself uses only the standard library: it runs under any Python >= 3.11, before and
outside Headroom's environment. Headroom lives in its own venv (bench/.headroom-venv, created once
from bench/headroom-requirements.txt) because it pulls about 1 GB of dependencies that Clutch must
not depend on. There is no network here except package registries: Headroom's ML models
(Kompress, its text compressor, and embeddings) cannot be downloaded, and it fails open (the text
passes unchanged), so every number is "Headroom without Kompress"; the offline env vars below make
those failures immediate instead of slow retries.

Choices that shape the numbers:
  * a fresh proxy per mode, so cache mode's per-session state cannot leak between modes;
  * every request carries x-headroom-session-id: <meta.session>, Headroom's documented session key
    (it does not forward it upstream). The corpus lacks Claude Code's system prompts, and without
    the header Headroom would merge all same-model sessions into one, since it then hashes model +
    system prompt. --no-session-header sends only the agent's own headers;
  * one synthetic warm-up request per API format before the corpus, not recorded: a proxy's first
    request pays ~0.7 s of lazy loading that a long-running proxy pays once. --no-warmup.

Every process started here (the Headroom proxy; the fake is a thread) is stopped by its PID at
the end (its process group: SIGTERM, then SIGKILL), also on errors, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".headroom-venv"
REQUIREMENTS = BENCH / "headroom-requirements.txt"
HEADROOM_VERSION = "0.42.0"
# headroom-ai 0.42.0 ships a cp310-abi3 wheel; it was measured on 3.11 (by this script and
# before it), 3.12/3.13 are accepted as fallbacks. Newer ones are not tried: its dependency markers
# switch packages at 3.14, a different install than the one measured.
SUPPORTED_PYTHONS = ((3, 11), (3, 12), (3, 13))
STAMP = VENV / ".bench-installed"  # sha256 of the requirements file the venv was built from

API_KEY = "sk-bench"
BENCH_ID_HEADER = "x-bench-id"  # lets the fake tell which request a forwarded body belongs to
# Headroom keys its per-session state (frozen prefix, sticky CCR tool injection, beta headers) on
# this header, else on md5(model + system prompt). The corpus has no system prompts (Claude Code's
# were not recorded), so without the header every Claude Code session on the same model would be
# one Headroom "session"; in production their system prompts (cwd, date, git status) differ.
SESSION_HEADER = "x-headroom-session-id"
ENDPOINTS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Headroom's environment


def _python_version(python: str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter that can create venvs, or None. A pyenv shim for a version
    that is not selected exits non-zero, which also lands here."""
    try:
        out = subprocess.run([python, "-c", "import sys, venv, ensurepip; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = map(int, out.stdout.split())
    return major, minor


def find_python() -> str:
    """A Python that headroom 0.42.0 supports: python3.11/3.12 on PATH, then pyenv's own builds
    (their real binaries, so no PYENV_VERSION is needed)."""
    candidates = [shutil.which(name) for name in ("python3.11", "python3.12", "python3.13")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for minor in (11, 12, 13):
        candidates += sorted(glob.glob(str(pyenv_root / "versions" / f"3.{minor}*" / "bin" / f"python3.{minor}")),
                             reverse=True)  # newest patch release first
    for python in candidates:
        if python and _python_version(python) in SUPPORTED_PYTHONS:
            return python
    raise SystemExit("no Python 3.11-3.13 found for Headroom (tried python3.11/3.12/3.13 and "
                     f"{pyenv_root}/versions/3.1[123]*)")


def _installed_headroom() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('headroom-ai'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def ensure_env() -> Path:
    """Create bench/.headroom-venv once and install the requirements into it; reuse it afterwards.
    Returns the `headroom` executable."""
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = STAMP.read_text().strip() if STAMP.exists() else ""
    if stamp == want and _installed_headroom() == HEADROOM_VERSION:
        return VENV / "bin" / "headroom"
    python = find_python()
    log(f"installing headroom-ai {HEADROOM_VERSION} into {VENV} with {python} "
        f"(pip, about 1 GB; one time) ...")
    started = time.monotonic()
    # From scratch: a half-finished earlier install (no stamp) or older pins must not linger,
    # since `pip install -r` never removes anything.
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # A current pip resolves litellm's wide dependency tree much faster than the bundled one.
    # pip's own output (one line per package) goes to stderr: it is the progress a person sees.
    subprocess.run(pip + ["install", "--upgrade", "pip"], check=True, stdout=sys.stderr)
    subprocess.run(pip + ["install", "-r", str(REQUIREMENTS)], check=True, stdout=sys.stderr)
    version = _installed_headroom()
    if version != HEADROOM_VERSION:
        raise SystemExit(f"pip installed headroom-ai {version}, not {HEADROOM_VERSION}")
    STAMP.write_text(want + "\n")
    log(f"installed in {time.monotonic() - started:.0f} s; venv size {_tree_size(VENV) / 1e6:.0f} MB")
    return VENV / "bin" / "headroom"


def site_packages() -> Path:
    found = sorted(VENV.glob("lib/python3.*/site-packages"))
    if not found:
        raise SystemExit(f"no site-packages in {VENV}")
    return found[0]


# --------------------------------------------------------------------------------------------
# The recording fake upstream


class FakeUpstream:
    """Answers Anthropic /v1/messages and OpenAI /v1/chat/completions with a minimal valid
    non-streaming answer, and records every request it receives (path, headers, raw body)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Headroom's httpx client and agents use
            # The response goes out in two writes (headers, body): with Nagle on, the body waits
            # for the client's delayed ACK, a random ~40 ms on either path that would swamp added_ms.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:  # no access log on stderr
                pass

            def do_POST(self) -> None:
                raw = self._read_body()
                record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "raw": raw, "at": time.perf_counter()}
                with fake.lock:
                    fake.records.append(record)
                status, answer = fake.answer(self.path, raw)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_HEAD(self) -> None:  # Headroom's /readyz probes upstream reachability with HEAD
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # anything else Headroom might probe (models list)
                raw = b""
                with fake.lock:
                    fake.records.append({"path": self.path, "raw": raw,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "at": time.perf_counter(), "method": "GET"})
                payload = b'{"object":"list","data":[]}'
                self.send_response(200 if self.path.rstrip("/").endswith("/models") else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-upstream", daemon=True)

    def __enter__(self) -> FakeUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def answer(path: str, raw: bytes) -> tuple[int, dict]:
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "body is not JSON"}}
        model = body.get("model", "bench") if isinstance(body, dict) else "bench"
        # Token counts are a bytes/4 estimate: nothing here bills, but Headroom reads the usage
        # block for its own statistics, so it gets plausible numbers rather than zeros.
        input_tokens = max(1, len(raw) // 4)
        if path.split("?")[0].endswith("/v1/messages"):
            # https://docs.anthropic.com/en/api/messages (non-streaming response)
            return 200, {"id": "msg_bench0000000000000000", "type": "message", "role": "assistant",
                         "model": model, "content": [{"type": "text", "text": "ok"}],
                         "stop_reason": "end_turn", "stop_sequence": None,
                         "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if path.split("?")[0].endswith("/chat/completions"):
            # https://platform.openai.com/docs/api-reference/chat/object
            return 200, {"id": "chatcmpl-bench0000000000000000", "object": "chat.completion",
                         "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "refusal": None},
                                      "logprobs": None, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": input_tokens, "completion_tokens": 1,
                                   "total_tokens": input_tokens + 1}}
        return 404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {path}"}}

    def mark(self) -> int:
        with self.lock:
            return len(self.records)

    def take_since(self, mark: int) -> list[dict]:
        """The records that arrived since `mark`, removed so memory stays flat over a long replay
        (requests are sent one at a time, so nothing else can interleave)."""
        with self.lock:
            taken = self.records[mark:]
            del self.records[mark:]
        return taken


# --------------------------------------------------------------------------------------------
# The Headroom proxy process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxy_command(headroom: Path, mode: str, port: int, fake_port: int) -> tuple[list[str], dict[str, str]]:
    """`headroom proxy`'s arguments and the environment it runs with (added to os.environ, with a
    temporary HOME: its CCR store, logs and config land there), for a plain-HTTP fake upstream."""
    fake = f"http://127.0.0.1:{fake_port}"
    args = [str(headroom), "proxy", "--host", "127.0.0.1", "--port", str(port), "--mode", mode,
            "--anthropic-api-url", fake, "--openai-api-url", f"{fake}/v1",
            # no telemetry, limits, response cache or account polling: each would add work or
            # network calls that are not compression; one attempt so a failure shows at once
            "--no-telemetry", "--no-rate-limit", "--no-cache", "--no-subscription-tracking",
            "--no-http2", "--retry-max-attempts", "1"]
    env = {  # litellm ships tiktoken's BPE files; without this tiktoken tries to download them
           "TIKTOKEN_CACHE_DIR": str(site_packages() / "litellm" / "litellm_core_utils" / "tokenizers"),
           # no model hub here: make Kompress/embedding loads fail at once instead of retrying
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HEADROOM_TELEMETRY": "off", "DO_NOT_TRACK": "1",
           # Headroom's own air-gap switch: refuses every connection it would make itself
           # (update check, pollers, downloads) at once. Without it litellm retries fetching
           # its pricing table from GitHub for ~7 s in the background, during the first requests.
           "HEADROOM_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
           "PYTHONUNBUFFERED": "1"}
    return args, env


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group whose leader is `process` (by its id), then SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            continue  # still there after 10 s: escalate to SIGKILL
        break


class HeadroomProxy:
    """`headroom proxy` from the venv, in its own process group, with a temporary HOME (its CCR
    store, logs and config land there, not in the user's home)."""

    def __init__(self, headroom: Path, mode: str, fake_port: int, workdir: Path):
        self.port = free_port()
        self.home = workdir / f"home-{mode}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"headroom-{mode}.log"
        args, env = proxy_command(headroom, mode, self.port, fake_port)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(workdir), env={**os.environ, "HOME": str(self.home), **env},
                                        start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until /readyz says ready (200). It also HEAD-probes the fake upstream, so a
        ready proxy is known to reach it."""
        started = time.monotonic()
        last = b""
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"headroom proxy exited with {self.process.returncode} before answering; "
                                   f"log: {self.log_path}\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                last = response.read()
                conn.close()
                if response.status == 200:
                    return time.monotonic() - started
                time.sleep(0.2)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"headroom proxy not ready within {timeout:.0f} s (last /readyz: {last[:500]!r}); "
                           f"log: {self.log_path}")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the whole process group we started (its id is the proxy's PID): SIGTERM, then
        SIGKILL after 10 s. By PID only, never by name."""
        # A second Ctrl-C/SIGTERM must not cut this short and leave the proxy running: note them
        # while stopping, then unwind as usual once it is gone.
        pending: list[int] = []
        previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop_group()
        finally:
            self.process.poll()
            self.log.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt

    def _stop_group(self) -> None:
        stop_group(self.process)


# --------------------------------------------------------------------------------------------
# Workloads


def load_corpus(corpus: Path) -> list[dict]:
    """Corpus files sorted by name: within a session that is request order."""
    items = []
    for path in sorted(corpus.glob("*.json")):
        data = json.loads(path.read_text())
        meta = data["meta"]
        items.append({"id": meta.get("id", path.stem), "source": meta.get("source"), "session": meta.get("session"),
                      "format": data["format"], "body": data["body"]})
    return items


def replay_turns(items: list[dict], max_turns: int) -> list[dict]:
    """Every turn of each session's deepest request, in order. A turn is messages[:k] where
    messages[k-1] is what the client appended (a user message; for OpenAI also a `tool` result,
    which is how function-calling agents such as SWE-agent's FC demos send tool output) and
    messages[k], if any, is the assistant's answer to it. The last max_turns turns of each session."""
    sessions: dict[str, dict] = {}
    for item in items:  # the first file of a session fixes its place in the order
        deepest = sessions.get(item["session"])
        if deepest is None or len(item["body"]["messages"]) > len(deepest["body"]["messages"]):
            sessions[item["session"]] = item
    turns = []
    for item in sessions.values():
        messages = item["body"]["messages"]
        user_side = ("user", "tool") if item["format"] == "openai" else ("user",)
        ks = [k for k in range(1, len(messages) + 1)
              if messages[k - 1].get("role") in user_side
              and (k == len(messages) or messages[k].get("role") == "assistant")]
        if not ks or ks[-1] != len(messages):
            ks.append(len(messages))  # always end with the whole request, as recorded
        for k in ks[-max_turns:]:
            turns.append({**item, "id": f"{item['id']}@{k}", "body": {**item["body"], "messages": messages[:k]}})
    return turns


# --------------------------------------------------------------------------------------------
# Sending


class Client:
    """One keep-alive connection per target, as an agent keeps one to its gateway; reconnects
    once if the server closed it."""

    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes, float]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
                self.conn.connect()
                # http.client sends headers and a bytes body in one write already; this keeps
                # any other small write from waiting on a delayed ACK (see the fake's handler)
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            try:
                self.conn.request("POST", path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return response.status, data, elapsed
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def request_headers(fmt: str, bench_id: str, session: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", BENCH_ID_HEADER: bench_id}
    if session is not None:
        headers[SESSION_HEADER] = session
    if fmt == "anthropic":
        headers |= {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    else:
        headers |= {"authorization": f"Bearer {API_KEY}"}
    return headers


def forwarded_for(records: list[dict], bench_id: str, path: str) -> tuple[dict | None, list[dict]]:
    """The upstream call that carries our request: the one with our id header if Headroom forwards
    it, else the first call to the same endpoint (requests go one at a time, so order is enough)."""
    calls = [r for r in records if r.get("method") != "GET"]
    tagged = [r for r in calls if r["headers"].get(BENCH_ID_HEADER) == bench_id]
    if tagged:
        return tagged[0], calls
    same_path = [r for r in calls if r["path"].split("?")[0] == path]
    return (same_path[0] if same_path else None), calls


# A small Claude-Code-shaped exchange and a text-action chat: enough for Headroom to load what it
# loads lazily on its first request (Magika's detector, the tokenizers, the compressors), which
# otherwise lands on the first corpus request (~0.6 s) and dominates a p99 over a few dozen requests.
# Their content is unrelated to the corpus, so no session state or content cache carries over.
# Real model names: an unknown one only makes Headroom log pricing/limit warnings.
_WARMUP_OUTPUT = "".join(f"2026-01-01T00:00:{i % 60:02d} INFO worker {i}: processed batch {i} in {i % 7} ms\n"
                         for i in range(120))  # no error line: error output would skip the compressors
WARMUP_BODIES = {
    # a system prompt of their own too, so even without the session header they hash to a session
    # no corpus request shares
    "anthropic": {"model": "claude-sonnet-4-5-20250929", "max_tokens": 16, "system": "You are a warm-up agent.",
                  "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Run the warm-up script."}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_warmup", "name": "Bash",
                                           "input": {"command": "python warmup.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_warmup",
                                      "content": _WARMUP_OUTPUT}]}]},
    "openai": {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a warm-up agent."},
        {"role": "user", "content": "Run the warm-up script."},
        {"role": "assistant", "content": "```bash\npython warmup.py\n```"},
        {"role": "user", "content": _WARMUP_OUTPUT}]},
}


def warm_up(items: list[dict], fake: FakeUpstream, proxy: HeadroomProxy) -> None:
    client = Client(proxy.port)
    try:
        for fmt in dict.fromkeys(item["format"] for item in items):
            mark = fake.mark()
            payload = json.dumps(WARMUP_BODIES[fmt], separators=(",", ":")).encode()
            status, _, ms = client.post(ENDPOINTS[fmt], payload,
                                        request_headers(fmt, f"warmup:{fmt}", f"bench-warmup-{fmt}"))
            fake.take_since(mark)
            log(f"  warm-up {fmt}: {status} in {ms:.0f} ms")
    finally:
        client.close()


def run_mode(mode: str, workload: str, items: list[dict], fake: FakeUpstream, proxy: HeadroomProxy,
             out, results: list[dict], session_header: bool) -> None:
    direct = Client(fake.port)
    proxied = Client(proxy.port)
    started = time.monotonic()
    try:
        for index, item in enumerate(items, 1):
            fmt, path = item["format"], ENDPOINTS[item["format"]]
            # Compact JSON, as agents' HTTP clients send it; the same bytes go both ways.
            payload = json.dumps(item["body"], ensure_ascii=False, separators=(",", ":")).encode()
            session = item["session"] if session_header else None
            row = {"mode": mode, "workload": workload, "id": item["id"], "source": item["source"],
                   "session": item["session"], "format": fmt, "sent": item["body"], "session_header": session}
            try:
                # Direct first, then through Headroom, back to back, so both see the same machine load.
                mark = fake.mark()
                direct_status, _, direct_ms = direct.post(path, payload,
                                                             request_headers(fmt, f"direct:{item['id']}", session))
                fake.take_since(mark)
                mark = fake.mark()
                status, answer, proxied_ms = proxied.post(path, payload, request_headers(fmt, item["id"], session))
                record, calls = forwarded_for(fake.take_since(mark), item["id"], path)
            except (OSError, http.client.HTTPException) as error:
                direct.close()
                proxied.close()
                row |= {"forwarded": None, "forwarded_raw_sha256": None, "added_ms": None, "proxied_ms": None,
                        "direct_ms": None, "status": f"error: {type(error).__name__}: {error}"}
                record, calls = None, []
            else:
                forwarded = None
                if record is not None:
                    try:
                        forwarded = json.loads(record["raw"])
                    except ValueError:
                        forwarded = {"_unparsable": record["raw"][:2000].decode(errors="replace")}
                row |= {"forwarded": forwarded,
                        "forwarded_raw_sha256": hashlib.sha256(record["raw"]).hexdigest() if record else None,
                        "added_ms": round(proxied_ms - direct_ms, 3), "proxied_ms": round(proxied_ms, 3),
                        "direct_ms": round(direct_ms, 3), "status": status,
                        # beyond the brief's columns: what else Headroom did on the way
                        "direct_status": direct_status,
                        # our exact bytes passed through (Headroom does so when it changed nothing)
                        "forwarded_raw_identical": record is not None and record["raw"] == payload,
                        "upstream_calls": len(calls),  # >1 means Headroom made extra round trips
                        "forwarded_path": record["path"] if record else None,
                        "forwarded_headers": record["headers"] if record else None}
                if status != 200:
                    row["answer"] = answer[:2000].decode(errors="replace")
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            results.append(summary_fields(row))
            if index % 10 == 0 or index == len(items):
                done = [r["added_ms"] for r in results if r["mode"] == mode and r["added_ms"] is not None]
                log(f"[{mode}/{workload}] {index}/{len(items)}  {time.monotonic() - started:6.1f} s  "
                    f"added p50 so far {percentile(done, 50):.1f} ms  last {item['id']}")
    finally:
        direct.close()
        proxied.close()


def summary_fields(row: dict) -> dict:
    """What the summary needs, so full bodies need not stay in memory over a long replay."""
    sent, forwarded = row["sent"], row.get("forwarded")
    ok = row["status"] == 200 and isinstance(forwarded, dict) and "_unparsable" not in forwarded
    return {"mode": row["mode"], "added_ms": row["added_ms"], "ok": ok,
            "messages_changed": ok and forwarded.get("messages") != sent.get("messages"),
            # moving a cache_control breakpoint does not invalidate a prompt cache, so this is the
            # count of requests whose content Headroom actually rewrote
            "content_changed": ok and without_cache_control(forwarded.get("messages"))
            != without_cache_control(sent.get("messages")),
            "other_fields_changed": ok and {k: v for k, v in forwarded.items() if k != "messages"}
            != {k: v for k, v in sent.items() if k != "messages"},
            "tools_injected": ok and len(forwarded.get("tools") or []) > len(sent.get("tools") or []),
            "extra_calls": ok and row.get("upstream_calls", 1) > 1}


def without_cache_control(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_cache_control(v) for v in value]
    return value


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def print_summary(results: list[dict], workload: str, wall: dict[str, float]) -> None:
    sys.stderr.flush()
    print(f"\nHeadroom {HEADROOM_VERSION}, workload {workload} (added ms = proxied - direct round trip)")
    # msgs changed: forwarded["messages"] != sent["messages"]; content changed: the same, ignoring
    # cache_control; other fields: any top-level field besides messages differs (tools, system...);
    # tool added: more tools forwarded than sent; extra calls: more than one upstream call.
    header = (f"{'mode':6} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'fail':>5} {'msgs changed':>13} "
              f"{'content changed':>16} {'other fields':>13} {'tool added':>11} {'extra calls':>12} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    for mode in dict.fromkeys(r["mode"] for r in results):
        rows = [r for r in results if r["mode"] == mode]
        added = [r["added_ms"] for r in rows if r["added_ms"] is not None]
        print(f"{mode:6} {len(rows):>5} {percentile(added, 50):>8.1f} {percentile(added, 99):>8.1f} "
              f"{sum(not r['ok'] for r in rows):>5} {sum(r['messages_changed'] for r in rows):>13} "
              f"{sum(r['content_changed'] for r in rows):>16} "
              f"{sum(r['other_fields_changed'] for r in rows):>13} {sum(r['tools_injected'] for r in rows):>11} "
              f"{sum(r['extra_calls'] for r in rows):>12} {wall.get(mode, float('nan')):>7.1f}", flush=True)


# --------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the proxy."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path(os.environ.get("CLUTCH_SHARED") or ROOT.parent / "shared") / "corpus" / "dev")
    parser.add_argument("--workload", choices=("requests", "replay"), default="requests")
    parser.add_argument("--modes", default="token,cache", help="comma-separated Headroom modes (token, cache)")
    parser.add_argument("--out", type=Path, help="JSONL output, one row per request")
    parser.add_argument("--limit", type=int, help="only the first N requests (turns, for replay) per mode")
    parser.add_argument("--max-turns-per-session", type=int, default=60,
                        help="replay: the last N turns of each session (default 60)")
    parser.add_argument("--no-session-header", dest="session_header", action="store_false",
                        help=f"do not send {SESSION_HEADER}: <meta.session> (then Headroom derives sessions from "
                             "model + system prompt, which merges same-model Claude Code sessions here)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="measure from the proxy's very first request (default: one synthetic warm-up "
                             "request per API format and mode first, not recorded)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (proxy logs, HOME)")
    parser.add_argument("--setup-only", action="store_true", help="only create/verify the venv")
    args = parser.parse_args()

    headroom = ensure_env()
    if args.setup_only:
        log(f"headroom {_installed_headroom()} ready: {headroom}")
        return 0
    if args.out is None:
        parser.error("--out is required")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    items = load_corpus(args.corpus)
    if args.workload == "replay":
        items = replay_turns(items, args.max_turns_per_session)
    if args.limit is not None:
        items = items[:args.limit]
    if not items:
        raise SystemExit(f"no requests in {args.corpus}")

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="headroom-side-"))
    results: list[dict] = []
    wall: dict[str, float] = {}
    failed = False
    try:
        with FakeUpstream() as fake, open(args.out, "w") as out:
            for mode in modes:
                # A fresh proxy per mode: cache mode keeps per-session state that must not leak
                # into (or out of) the other mode's run.
                proxy = HeadroomProxy(headroom, mode, fake.port, workdir)
                try:
                    ready = proxy.wait_ready()
                    log(f"[{mode}] headroom proxy pid {proxy.process.pid} on :{proxy.port} ready in {ready:.1f} s")
                    if args.warmup:
                        warm_up(items, fake, proxy)
                    log(f"[{mode}] sending {len(items)} requests ({args.workload})")
                    started = time.monotonic()
                    run_mode(mode, args.workload, items, fake, proxy, out, results, args.session_header)
                    wall[mode] = time.monotonic() - started
                finally:
                    proxy.stop()
    except KeyboardInterrupt:
        log("interrupted; proxy stopped")
        failed = True
    except Exception:
        failed = True
        log(f"failed; proxy logs in {workdir}")
        args.keep = True
        raise
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if results:
            print_summary(results, args.workload, wall)
            log(f"rows: {args.out}")
    return 130 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
