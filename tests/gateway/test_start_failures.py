"""A gateway that cannot start says why in one line and exits non-zero, with no traceback and no
"proxy listening" line: broken rules, a keys file others can read, a taken port. Through
`./clutch start` (launcher.gateway, which execs a real mitmdump) and through `xx`, which starts one
in the background (launcher/lifecycle.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from harness import ROOT, free_port
from xx_rig import gateway_pid, run_xx, write_config, xx_env

BROKEN = "version: 1\nproviders:\n  openrouter:\n    base_url: nope\n    dialects: [openai_chat]\n"


def clutch_start(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`./clutch start ...` after its bootstrap (which only installs, then runs exactly this)."""
    environ = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
               "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "launcher.gateway", "start", "--confdir", str(home / "certs"),
                           *args], env=environ, capture_output=True, text=True, timeout=60, cwd=str(home))


def assert_clean(result: subprocess.CompletedProcess, first_line: str) -> None:
    everything = result.stdout + result.stderr
    assert result.returncode == 1, everything
    assert result.stderr.splitlines()[0] == first_line, everything
    assert "Traceback" not in everything and "listening" not in everything, everything


def test_clutch_start_on_broken_rules(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = clutch_start(tmp_path, "--port", str(free_port()), "--rules", str(broken))
    line = f"{broken}:4: providers.openrouter.base_url: must be an http:// or https:// URL with a host"
    assert_clean(result, line)
    assert result.stderr.count(line) == 1


def test_clutch_start_on_broken_rules_found_in_the_config_folder(tmp_path):
    rules = tmp_path / ".config" / "clutch" / "rules.yaml"
    rules.parent.mkdir(parents=True)
    rules.write_text("tiers:\n  big: nowhere:model\n")
    result = clutch_start(tmp_path, "--port", str(free_port()))
    assert_clean(result, f"{rules}:2: tiers.big: target 'nowhere:model' names provider 'nowhere', "
                         "which is not in providers")


def test_clutch_start_with_a_keys_file_others_can_read(tmp_path):
    keys = tmp_path / ".config" / "clutch" / "keys.env"
    keys.parent.mkdir(parents=True)
    keys.write_text("OPENROUTER_API_KEY=sk-or-v1-not-so-secret\n")
    os.chmod(keys, 0o644)
    result = clutch_start(tmp_path, "--port", str(free_port()))
    assert_clean(result, f"{keys}: group or others may read the keys file (mode 0644); Clutch does not use it "
                         f"until `chmod 600 {keys}`")
    assert "not-so-secret" not in result.stdout + result.stderr


def test_clutch_start_on_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = clutch_start(tmp_path, "--port", str(port))
        via_variable = clutch_start(tmp_path, env={"CLUTCH_PORT": str(port)})
    assert_clean(result, f"clutch: port {port} on 127.0.0.1 is taken by another program.")
    assert result.stderr.splitlines()[1] == "Choose another port: --port N, or CLUTCH_PORT=N."
    assert_clean(via_variable, f"clutch: port {port} on 127.0.0.1 is taken by another program.")


def test_xx_start_and_a_launch_on_broken_rules(xx_home, fake, pki, tmp_path):
    home, config = xx_home
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    write_config(home, fake.port, pki.ca_cert, gateway=config["gateway"], rules=str(broken))
    line = f"xx: {broken}:4: providers.openrouter.base_url: must be an http:// or https:// URL with a host"
    result = run_xx(xx_env(home), "start")
    assert_clean(result, line)
    assert gateway_pid(home) is None
    launched = run_xx(xx_env(home), "cnp", "-p", "hi")  # a launch starts the gateway on demand, saying so first
    assert launched.stderr.splitlines()[0].startswith("xx: starting the gateway on ")
    assert_clean(launched, launched.stderr.splitlines()[0])
    assert launched.stderr.splitlines()[1] == line, launched.stderr + (home / ".xx" / "gateway.log").read_text()
    assert gateway_pid(home) is None
    log = (home / ".xx" / "gateway.log").read_text()
    assert "Traceback" not in log and "listening" not in log


def test_a_clutch_option_mitmproxy_cannot_convert_stops_the_start(tmp_path):
    """mitmproxy converts `--set` values of a script's options only once the script has loaded; a
    value that does not convert made its script loader drop Clutch, silently, and the proxy went on
    forwarding without any of Clutch's addons. Now the start stops, in one line."""
    port = free_port()
    bad = clutch_start(tmp_path, "--port", str(port), "--set", "clutch_rules_poll_ms=abc")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert bad.stderr.splitlines() == ["clutch: Failed to parse option clutch_rules_poll_ms: not an integer: abc"]
    assert "listening" not in bad.stdout and "Traceback" not in bad.stdout + bad.stderr
    twice = clutch_start(tmp_path, "--port", str(port), "--set", "clutch_rules_poll_ms=100",
                         "--set", "clutch_rules_poll_ms=0")
    assert twice.returncode == 2, twice.stdout + twice.stderr
    assert twice.stderr.splitlines() == ["clutch: Received multiple values for clutch_rules_poll_ms: ['100', '0']"]
