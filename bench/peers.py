"""The peers Clutch is measured against in bench/peer_table.py: claude-code-router, LiteLLM's proxy
and Headroom's proxy, each installed into an environment of its own under bench/ (git-ignored) from
the registries on first use, started on an ephemeral loopback port with a temporary HOME, and
stopped by its PID (its process group: LiteLLM and Headroom may start workers).

* claude-code-router 2.0.0 (npm `@musistudio/claude-code-router`): `npm ci` in bench/ccr/ from the
  committed package-lock.json. An Anthropic Messages server (`/v1/messages`) that translates to the
  fake's OpenAI chat endpoint, as it serves Claude Code. Logging off (`LOG: false`).
* LiteLLM proxy 1.108.7 (pip `litellm[proxy]`): bench/litellm-requirements.txt (every package
  pinned) into bench/.litellm-venv with a Python 3.11-3.13. One worker (its default), a master key
  (it refuses to start without one), no database, the local price map (no fetch from GitHub).
* Headroom 0.42.0 (pip `headroom-ai`): bench/.headroom-venv, installed and started exactly as the
  compression benchmark does (bench/headroom_side.py), in its default `cache` mode.

All three take a base URL, so the client speaks plain HTTP to them and they speak plain HTTP to the
fake; Clutch and bare mitmdump intercept TLS on both legs (bench/peer_table.py says so in its table).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import headroom_side

BENCH = Path(__file__).resolve().parent
CCR_DIR = BENCH / "ccr"
CCR_CLI = CCR_DIR / "node_modules" / "@musistudio" / "claude-code-router" / "dist" / "cli.js"
LITELLM_VENV = BENCH / ".litellm-venv"
LITELLM_REQUIREMENTS = BENCH / "litellm-requirements.txt"
LITELLM_MASTER_KEY = "sk-bench-master"
PEER_MODEL = "bench-model"  # the model name every peer is configured to send to the fake
VERSIONS = {"ccr": "claude-code-router 2.0.0", "litellm": "LiteLLM 1.108.7", "headroom": "Headroom 0.42.0"}


def log(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def _stamp_ok(stamp: Path, source: Path) -> bool:
    return stamp.is_file() and stamp.read_text().strip() == hashlib.sha256(source.read_bytes()).hexdigest()


def ensure_ccr() -> Path:
    """claude-code-router's CLI, installed with `npm ci` from bench/ccr/package-lock.json."""
    stamp = CCR_DIR / "node_modules" / ".bench-installed"
    if CCR_CLI.is_file() and _stamp_ok(stamp, CCR_DIR / "package-lock.json"):
        return CCR_CLI
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found on PATH (claude-code-router is an npm package)")
    log("installing claude-code-router with npm ci into bench/ccr/node_modules ...")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CCR_DIR, check=True, stdout=sys.stderr)
    stamp.write_text(hashlib.sha256((CCR_DIR / "package-lock.json").read_bytes()).hexdigest())
    return CCR_CLI


def ensure_litellm() -> Path:
    """LiteLLM's `litellm` proxy command, from a venv built from the pinned requirements."""
    stamp = LITELLM_VENV / ".bench-installed"
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.is_file() and _stamp_ok(stamp, LITELLM_REQUIREMENTS):
        return exe
    python = headroom_side.find_python()
    log(f"installing litellm[proxy] into {LITELLM_VENV.relative_to(BENCH.parent)} with {python} ...")
    shutil.rmtree(LITELLM_VENV, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(pip + ["install", "-q", "-r", str(LITELLM_REQUIREMENTS)], check=True, stdout=sys.stderr)
    stamp.write_text(hashlib.sha256(LITELLM_REQUIREMENTS.read_bytes()).hexdigest())
    return exe


class PeerProc:
    """A peer's process in its own process group (its id is the peer's PID), its log and a
    temporary HOME; CPU and memory summed over the group's processes from /proc."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.port = headroom_side.free_port()
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "w")
        args = [a.replace("{PORT}", str(self.port)) for a in args]
        full_env = {**os.environ, "HOME": str(self.home), "NO_PROXY": "127.0.0.1,localhost",
                    "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1", **(env or {})}
        for key in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy"):
            full_env.pop(key, None)
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(workdir), env=full_env, start_new_session=True)
        self.pid = self.process.pid

    def pids(self) -> list[int]:
        """The peer's processes: every process in its session (it started the session)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.pid:  # the session id (field 6 of stat)
                found.append(int(entry.name))
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def status_kb(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def wait_http(self, path: str, timeout: float = 120, headers: dict[str, str] | None = None) -> float:
        """Seconds until GET `path` answers below 500 (the peer serves)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path, headers=headers or {})
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM then SIGKILL to the process group we started, by its id."""
        try:
            headroom_side.stop_group(self.process)
        finally:
            self.process.poll()
            self.log.close()


def start_ccr(workdir: Path, fake_port: int) -> PeerProc:
    cli = ensure_ccr()
    home = workdir / "home"
    (home / ".claude-code-router").mkdir(parents=True, exist_ok=True)
    proc_args = [shutil.which("node") or "node", str(cli), "start"]
    port = headroom_side.free_port()
    config = {"LOG": False, "HOST": "127.0.0.1", "PORT": port, "APIKEY": "", "API_TIMEOUT_MS": 600000,
              "Providers": [{"name": "fake", "api_base_url": f"http://127.0.0.1:{fake_port}/v1/chat/completions",
                             "api_key": "sk-bench", "models": [PEER_MODEL]}],
              "Router": {"default": f"fake,{PEER_MODEL}"}}
    (home / ".claude-code-router" / "config.json").write_text(json.dumps(config))
    proc = PeerProc("ccr", proc_args, workdir)
    proc.port = port  # its port comes from the config file
    proc.wait_http("/")
    return proc


def start_litellm(workdir: Path, fake_port: int) -> PeerProc:
    exe = ensure_litellm()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "model_list": [{"model_name": PEER_MODEL, "litellm_params": {
            "model": f"openai/{PEER_MODEL}", "api_base": f"http://127.0.0.1:{fake_port}/v1", "api_key": "sk-bench"}}],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }))
    proc = PeerProc("litellm", [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", "{PORT}",
                                "--num_workers", "1"], workdir,
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
                         "DO_NOT_TRACK": "1", "LITELLM_LOG": "ERROR"})
    proc.wait_http("/health/liveliness", timeout=180)
    return proc


def start_headroom(workdir: Path, fake_port: int) -> PeerProc:
    headroom = headroom_side.ensure_env()
    workdir.mkdir(parents=True, exist_ok=True)
    # the compression benchmark's command line and environment, in Headroom's default mode
    args, env = headroom_side.proxy_command(headroom, "cache", 0, fake_port)
    args[args.index("--port") + 1] = "{PORT}"
    proc = PeerProc("headroom", args, workdir, env=env)
    proc.wait_http("/readyz", timeout=180)
    return proc


STARTERS = {"ccr": start_ccr, "litellm": start_litellm, "headroom": start_headroom}
