"""Processes the integration tests drive: the fake provider and a real Clutch gateway (mitmdump).

Every process gets a temporary HOME, binds an ephemeral loopback port, and is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))
MITMWEB = str(Path(sys.executable).with_name("mitmweb"))  # the same gateway with mitmweb's UI and API
PROVIDER_HOSTS = ["openrouter.ai", "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com"]
# False under `pytest --fast` (conftest.py): the fast loop starts no gateway, fake provider or agent CLI
PROCESSES_ALLOWED = True


def process_allowed(what: str) -> None:
    """Fail a test of the fast loop that starts `what`: it is a gateway or e2e test, and must be marked."""
    if not PROCESSES_ALLOWED:
        import pytest
        pytest.fail(f"this test starts {what}, which the fast loop (--fast) never does: put it under "
                    f"tests/gateway/ (or tests/e2e/), or mark it @pytest.mark.gateway", pytrace=False)


def trust(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before writing {path}")
        time.sleep(0.05)
    raise TimeoutError(f"{path} not written within {timeout} s")


def stop(process: subprocess.Popen, timeout: float = 10) -> int:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
    return process.returncode


def stop_group(process: subprocess.Popen) -> None:
    """Stop what is left of the process group we started (its id is the agent's PID): SIGTERM,
    then SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            process.poll()  # reaps the agent itself once it exits
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def save(path, text: str) -> None:
    """Replace the file in one step, as editors save: a plain write_text truncates first, and the
    gateway's poll can read the empty file in between (a reload error of its own, not the one tested)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def peer_issuer(proxy_port: int, host: str, port: int) -> str:
    """CONNECT through the proxy, then read the certificate the TLS peer presents."""
    from cryptography import x509
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as raw:
        raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += raw.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200"), reply
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def first_content(entry: dict):
    """The content of the first message a fake provider's log entry received, or None (the shared fake
    also logs the hostile suite's malformed bodies: `messages` a string, an item a number). A string
    that Clutch's prompt-cache breakpoint wrapped into one marked text block reads as the string."""
    messages = (entry.get("request_json") or {}).get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    content = first.get("content") if isinstance(first, dict) else None
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict) \
            and content[0].get("type") == "text" and set(content[0]) <= {"type", "text", "cache_control"}:
        return content[0].get("text")
    return content


