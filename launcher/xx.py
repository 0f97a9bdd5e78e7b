"""`xx`: start any coding agent with its real flags, routed through Clutch, from a short launch code.

    xx <agent><mode><route>[<tier>] [-s ID] [-m MODEL] [-p PROMPT] [--dry-run] [--tmux] [-- agent args]
    xx start | stop | restart | status | log | watch | usage | scan | doctor | aliases | codes

The launch itself is planned by launcher.launch (argv and environment) from launcher.codes (the
grammar) and launcher.agents (each agent's command line); this module adds what needs the outside
world: the user's config, the running gateway (started on demand), the crash guard, and finally
exec'ing the agent in xx's place, so it owns the terminal and its signals. (Pi's broken histories are
repaired by the gateway, addons/translate/pi_repair.py: that is where its requests can be seen.)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from addons.certs import ca_files
from addons.config.rules import DEFAULT_RULES_PATH, RulesError
from addons.models import ranking
from addons.wire.jsontext import as_object
from launcher import agents, aliases, crashguard, doctor, keys, lifecycle, usage_report
from launcher.codes import CodeError, LaunchCode, code_table, mistyped_command, parse_code
from launcher.config import ConfigError, XXConfig, config_path, load_config, xx_home
from launcher.launch import Launch, describe_launch, plan_launch, split_model
from launcher.scan.command import scan
from launcher.scan.rankings import current_rankings, tier_note
from launcher.tables import render_request, render_reset, render_resilience, render_status

ROOT = Path(__file__).resolve().parent.parent
CLUTCH = ROOT / "clutch"
COMMANDS = ("launch", "start", "stop", "restart", "status", "log", "watch", "usage", "scan", "doctor", "aliases",
            "codes", "breakers")

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                  help="xx: start any coding agent with its real flags, routed through Clutch.\n\n"
                       "  xx <agent><mode><route>[<tier>] [-s ID] [-m MODEL] [-p PROMPT] [--dry-run] [-- ARGS]\n\n"
                       "Run `xx codes` for the letters; e.g. xx cip, xx ccp, xx xnp -p 'fix it', xx hcpd.")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"xx: {message}", err=True)
    return typer.Exit(code)


def _config() -> XXConfig:
    try:
        return load_config()[0]
    except ConfigError as e:
        raise fail(f"bad config: {e}") from None


# ------------------------------------------------------------------ launching an agent

@app.command()
def launch(ctx: typer.Context,
           code: Annotated[str, typer.Argument(help="launch code, e.g. cip (see `xx codes`)")],
           session: Annotated[str | None, typer.Option("-s", "--session", help="session id (mode s, or n)")] = None,
           model: Annotated[str | None, typer.Option(
               "-m", "--model", help="provider:model pins the gateway; any other name is the agent's own")] = None,
           prompt: Annotated[str | None, typer.Option("-p", "--prompt", help="the prompt (mode n)")] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", "-n", envvar="XX_DRY_RUN",
                                                 help="print argv and environment, run nothing (XX_DRY_RUN=1: "
                                                      "also for aliases that end in `-- args`)")] = False,
           tmux: Annotated[bool | None, typer.Option("--tmux/--no-tmux", help="run inside a named tmux session "
                                                     "(crash guard); default from the config")] = None,
           yolo: Annotated[bool | None, typer.Option("--yolo/--no-yolo", help="the agent's permission-bypass flag; "
                                                     "default from the config (on)")] = None) -> None:
    """Start an agent from a launch code (the default command: `xx cip` = `xx launch cip`)."""
    extra = list((ctx.obj or {}).get("extra", []))
    try:
        parsed = parse_code(code)
    except CodeError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    config = _config()
    profile = config.profile(parsed.tier) if parsed.tier and parsed.tier.isdigit() else None
    environ = dict(os.environ)
    healthy = lifecycle.health(config) if parsed.route in "pb" else None
    notes: list[str] = []
    if parsed.route in "pb" and healthy is None:
        if dry_run:
            notes.append(f"the gateway does not answer on {config.gateway}: "
                         + ("xx would start it" if config.auto_start else "start it with `xx start`"))
        elif config.auto_start:
            try:
                healthy = lifecycle.start(config, environ, say=lambda text: typer.echo(f"xx: {text}", err=True))
            except lifecycle.GatewayError as e:
                raise fail(str(e), 1) from None
        else:
            raise fail(f"the gateway does not answer on {config.gateway} and auto_start is off: run `xx start`", 1)
    rules = _rules_view(config, healthy, environ)
    _check_profile_digit(parsed, config, rules)
    agent_model, pin = split_model(model, rules["providers"])
    try:
        planned = plan_launch(parsed, session=session, model=agent_model, pin=pin, prompt=prompt, extra=extra,
                              environ=environ, gateway=config.gateway,
                              ca=ca_files(lifecycle.ca_folder(config, healthy)),
                              token=secrets.token_urlsafe(12), is_root=os.geteuid() == 0,
                              yolo=config.yolo if yolo is None else yolo, profile=profile)
    except agents.LaunchError as e:
        raise fail(str(e)) from None
    planned.notes[:0] = notes + _tier_notes(parsed, rules, config, healthy)
    advice = _claude_key(parsed, planned, rules, config, healthy)
    if advice is not None:
        planned.notes.append(advice.note)
        planned.env.update(advice.env)
        planned.changes = dict(sorted({**planned.changes, **advice.env}.items()))
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
        raise fail(f"{planned.argv[0]} is not installed (not on PATH): {agents.agent_spec(parsed.agent).install}",
                   127)
    if use_tmux:
        _run_in_tmux(parsed, session, planned)
    os.execve(binary, planned.argv, planned.env)


def _rules_view(config: XXConfig, healthy: dict | None, environ: dict[str, str]) -> dict:
    """What xx needs of the rules: the running gateway's if it answers (its file, read here, with
    its overrides; "rules" is None when that file cannot be read), else the config's file with the
    overrides of the environment xx would start the gateway with."""
    if healthy is not None:
        rules = healthy.get("rules") or {}
        overrides = as_object(rules.get("overrides"))
        try:
            loaded = keys.effective_rules(rules["path"], overrides) if isinstance(rules.get("path"), str) else None
        except RulesError:
            loaded = None
        return {"providers": rules.get("providers") or [], "launch_tiers": rules.get("launch_tiers") or {},
                "profiles": rules.get("profiles") or [], "source": f"the gateway's rules ({rules.get('path')})",
                "rules": loaded, "summary": rules}
    path = Path(config.rules).expanduser() if config.rules else DEFAULT_RULES_PATH
    try:
        loaded = keys.effective_rules(str(path), environ)
    except RulesError as e:
        raise fail(f"the rules the gateway would start on are broken: {e}") from None
    return {"providers": sorted(loaded.providers), "launch_tiers": dict(loaded.launch_tiers),
            "profiles": sorted(loaded.profiles), "source": str(path), "rules": loaded}


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
        raise fail(f"profile {code.tier} is neither in the xx config ({config_path() or xx_home() / 'config.json'}) "
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
        raise fail(str(e), 1) from None
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
            raise fail(f"tmux could not start {name}: {result.stderr.strip()}", 1)
        typer.echo(f"xx: started {planned.argv[0]} in tmux session {name} (detach: Ctrl-b d; "
                   f"the same xx command reattaches)", err=True)
    os.execv(tmux, command)


# ------------------------------------------------------------------ the gateway's lifecycle

Wait = Annotated[float, typer.Option(help="seconds to wait for /health")]


@app.command()
def start(wait: Wait = 30.0) -> None:
    """Start the gateway in the background (pid and log in ~/.xx); waits until /health answers."""
    config = _config()
    try:
        found = lifecycle.start(config, dict(os.environ), wait_s=wait, say=lambda text: typer.echo(f"xx: {text}"))
    except lifecycle.GatewayError as e:
        raise fail(str(e), 1) from None
    typer.echo(f"xx: the gateway answers on {config.gateway} (pid {found.get('pid')}, rules "
               f"{(found.get('rules') or {}).get('path')})")


@app.command()
def stop() -> None:
    """Stop the gateway xx started."""
    config = _config()
    pid = lifecycle.stop(dict(os.environ))
    if pid is not None:
        typer.echo(f"xx: stopped the gateway (pid {pid})")
    elif lifecycle.health(config) is not None:
        raise fail(f"a gateway answers on {config.gateway} but xx did not start it (no pid file in "
                   f"{xx_home()}): stop it where it runs", 1)
    else:
        typer.echo("xx: no gateway was running")


@app.command()
def restart(wait: Wait = 30.0) -> None:
    """Stop the gateway, then start it again (picks up new keys in this shell's environment)."""
    stop()
    start(wait)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False) -> None:
    """Is the gateway up: address, pid, uptime, rules, breakers and quotas."""
    config = _config()
    files = lifecycle.files_for()
    found = lifecycle.health(config)
    state = lifecycle.resilience(config) if found else None
    pid = lifecycle.read_pid(files)
    if as_json:
        typer.echo(json.dumps({"gateway": config.gateway, "pid_file": str(files.pid), "pid": pid,
                               "log": str(files.log), "health": found, "resilience": state}, indent=2))
    else:
        typer.echo(render_status(config.gateway, found, pid, files.log))
        if state:
            typer.echo("\n" + render_resilience(state))
    if found is None:
        raise typer.Exit(1)


