"""`xx doctor`: is this machine ready? Python, the CA files and their permissions, the gateway's port,
the rules and each provider's key, the xx config, tmux, and which agents are installed with which
versions.

Each check is a plain function returning Check rows, so the tests run them on prepared folders.
Nothing is changed: the doctor reads and reports; the fix is in each row's text.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from addons.certs import ca_files
from addons.config.keyfile import ProviderKeys, read_keys_file, targets_by_provider
from addons.config.paths import places
from addons.config.rules import RulesError
from launcher import keys, lifecycle
from launcher.agents import AGENTS
from launcher.config import ConfigError, XXConfig, load_config
from launcher.rules_in_force import effective_rules, source_for

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclasses.dataclass(frozen=True)
class Check:
    status: str  # OK, WARN or FAIL
    name: str
    detail: str


def check_python() -> list[Check]:
    """Which Python runs Clutch: always >= 3.12 here (Clutch's modules need it to load at all, and
    `./clutch` finds one or says how to install it)."""
    version = ".".join(map(str, sys.version_info[:3]))
    return [Check(OK, "python", f"{version} at {sys.executable}")]


def check_config(environ: dict[str, str]) -> tuple[list[Check], XXConfig]:
    try:
        config, path = load_config(environ)
    except ConfigError as e:
        return [Check(FAIL, "xx config", str(e))], XXConfig()
    where = str(path) if path else "none (defaults; see the README's xx config example)"
    return [Check(OK, "xx config", f"{where}; gateway {config.gateway}, auto_start {config.auto_start}, "
                                   f"profiles {', '.join(sorted(config.profiles)) or 'none'}")], config


def check_ca(folder: Path) -> list[Check]:
    files = ca_files(folder)
    if not files.ca_cert.exists():
        return [Check(WARN, "CA", f"no CA in {folder} yet: the first gateway start creates it")]
    rows = [Check(OK, "CA certificate", str(files.ca_cert))]
    folder_mode = stat.S_IMODE(folder.stat().st_mode)
    rows.append(Check(OK if folder_mode & 0o077 == 0 else FAIL, "CA folder permissions",
                      f"{folder_mode:04o}" + ("" if folder_mode & 0o077 == 0 else f": chmod 700 {folder}")))
    if files.ca_key.exists():
        key_mode = stat.S_IMODE(files.ca_key.stat().st_mode)
        rows.append(Check(OK if key_mode & 0o077 == 0 else FAIL, "CA key permissions",
                          f"{key_mode:04o} {files.ca_key}" + ("" if key_mode & 0o077 == 0
                                                             else f": chmod 600 {files.ca_key}")))
    else:
        rows.append(Check(FAIL, "CA key", f"{files.ca_key} is missing: the gateway cannot sign certificates"))
    rows.append(Check(OK if files.bundle.exists() else WARN, "CA bundle",
                      str(files.bundle) if files.bundle.exists() else
                      f"{files.bundle} missing: the next gateway start writes it"))
    return rows


def check_gateway(config: XXConfig, environ: dict[str, str], found: dict | None) -> list[Check]:
    """`found`: the gateway's /health, or None when nothing answers."""
    pid = lifecycle.read_pid(lifecycle.files_for(environ))
    if found is not None:
        rules = found.get("rules") or {}
        rows = [Check(OK, "gateway", f"answers on {config.gateway} (version {found.get('version')}, "
                                     f"pid {found.get('pid')}, up {found.get('uptime_s', 0):.0f} s)")]
        if rules.get("last_reload_error"):
            rows.append(Check(WARN, "gateway rules", f"the last reload failed, older rules in force: "
                                                     f"{rules['last_reload_error']}"))
        rows += [Check(WARN, "gateway degraded", str(problem)) for problem in found.get("problems") or []]
        return rows
    if pid is not None:
        return [Check(WARN, "gateway", f"pid {pid} runs but does not answer /health on {config.gateway}")]
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        return [Check(FAIL, "gateway", f"{config.gateway} does not answer (a remote gateway: start it there)")]
    if lifecycle.port_free(config.port):
        return [Check(OK, "gateway", f"not running; port {config.port} is free "
                                     f"({'xx starts it when needed' if config.auto_start else 'start it: xx start'})")]
    return [Check(FAIL, "gateway", f"port {config.port} is taken by a program that is not Clutch: choose "
                                   f"another \"gateway\" port in the xx config")]


def check_rules(config: XXConfig, environ: dict[str, str] | None = None) -> list[Check]:
    """The rules a gateway xx starts would load (the defaults with the user's file over them, and
    the environment's claude-code-proxy overrides): launcher.rules_in_force, as every launch reads them."""
    environ = dict(os.environ) if environ is None else environ
    source = source_for(config, None, environ)
    try:
        rules = effective_rules(source, environ)
    except RulesError as e:
        return [Check(FAIL, "rules", str(e))]
    return [Check(OK, "rules", f"{source.describe()}: providers {', '.join(sorted(rules.providers))}; "
                               f"launch tiers {', '.join(sorted(rules.launch_tiers)) or 'none'}")]