class FakeProcess:
    """tests/fake_upstream.py as a separate process, serving TLS for every provider host."""

    def __init__(self, workdir: Path, pki, **options: str):
        process_allowed("the fake provider as a process")
        self.workdir = workdir
        self.log_path = workdir / "fake-log.jsonl"
        port_file = workdir / "fake.port"
        args = [PYTHON, str(ROOT / "tests" / "fake_upstream.py"), "--host", "127.0.0.1", "--port", "0",
                "--port-file", str(port_file), "--log-path", str(self.log_path)]
        if pki is not None:  # None: plain HTTP, for agents given a base URL and no CA
            args += ["--cert", str(pki.cert), "--key", str(pki.key)]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", value]
        self.output = open(workdir / "fake.out", "w")
        self.process = subprocess.Popen(args, stdout=self.output, stderr=subprocess.STDOUT,
                                        env={**os.environ, "HOME": str(workdir)})
        self.port = int(wait_for_file(port_file, self.process))

    def entries(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def entries_for(self, model: str) -> list[dict]:
        return [e for e in self.entries() if e.get("model") == model]

    def wait_for(self, predicate, timeout: float = 10, newest: bool = False) -> dict:
        """The first (or newest) log entry matching `predicate`; entries are written when a response ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self.entries()
            for entry in reversed(entries) if newest else entries:
                if predicate(entry):
                    return entry
            time.sleep(0.05)
        raise TimeoutError("no matching fake upstream log entry")

    def stop(self) -> None:
        stop(self.process)
        self.output.close()


def fake_provider_options(fake_port: int | None, upstream_ca: Path | None) -> list[str]:
    """The gateway's options that send every provider host to the fake provider and trust its CA."""
    args = []
    if fake_port is not None:
        for host in PROVIDER_HOSTS:
            args += ["--set", f"clutch_resolve={host}:443=127.0.0.1:{fake_port}"]
    if upstream_ca is not None:
        args += ["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"]
    return args


class Gateway:
    """A real `mitmdump -s addons/clutch.py`, as users run it, pointed at the fake provider."""

    def __init__(self, workdir: Path, fake_port: int | None, upstream_ca: Path | None, *extra: str,
                 rules: Path | None = None, tool: str = MITMDUMP, expect_start: bool = True,
                 env: dict[str, str] | None = None, command: list[str] | None = None):
        """`command`: the whole command line after `tool`, as a launcher builds it (e.g.
        launcher.gateway.web_arguments, confdir workdir/certs), instead of the harness's own; `extra`
        and the fake provider's options follow it."""
        process_allowed(f"a real {Path(tool).name}")
        self.workdir = workdir
        self.confdir = workdir / "certs"
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "gateway.log"
        if command is None:
            command = ["-s", str(ROOT / "addons" / "clutch.py"), "--listen-host", "127.0.0.1",
                       "--listen-port", "0", "--set", f"confdir={self.confdir}",
                       "--set", "clutch_trace_upstream=true", "--set", "clutch_rules_poll_ms=100"]
            if rules is not None:
                command += ["--set", f"clutch_rules={rules}"]
        args = [tool, *command, *fake_provider_options(fake_port, upstream_ca), *extra]
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(workdir),
                                        env={**os.environ, **(env or {}), "HOME": str(self.home)})
        self.port = 0
        if expect_start:
            self.port = self._wait_listening()

    def _wait_listening(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            marker = "HTTP(S) proxy listening at 127.0.0.1:"
            if marker in text:
                return int(text.split(marker, 1)[1].split(".", 1)[0].split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise TimeoutError(f"gateway did not start:\n{self.log_path.read_text()}")

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def bundle(self) -> Path:
        return self.confdir / "clutch-ca-bundle.pem"

    def proxy_url(self, username: str | None = None) -> str:
        auth = f"{username}:test-token@" if username else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def health(self) -> dict:
        return self.local("/health")

    def local(self, path: str) -> dict:
        """One of the gateway's own JSON endpoints (/health, /requests, /usage, /resilience, ...)."""
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10, trust_env=False).json()

    def usage_rows(self, **where) -> list[dict]:
        """The usage store's rows, oldest first (by time, then attempt), filtered by column values. GET
        /usage flushes the gateway's writer first; the store is usage.db in workdir/state, the
        clutch_state_dir the tests give."""
        from addons.accounting.store import UsageStore
        assert httpx.get(f"http://127.0.0.1:{self.port}/usage", trust_env=False, timeout=10).status_code == 200
        store = UsageStore(self.workdir / "state" / "usage.db")
        try:
            found = store.rows()
        finally:
            store.close()
        return sorted((r for r in found if all(r.get(k) == v for k, v in where.items())),
                      key=lambda r: (r["ts"], r["attempt"]))

    def journal(self, model: str, count: int = 1, timeout: float = 10) -> list[dict]:
        """The journal's entries (GET /requests) for `model`, once there are `count` of them: an entry is
        written when its flow ends, which can be just after the agent read its last byte."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.local("/requests")["requests"] if e["model"] == model]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        code = stop(self.process)
        self.log.close()
        return code



def gateway_on_rules(workdir: Path, fake, pki, rules_text: str, *extra: str,
                     env: dict[str, str] | None = None, tool: str = MITMDUMP) -> Gateway:
    """A gateway on rules written to workdir/rules.yaml, pointed at the fake provider."""
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text)
    return Gateway(workdir, fake.port, pki.ca_cert, *extra, rules=rules, env=env, tool=tool)

AGENT_BIN = ROOT / "tests" / "agents" / "node_modules" / ".bin"
# OpenClaw needs Node >= 24.16 (its package's `engines`): it lives beside the Node 24 it runs on
NODE24_BIN = ROOT / "tests" / "agents" / "node24" / "node_modules" / ".bin"
HERMES_BIN = ROOT / "tests" / "agents" / "hermes-venv" / "bin"  # Hermes Agent is a PyPI package
_AGENT_FOLDERS = {"openclaw": (NODE24_BIN, "npm, tests/agents/node24"),
                  "hermes": (HERMES_BIN, "PyPI, tests/agents/hermes-requirements.txt")}


def agent_folder(name: str) -> Path:
    """The folder ./clutch test installs agent `name`'s executable into."""
    return _AGENT_FOLDERS.get(name, (AGENT_BIN,))[0]


def agent_binary(name: str, label: str) -> Path:
    """An agent CLI that ./clutch test installed (npm, or PyPI for Hermes); skip without it, except
    in CI (CLUTCH_REQUIRE_E2E), where a missing agent is a failure."""
    import pytest
    process_allowed(f"the agent CLI {label}")
    path = agent_folder(name) / name
    source = _AGENT_FOLDERS.get(name, (AGENT_BIN, "npm, tests/agents"))[1]
    if not path.exists():
        if os.environ.get("CLUTCH_REQUIRE_E2E"):
            pytest.fail(f"{path} is missing; ./clutch test installs it ({source})")
        pytest.skip(f"{label} is not installed (./clutch test installs it: {source})")
    return path


def agent_search_path(name: str) -> str:
    """PATH for running agent `name`: its own folder first, so OpenClaw's `#!/usr/bin/env node`
    starts the Node 24 beside it (node24/node_modules/.bin/node) and Hermes finds its venv's tools."""
    return f"{agent_folder(name)}{os.pathsep}{os.environ['PATH']}"


# The shared research corpus of real agent request bodies: beside the checkout (../shared), as on
# the developers' machines and in CI; CLUTCH_SHARED points elsewhere.
SHARED = Path(os.environ.get("CLUTCH_SHARED") or ROOT.parent / "shared")


def corpus_files(pattern: str) -> list[Path]:
    """Corpus records matching `pattern`; skip without the corpus, except in CI, where it must exist."""
    import pytest
    files = sorted((SHARED / "corpus" / "dev").glob(pattern))
    if not files:
        message = f"no corpus records {pattern} under {SHARED}/corpus/dev (set CLUTCH_SHARED)"
        if os.environ.get("CLUTCH_REQUIRE_E2E"):
            pytest.fail(message)
        pytest.skip(message)
    return files


def session_turns(record: dict) -> list[dict]:
    """Every request of a corpus record's session up to the record: its messages before each assistant
    turn (a turn ends with what the client appended, a user message or an OpenAI `tool` result)."""
    messages = record["body"]["messages"]
    ends = [k for k in range(1, len(messages) + 1)
            if messages[k - 1]["role"] in ("user", "tool") and (k == len(messages) or messages[k]["role"] == "assistant")]
    return [{**record["body"], "messages": messages[:k]} for k in ends]


def deepest_per_session(records: list[dict]) -> list[dict]:
    """The record with the most messages of each session: the one whose turns replay the session."""
    deepest: dict[str, dict] = {}
    for record in records:
        session = record["meta"]["session"]
        if session not in deepest or len(record["body"]["messages"]) > len(deepest[session]["body"]["messages"]):
            deepest[session] = record
    return list(deepest.values())