@app.command()
def log(follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="keep printing new lines")] = True,
        lines: Annotated[int, typer.Option("-n", help="lines of history first")] = 40) -> None:
    """Follow the background gateway's log."""
    path = lifecycle.files_for().log
    if not path.exists():
        raise fail(f"no gateway log yet ({path}): the gateway xx starts writes it", 1)
    if not follow:
        typer.echo(lifecycle.tail(path, lines))
        return
    try:
        for line in lifecycle.follow(path, lines):
            typer.echo(line)
    except KeyboardInterrupt:
        pass


@app.command()
def watch(once: Annotated[bool, typer.Option("--once", help="print what is there and exit")] = False,
          history: Annotated[int, typer.Option("-n", help="recent requests shown first")] = 20,
          interval: Annotated[float, typer.Option(help="seconds between polls")] = 0.5) -> None:
    """A live view of LLM requests as they pass the gateway: agent, route, model, status, tokens, cost, time."""
    config = _config()
    page = lifecycle.recent_requests(config)
    if page is None:
        raise fail(f"no gateway answers on {config.gateway} (xx start)", 1)
    typer.echo(render_request(None))
    for entry in page["requests"][-history:] if history else []:
        typer.echo(render_request(entry))
    if once:
        return
    after = page["next"]
    try:
        while True:
            time.sleep(interval)
            page = lifecycle.recent_requests(config, after)
            if page is None:
                typer.echo("xx: the gateway stopped answering; waiting for it", err=True)
                while (page := lifecycle.recent_requests(config, 0)) is None:
                    time.sleep(1)
                after = 0 if page["next"] < after else after  # a restarted gateway counts from 1 again
                continue
            for entry in page["requests"]:
                typer.echo(render_request(entry))
            after = page["next"]
    except KeyboardInterrupt:
        pass


