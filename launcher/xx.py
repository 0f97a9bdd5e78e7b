"""`xx`: start any coding agent with its real flags, routed through Clutch, from a short launch code.

    xx <agent><mode><route>[<tier>] [-s ID] [-m MODEL] [-p PROMPT] [--dry-run] [--tmux] [-- agent args]
    xx start | stop | restart | status | log | watch | usage | scan | doctor | aliases | codes

The launch itself is planned by launcher.launch (argv and environment) from launcher.codes (the
grammar) and launcher.agents (each agent's command line); launcher.run_agent adds what needs the
outside world: the running gateway (started on demand), the crash guard, and finally exec'ing the
agent in xx's place, so it owns the terminal and its signals. This module is the command line and
the user's config. (Pi's broken histories are repaired by the gateway,
addons/translate/pi_repair.py: that is where its requests can be seen.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from addons.config.paths import is_checkout
from launcher import agents, aliases, doctor, lifecycle, usage_report
from launcher.codes import CodeError, code_table, mistyped_command, parse_code
from launcher.config import ConfigError, XXConfig, load_config, xx_home
from launcher.run_agent import rules_view, run_agent
from launcher.scan import places as scan_places
from launcher.scan.command import scan
from launcher.tables import WatchLayout, render_request, render_reset, render_resilience, render_status
from launcher.terminal import TableColumn, fit_table, fit_text, render_text, terminal_width

ROOT = Path(__file__).resolve().parent.parent
# what the aliases call to run xx: a checkout's ./clutch script, or an installed Clutch's own `xx`
# console script (the file this process was started as); aliases.runner_words tells them apart
CLUTCH = ROOT / "clutch" if is_checkout(ROOT) else Path(sys.argv[0]).absolute()
COMMANDS = ("launch", "start", "stop", "restart", "status", "log", "watch", "usage", "scan", "doctor", "aliases",
            "codes", "breakers")

app = typer.Typer(no_args_is_help=False, rich_markup_mode=None,
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
    run_agent(parsed, _config(), extra, session=session, model=model, prompt=prompt, dry_run=dry_run, tmux=tmux,
              yolo=yolo)


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
        width = terminal_width()
        typer.echo(render_status(config.gateway, found, pid, files.log, width))
        if state:
            typer.echo("\n" + render_resilience(state, width))
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
    layout = WatchLayout.for_width(terminal_width())  # one layout for the run: the lines stay aligned
    typer.echo(render_request(None, layout))
    for entry in page["requests"][-history:] if history else []:
        typer.echo(render_request(entry, layout))
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
                typer.echo(render_request(entry, layout))
            after = page["next"]
    except KeyboardInterrupt:
        pass


@app.command(name="usage")
def usage_command(by: usage_report.By = "agent", since: usage_report.Since = "24h", until: usage_report.Until = None,
                  as_json: usage_report.AsJson = False, as_csv: usage_report.AsCsv = False,
                  db: usage_report.Database = None) -> None:
    """Usage by agent, session, model, provider or day: requests, tokens, cost, failures, fallbacks."""
    config = _config()
    target = scan_places.named_store(db) if db else scan_places.usage_db(config, lifecycle.health(config))
    usage_report.usage(by, since, until, as_json, as_csv, target)


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
    typer.echo(render_reset(answer, config.gateway, terminal_width()))


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
                                                                 "else ~/.bashrc")] = None,
                    force: Annotated[list[str] | None, typer.Option(
                        "--force", metavar="NAME", help="take this name even if you already have it (a command "
                                                        "on PATH, a builtin, your alias or function); repeatable, "
                                                        "or NAME,NAME")] = None,
                    take_all: Annotated[bool, typer.Option("--all", help="take every name, shadowing what you "
                                                                         "have")] = False) -> None:
    """Write the classic alias set (cc, ccc, hsi, psi, codex-run, ...) into a marked block of your shell rc;
    names you already have are left out and named."""
    target = rc or aliases.default_rc(dict(os.environ))
    if action not in ("install", "remove", "show"):
        raise fail(f"aliases {action!r}: use install, remove or show")
    skipped = _skipped_aliases(target, force or [], take_all) if action != "remove" else {}
    if action == "show":
        typer.echo(aliases.block(CLUTCH, skipped), nl=False)
        return
    try:
        changed, backup = aliases.install(target, CLUTCH, skipped) if action == "install" else aliases.remove(target)
    except (OSError, ValueError) as e:
        raise fail(f"{target}: {e}", 1) from None
    if not changed:
        typer.echo(f"xx: {target} already {'has the current' if action == 'install' else 'has no'} xx block")
        return
    typer.echo(f"xx: {'wrote' if action == 'install' else 'removed'} the xx block in {target}"
               + (f" (backup: {backup})" if backup else ""))
    if action == "install":
        typer.echo(f"xx: open a new shell or run `source {target}`; then e.g. `ccc`, `hsr ID`, `codex-run \"...\"`")


def _skipped_aliases(rc: Path, force: list[str], take_all: bool) -> dict[str, str]:
    """The names left out of the block (name -> why), after --force and --all; says which and why."""
    forced = {name.strip() for value in force for name in value.split(",") if name.strip()}
    unknown = sorted(forced - set(aliases.ALIASES) - {"xx"})
    if unknown:
        raise fail(f"--force {', '.join(unknown)}: not a name of the block (`xx aliases show` lists them)")
    found = aliases.taken(["xx", *aliases.ALIASES], rc, dict(os.environ), CLUTCH)
    width = terminal_width()
    for name in sorted(set(found) & forced if not take_all else set(found)):
        typer.echo(fit_text(f"xx: taking {name} anyway, shadowing {found[name]}", width), err=True)
    skipped = {} if take_all else {name: why for name, why in found.items() if name not in forced}
    if skipped:
        typer.echo(fit_text(f"xx: left out {len(skipped)} name(s) you already have, so that they keep working "
                            f"(`--force NAME` takes one anyway, `--all` every one):", width), err=True)
        rows = [[name, why] for name, why in skipped.items()]
        fitted = fit_table([TableColumn("name"), TableColumn("you already have", kind="text", min_width=20)],
                           rows, width)
        typer.echo(render_text(fitted.table, width), err=True)
    return skipped


@app.command()
def codes() -> None:
    """The letters of a launch code, every agent's modes, and the config's profiles."""
    config = _config()
    width = terminal_width()
    try:  # the tier letters' models as a launch reads them (launcher.rules_in_force), so both agree
        view = rules_view(config, lifecycle.health(config), dict(os.environ))
        typer.echo(code_table(width, view["launch_tiers"], view["source"]))
    except typer.Exit:  # broken rules: said on stderr; the letters still help
        typer.echo(code_table(width))
    typer.echo(fit_text("\nModes each agent has (- = not offered; xx refuses it and says why):", width))
    rows = [[spec.name, " ".join(mode if agents.has_mode(spec, mode) else "-" for mode in "icnsr"), spec.binary]
            for spec in agents.AGENTS.values()]
    fitted = fit_table([TableColumn("agent"), TableColumn("i c n s r"), TableColumn("binary", kind="key")], rows,
                       width)
    typer.echo(render_text(fitted.table, width))
    if config.profiles:
        typer.echo("\nProfiles (xx config):")
        rows = [[digit, profile.name or "(unnamed)", profile.model or ""] for digit, profile in
                sorted(config.profiles.items())]
        fitted = fit_table([TableColumn("profile"), TableColumn("name", kind="text", min_width=12),
                            TableColumn("model", kind="key", min_width=20)], rows, width)
        typer.echo(render_text(fitted.table, width))


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
