"""`xx <code>` after the code is parsed: what a launch needs from the outside world, then the agent.

The gateway is asked whether it answers (and started on demand, `auto_start`), the rules in force are
read (the running gateway's, else the file it would start on), the launch is planned
(launcher.launch), notes are added (the tier's model, Claude Code's key), and the agent is exec'd in
xx's place (or inside a named tmux session, the crash guard), so it owns the terminal and its
signals; `--dry-run` prints the plan instead. Every refusal is a line on stderr and an exit status.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import typer

from addons.certs import ca_files
from addons.config.rules import RulesError
from addons.models import ranking
from addons.wire.jsontext import as_object
from launcher import agents, crashguard, keys, lifecycle
from launcher.codes import LaunchCode
from launcher.config import XXConfig, config_path, xx_home
from launcher.launch import Launch, describe_launch, plan_launch, split_model
from launcher.rules_in_force import effective_rules, source_for
from launcher.scan.rankings import current_rankings, tier_note


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"xx: {message}", err=True)
    return typer.Exit(code)


def run_agent(parsed: LaunchCode, config: XXConfig, extra: list[str], *, session: str | None, model: str | None,
              prompt: str | None, dry_run: bool, tmux: bool | None, yolo: bool | None) -> None:
    """Plan the launch of `parsed`, then print it (`dry_run`) or exec the agent."""
    environ = dict(os.environ)
    notes: list[str] = []
    healthy = _gateway(parsed, config, environ, dry_run, notes)
    planned = _planned(parsed, config, healthy, environ, notes, extra, session=session, model=model,
                       prompt=prompt, yolo=yolo)
    use_tmux = (config.tmux if tmux is None else tmux) and parsed.mode != "n"
    if tmux and parsed.mode == "n":
        planned.notes.append("--tmux is for interactive launches; mode n runs in this terminal")
    if dry_run:
        typer.echo(describe_launch(planned))
        if use_tmux:
            typer.echo(f"tmux {crashguard.session_name(parsed.agent, Path.cwd(), session)} (created, or attached "
                       f"to when it already runs)")
        return
    for note in planned.notes:
        typer.echo(f"xx: {note}", err=True)
    binary = shutil.which(planned.argv[0], path=planned.env.get("PATH"))
    if binary is None:
        raise _fail(f"{planned.argv[0]} is not installed (not on PATH): {agents.agent_spec(parsed.agent).install}",
                    127)
    if use_tmux:
        _run_in_tmux(parsed, session, planned)
    os.execve(binary, planned.argv, planned.env)


def _gateway(parsed: LaunchCode, config: XXConfig, environ: dict[str, str], dry_run: bool,
             notes: list[str]) -> dict | None:
    """The gateway's /health on routes p and b, started first when it does not answer (a dry run only
    says it would be); None on route d, or when a dry run finds it down."""
    healthy = lifecycle.health(config) if parsed.route in "pb" else None
    if parsed.route not in "pb" or healthy is not None:
        return healthy
    if dry_run:
        notes.append(f"the gateway does not answer on {config.gateway}: "
                     + ("xx would start it" if config.auto_start else "start it with `xx start`"))
        return None
    if not config.auto_start:
        raise _fail(f"the gateway does not answer on {config.gateway} and auto_start is off: run `xx start`", 1)
    try:
        return lifecycle.start(config, environ, say=lambda text: typer.echo(f"xx: {text}", err=True))
    except lifecycle.GatewayError as e:
        raise _fail(str(e), 1) from None


def _planned(parsed: LaunchCode, config: XXConfig, healthy: dict | None, environ: dict[str, str], notes: list[str],
             extra: list[str], *, session: str | None, model: str | None, prompt: str | None,
             yolo: bool | None) -> Launch:
    """The launch's argv and environment, with the gateway's notes first and Claude Code's key advice."""
    profile = config.profile(parsed.tier) if parsed.tier and parsed.tier.isdigit() else None
    rules = rules_view(config, healthy, environ)
    _check_profile_digit(parsed, config, rules)
    agent_model, pin = split_model(model, rules["providers"])
    try:
        planned = plan_launch(parsed, session=session, model=agent_model, pin=pin, prompt=prompt, extra=extra,
                              environ=environ, gateway=config.gateway,
                              ca=ca_files(lifecycle.ca_folder(config, healthy)),
                              token=config.token or secrets.token_urlsafe(12), is_root=os.geteuid() == 0,
                              yolo=config.yolo if yolo is None else yolo, profile=profile)
    except agents.LaunchError as e:
        raise _fail(str(e)) from None
    planned.notes[:0] = notes + _tier_notes(parsed, rules, config, healthy)
    advice = _claude_key(parsed, planned, rules, config, healthy)
    if advice is not None:
        planned.notes.append(advice.note)
        planned.env.update(advice.env)
        planned.changes = dict(sorted({**planned.changes, **advice.env}.items()))
    return planned