@app.command(name="usage")
def usage_command(by: usage_report.By = "agent", since: usage_report.Since = "24h", until: usage_report.Until = None,
                  as_json: usage_report.AsJson = False, as_csv: usage_report.AsCsv = False,
                  db: usage_report.Database = None) -> None:
    """Usage by agent, session, model, provider or day: requests, tokens, cost, failures, fallbacks."""
    config = _config()
    usage_report.usage(by, since, until, as_json, as_csv, db, lifecycle.health(config) if db is None else None)


app.command(name="scan")(scan)


breakers_app = typer.Typer(no_args_is_help=True, help="The gateway's circuit breakers and 429 cooldowns.")
app.add_typer(breakers_app, name="breakers")


@breakers_app.command(name="reset")
def breakers_reset(target: Annotated[str | None, typer.Argument(
        help="provider:model, or a provider for all its models; none: every target")] = None) -> None:
    """Clear circuit breakers and 429 cooldowns now (after fixing what tripped them)."""
    config = _config()
    try:
        answer = lifecycle.reset_breakers(config, target)
    except lifecycle.GatewayError as e:
        raise fail(str(e), 1) from None
    typer.echo(render_reset(answer, config.gateway))


# ------------------------------------------------------------------ the machine and the shell

@app.command(name="doctor")
def doctor_command() -> None:
    """Check Python, the CA files, the port, the rules, the config, tmux and the installed agents."""
    rows = doctor.run_all(dict(os.environ))
    typer.echo(doctor.render_checks(rows))
    if any(row.status == doctor.FAIL for row in rows):
        raise typer.Exit(1)