def check_provider_keys(config: XXConfig, environ: dict[str, str], found: dict | None) -> list[Check]:
    """Each provider of the effective rules (the running gateway's, else those xx would start it on):
    is its key set where the gateway reads it, its environment or the keys file? A running gateway
    keeps the environment it started with: read from /proc where it is this user's process, else
    this shell's stands in, and says so. Values are never shown: a short prefix and the length at
    most (keys.mask)."""
    summary = (found or {}).get("rules")
    summary = summary if isinstance(summary, dict) else {}
    overrides = summary.get("overrides") if found is not None and isinstance(summary.get("path"), str) else environ
    try:
        rules = effective_rules(source_for(config, found, environ), overrides if isinstance(overrides, dict) else {})
    except RulesError as e:
        return [Check(WARN, "provider keys", f"not checked: the rules cannot be read ({e})")]
    names = {provider.key_variable for provider in rules.providers.values() if provider.key_variable}
    seen, where = _gateway_environ(config, found, names)
    keys_file = Path(summary["keys_file"]) if isinstance(summary.get("keys_file"), str) else places(environ).keys
    file_rows, from_file = _keys_file_rows(keys_file)
    chain = ProviderKeys(from_file, keys_file, environ if seen is None else seen)
    later = "and run `xx restart`" if found is not None else "before the gateway starts"
    targeted = targets_by_provider(rules)
    rows = [Check(OK, "provider keys", f"read in {where}, then {keys_file}"), *file_rows]
    for name, provider in sorted(rules.providers.items()):
        variable, used = provider.key_variable, targeted.get(name, [])
        origin = chain.source_of(variable) if variable else None
        if not variable:
            rows.append(Check(OK, f"key {name}", "no key in the rules: requests sent there carry no key"))
        elif origin is not None:
            place = "" if origin == "environment" else f" in {origin}"
            rows.append(Check(OK, f"key {name}", f"{variable} set ({keys.mask(chain[variable])}){place}"))
        elif used:
            listed = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
            rows.append(Check(WARN, f"key {name}", f"{variable} not set: what the rules send to {name} ({listed}) "
                                                  f"fails with \"missing key\"; set it in the environment {later}, "
                                                  f"or as {variable}=... in {keys_file}"))
        else:
            rows.append(Check(OK, f"key {name}", f"{variable} not set; no rule sends requests to {name} (an agent "
                                                f"calling it sends its own key)"))
    return rows


def _keys_file_rows(path: Path) -> tuple[list[Check], dict[str, str]]:
    """The keys file's row (a FAIL when the gateway would refuse it) and its values."""
    try:
        values = read_keys_file(path)
    except RulesError as e:
        return [Check(FAIL, "keys file", str(e))], {}
    if not path.exists():
        return [Check(OK, "keys file", f"none at {path} (optional: NAME=value lines, chmod 600)")], {}
    return [Check(OK, "keys file", f"{path}: {len(values)} variable(s), readable by you alone")], values


def _gateway_environ(config: XXConfig, found: dict | None, names: set[str]) -> tuple[dict[str, str] | None, str]:
    """The key variables of the running gateway's own environment (Linux /proc, this user's
    process), and how to name where they were read."""
    if found is None:
        return None, "this shell's environment, which a gateway xx starts gets"
    pid = found.get("pid")
    # only a Clutch gateway's own process (its command line names addons/clutch.py) is read
    if isinstance(pid, int) and config.host in ("127.0.0.1", "localhost", "::1") and lifecycle._is_gateway(pid):
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            pass
        else:
            pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
            seen = {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs
                    if k.decode(errors="replace") in names}
            return seen, f"the running gateway's environment (pid {pid})"
    return None, (f"this shell's environment: the running gateway (pid {pid}) keeps the one it started with, "
                  f"which xx cannot read")


def check_tools() -> list[Check]:
    rows = []
    tmux = shutil.which("tmux")
    rows.append(Check(OK if tmux else WARN, "tmux", tmux or "not installed: --tmux (the crash guard) needs it"))
    node = shutil.which("node")
    if node:
        rows.append(Check(OK, "node", f"{_version([node, '--version'])} at {node}"))
    else:
        rows.append(Check(WARN, "node", "not installed: most agents are npm packages"))
    return rows


def check_agents(environ: dict[str, str]) -> list[Check]:
    path = environ.get("PATH", os.defpath)

    def one(spec) -> Check:
        binary = shutil.which(spec.binary, path=path)
        if binary is None:
            return Check(WARN, f"agent {spec.name}", f"{spec.binary} not installed ({spec.install})")
        return Check(OK, f"agent {spec.name}", f"{_version([binary, '--version'], environ)} at {binary}")

    with ThreadPoolExecutor(max_workers=4) as pool:  # some CLIs take a second to print a version
        return list(pool.map(one, AGENTS.values()))


def _version(argv: list[str], environ: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL,
                                env=environ)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"version unknown ({type(e).__name__})"
    words = (result.stdout or result.stderr).strip().splitlines()
    return words[0][:80] if words else f"version unknown (exit {result.returncode})"


def run_all(environ: dict[str, str]) -> list[Check]:
    config_rows, config = check_config(environ)
    found = lifecycle.health(config)
    return [*check_python(), *config_rows, *check_ca(lifecycle.ca_folder(config, found)),
            *check_gateway(config, environ, found),
            *check_rules(config, environ), *check_provider_keys(config, environ, found), *check_tools(),
            *check_agents(environ)]


def render_checks(rows: list[Check]) -> str:
    width = max(len(row.name) for row in rows)
    lines = [f"{row.status:<4}  {row.name:<{width}}  {row.detail}" for row in rows]
    failed = sum(row.status == FAIL for row in rows)
    warned = sum(row.status == WARN for row in rows)
    lines.append(f"\n{failed} problem(s), {warned} warning(s)")
    return "\n".join(lines)