def rules_view(config: XXConfig, healthy: dict | None, environ: dict[str, str]) -> dict:
    """What xx needs of the rules (launcher.rules_in_force, the one loader): the running gateway's if
    it answers (its file, read here, with its overrides; "rules" is None when that file cannot be
    read), else those a gateway xx starts would load, with the overrides of the environment xx would
    start it with."""
    if healthy is not None:
        rules = healthy.get("rules") or {}
        overrides = as_object(rules.get("overrides"))
        try:
            loaded = effective_rules(source_for(config, healthy, environ), overrides) \
                if isinstance(rules.get("path"), str) else None
        except RulesError:
            loaded = None
        return {"providers": rules.get("providers") or [], "launch_tiers": rules.get("launch_tiers") or {},
                "profiles": rules.get("profiles") or [], "source": f"the gateway's rules ({rules.get('path')})",
                "rules": loaded, "summary": rules}
    source = source_for(config, None, environ)
    try:
        loaded = effective_rules(source, environ)
    except RulesError as e:
        raise _fail(f"the rules the gateway would start on are broken: {e}") from None
    return {"providers": sorted(loaded.providers), "launch_tiers": dict(loaded.launch_tiers),
            "profiles": sorted(loaded.profiles), "source": source.describe(), "rules": loaded}


def _claude_key(code: LaunchCode, planned: Launch, rules: dict, config: XXConfig,
                healthy: dict | None) -> keys.Advice | None:
    """Claude Code sent away from Anthropic with no key: say so (and, where every request leaves,
    supply a placeholder) before it stops with "Not logged in" (launcher.keys)."""
    if code.agent != "claude" or code.route != "p":
        return None
    routing = keys.routing_of(rules, code)
    ranked = None
    if code.tier in ("m", "f") and code.tier not in routing.launch_tiers:  # the model scan's pick
        found = current_rankings(config, healthy)
        picked = ranking.pick(found[0], code.tier) if found else None
        ranked = str(picked.target) if picked and picked.target.provider in routing.providers else None
    return keys.claude_advice(code, planned.argv[0], planned.env, planned.pin, routing, ranked)


def _check_profile_digit(code: LaunchCode, config: XXConfig, rules: dict) -> None:
    """A profile digit must exist somewhere; a typo'd digit would otherwise change nothing, silently."""
    if not code.tier or not code.tier.isdigit() or code.route == "d":
        return
    if code.tier not in config.profiles and code.tier not in rules["profiles"]:
        known = sorted(set(config.profiles) | set(rules["profiles"]))
        raise _fail(f"profile {code.tier} is neither in the xx config ({config_path() or xx_home() / 'config.json'}) "
                   f"nor in the rules' profiles ({rules['source']}); defined: {', '.join(known) or 'none'}")


def _tier_notes(code: LaunchCode, rules: dict, config: XXConfig, healthy: dict | None) -> list[str]:
    if not code.tier or code.tier.isdigit() or code.route != "p":
        return []
    target = rules["launch_tiers"].get(code.tier)
    if target:
        return [f"tier {code.tier}: every request goes to {target} (launch_tiers.{code.tier} of {rules['source']})"]
    if code.tier in "mf":  # the model scan's pick, as the gateway will make it
        return [tier_note(code.tier, config, healthy, rules["providers"], rules["source"])]
    return [f"tier {code.tier} has no model in launch_tiers of {rules['source']}: the gateway routes as usual"]


def _run_in_tmux(code: LaunchCode, session: str | None, planned: Launch) -> None:
    try:
        tmux = crashguard.tmux_binary()
    except crashguard.CrashGuardError as e:
        raise _fail(str(e), 1) from None
    name = crashguard.session_name(code.agent, Path.cwd(), session)
    inside = bool(os.environ.get("TMUX"))
    if crashguard.exists(name, tmux):
        typer.echo(f"xx: {name} is already running: attaching to it", err=True)
        command = crashguard.attach_command(name, tmux, inside)
    else:
        spec = crashguard.write_spec(xx_home() / "run", planned.argv, planned.env)
        create, command = crashguard.start_commands(name, spec, Path.cwd(), tmux, inside)
        result = subprocess.run(create, capture_output=True, text=True)
        if result.returncode != 0:
            spec.unlink(missing_ok=True)
            raise _fail(f"tmux could not start {name}: {result.stderr.strip()}", 1)
        typer.echo(f"xx: started {planned.argv[0]} in tmux session {name} (detach: Ctrl-b d; "
                   f"the same xx command reattaches)", err=True)
    os.execv(tmux, command)