@app.command(name="aliases")
def aliases_command(action: Annotated[str, typer.Argument(help="install, remove or show")] = "show",
                    rc: Annotated[Path | None, typer.Option(help="shell file; default ~/.zshrc for zsh, "
                                                                 "else ~/.bashrc")] = None) -> None:
    """Write the classic alias set (cc, ccc, hsi, psi, codex-run, ...) into a marked block of your shell rc."""
    target = rc or aliases.default_rc(dict(os.environ))
    if action == "show":
        typer.echo(aliases.block(CLUTCH), nl=False)
        return
    try:
        if action == "install":
            changed, backup = aliases.install(target, CLUTCH)
        elif action == "remove":
            changed, backup = aliases.remove(target)
        else:
            raise fail(f"aliases {action!r}: use install, remove or show")
    except (OSError, ValueError) as e:
        raise fail(f"{target}: {e}", 1) from None
    if not changed:
        typer.echo(f"xx: {target} already {'has the current' if action == 'install' else 'has no'} xx block")
        return
    typer.echo(f"xx: {'wrote' if action == 'install' else 'removed'} the xx block in {target}"
               + (f" (backup: {backup})" if backup else ""))
    if action == "install":
        typer.echo(f"xx: open a new shell or run `source {target}`; then e.g. `cc`, `hsr ID`, `codex-run \"...\"`")


@app.command()
def codes() -> None:
    """The letters of a launch code, every agent's modes, and the config's profiles."""
    config = _config()
    typer.echo(code_table())
    typer.echo("\nModes each agent has (- = not offered; xx refuses it and says why):")
    typer.echo(f"  {'agent':<12} {'i c n s r':<10} binary")
    for spec in agents.AGENTS.values():
        marks = " ".join(mode if agents.has_mode(spec, mode) else "-" for mode in "icnsr")
        typer.echo(f"  {spec.name:<12} {marks:<10} {spec.binary}")
    if config.profiles:
        typer.echo("\nProfiles (xx config):")
        for digit, profile in sorted(config.profiles.items()):
            typer.echo(f"  {digit}  {profile.name or '(unnamed)'}" + (f"  -> {profile.model}" if profile.model else ""))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    head, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    if not head:
        head = ["--help"]
    elif head[0] not in COMMANDS and not head[0].startswith("-"):
        typo = mistyped_command(head[0], COMMANDS)
        if typo is not None:  # `xx doctr` must not become a launch code's error, let alone a launch
            typer.echo(f"xx: unknown command {head[0]!r}; did you mean `xx {typo}`?", err=True)
            raise SystemExit(2)
        head = ["launch", *head]  # `xx cip ...` is `xx launch cip ...`
    app(args=head, prog_name="xx", obj={"extra": extra})


if __name__ == "__main__":
    main()
