"""`./clutch start|web|env|route`: run the gateway, tell agents how to reach it, explain routing."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from addons.certs import ca_files, prepare
from addons.config.paths import is_checkout, places
from addons.wire.identity import AGENT_LETTERS, AGENT_NAMES, Identity
from launcher import rules_cli, users_cli
from launcher.ports import refuse_taken_ports
from launcher.recipe import ENVIRONMENT_NAMES, agent_environment, proxy_url

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "addons" / "clutch.py"
DEFAULT_PORT = 8780

app = typer.Typer(no_args_is_help=True,
                  help="Clutch: an intercepting gateway for AI coding agents.")

Port = Annotated[int, typer.Option("--port", "-p", envvar="CLUTCH_PORT", help="Listen port (127.0.0.1 only).")]
Rules = Annotated[Path | None, typer.Option("--rules", envvar="CLUTCH_RULES",
                                            help="Rules file, layered over the embedded defaults; default: "
                                                 "$XDG_CONFIG_HOME/clutch/rules.yaml when it exists.")]
Reverse = Annotated[list[str] | None, typer.Option(
    "--reverse", metavar="URL@PORT",
    help="Also serve a base-URL entry: e.g. https://openrouter.ai@8790 (repeatable).")]
Confdir = Annotated[Path | None, typer.Option(
    "--confdir", envvar="CLUTCH_CONFDIR", show_default=False,
    help="Folder of the gateway's CA (mitmproxy's confdir); default: certs/ of a checkout, "
         "else $XDG_DATA_HOME/clutch/ca (see `clutch paths`).")]
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def confdir_or_default(confdir: Path | None) -> Path:
    """The CA folder asked for, else the default one of this Clutch (checkout or installed)."""
    return (confdir or places().ca).expanduser().resolve()


def mitm_arguments(port: int, rules: Path | None, reverse: list[str] | None, extra: list[str],
                   confdir: Path | None = None) -> list[str]:
    args = ["-s", str(SCRIPT), "--listen-host", "127.0.0.1", "--mode", f"regular@{port}",
            "--set", f"confdir={confdir_or_default(confdir)}",
            "--set", "connection_strategy=lazy"]
    for entry in reverse or []:
        target, sep, reverse_port = entry.rpartition("@")
        if not sep or not reverse_port.isdigit():
            raise typer.BadParameter(f"{entry!r}: write URL@PORT, e.g. https://openrouter.ai@8790")
        args += ["--mode", f"reverse:{target}@127.0.0.1:{reverse_port}"]
    if rules is not None:
        args += ["--set", f"clutch_rules={rules.expanduser().resolve()}"]
    return args + extra


@app.command(context_settings=PASS_THROUGH)
def start(ctx: typer.Context, port: Port = DEFAULT_PORT, rules: Rules = None, reverse: Reverse = None,
          confdir: Confdir = None) -> None:
    """Run the gateway in the foreground (mitmdump). Extra options go to mitmdump."""
    args = mitm_arguments(port, rules, reverse, ctx.args, confdir)
    refuse_taken_ports(port, reverse)
    _exec("mitmdump", args)


@app.command(context_settings=PASS_THROUGH)
def web(ctx: typer.Context, port: Port = DEFAULT_PORT, rules: Rules = None, reverse: Reverse = None,
        confdir: Confdir = None,
        web_port: Annotated[int, typer.Option(help="mitmweb's UI port")] = DEFAULT_PORT + 1) -> None:
    """Run the gateway with mitmweb's UI, keeping streamed bodies so responses are visible."""
    args = web_arguments(port, rules, reverse, ctx.args, confdir, web_port)
    refuse_taken_ports(port, reverse)
    _exec("mitmweb", args)


# mitmweb's flow list; its columns are compiled into its page (mitmproxy/tools/web/web_columns.py), so
# Clutch's own information goes where one exists: the comment (route, attempts, who served) and the
# marker in the path cell (a fallback answered, every candidate failed)
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")


def web_arguments(port: int, rules: Path | None, reverse: list[str] | None, extra: list[str],
                  confdir: Path | None, web_port: int) -> list[str]:
    """mitmweb's command line: the gateway's, the UI on loopback, streamed bodies kept, and the columns.

    `web_columns` is a sequence option: each `--set web_columns=NAME` adds one column (mitmproxy's
    OptManager.set collects repeated values). A comma-joined value is a single unknown column, and the
    flow list then renders nothing. Columns the user sets in `extra` replace Clutch's."""
    args = mitm_arguments(port, rules, reverse, extra, confdir)
    args += ["--web-host", "127.0.0.1", "--web-port", str(web_port), "--set", "store_streamed_bodies=true"]
    if not any(arg.startswith("web_columns=") for arg in extra):
        for column in WEB_COLUMNS:
            args += ["--set", f"web_columns={column}"]
    return args


@app.command()
def env(port: Port = DEFAULT_PORT, confdir: Confdir = None,
        agent: Annotated[str, typer.Option(help=f"Agent name ({', '.join(AGENT_NAMES)}) put in the proxy credentials")]
        = "unknown",
        session: Annotated[str | None, typer.Option(help="Session id to attach to every request")] = None,
        unset: Annotated[bool, typer.Option("--unset", help="Print the lines that undo it: eval \"$(clutch env "
                                                            "--unset)\"")] = False) -> None:
    """Print the CA paths and the environment an agent needs, as shell `export` lines."""
    if unset:
        typer.echo("# Undoes `clutch env`: unsets every variable it sets (even one set before it)")
        typer.echo(textwrap.fill(" ".join(ENVIRONMENT_NAMES), 74, initial_indent="unset ", subsequent_indent="unset "))
        return
    agent = AGENT_LETTERS.get(agent, agent)
    if agent not in AGENT_NAMES:
        raise typer.BadParameter(f"unknown agent {agent!r}; one of {', '.join(AGENT_NAMES)}")
    files = prepare(confdir_or_default(confdir))
    url = proxy_url("127.0.0.1", port, Identity(agent=agent, session=session))
    typer.echo(f"# Clutch CA certificate: {files.ca_cert}")
    typer.echo(f"# Combined trust bundle (system roots + Clutch CA): {files.bundle}")
    typer.echo(f"# Gateway: 127.0.0.1:{port}; health: curl http://127.0.0.1:{port}/health")
    typer.echo("# While the gateway is stopped, requests this shell sends through it fail")
    clutch = "./clutch" if is_checkout() else "clutch"
    typer.echo(f"# (connection refused). Undo these lines: eval \"$({clutch} env --unset)\"")
    for name, value in agent_environment(url, files).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command()
def route(body: Annotated[Path, typer.Argument(help="A request body saved as JSON (or a corpus record)")],
          url: Annotated[str | None, typer.Option(help="The URL the agent called; guessed from the body's shape")]
          = None,
          agent: Annotated[str | None, typer.Option(help="Agent name, for its rules profile")] = None,
          launch: Annotated[str | None, typer.Option(help="An xx launch code, e.g. cip, hcf, xnb3")] = None,
          rules: Rules = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print everything, with the upstream body")] = False,
          ) -> None:
    """Dry-run the router: print what the gateway would do with a request, without sending it."""
    from addons.config.rules import RulesError
    from launcher import explain
    try:
        result = explain.explain(explain.read_body(body), url=url, rules_path=rules,
                                 identity=explain.identity_for(AGENT_LETTERS.get(agent, agent) if agent else None,
                                                              launch))
    except (OSError, ValueError, RulesError) as e:
        typer.echo(f"clutch route: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else explain.render_explanation(result))


@app.command()
def resilience(port: Port = DEFAULT_PORT,
               as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON")] = False) -> None:
    """Show the running gateway's circuit breakers, quota use and sticky sessions."""
    import httpx
    try:
        state = httpx.get(f"http://127.0.0.1:{port}/resilience", timeout=5, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as e:
        typer.echo(f"clutch resilience: no gateway answers on 127.0.0.1:{port} ({e})", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(state, indent=2))
        return
    from launcher.tables import render_resilience
    from launcher.terminal import terminal_width
    typer.echo(render_resilience(state, terminal_width()))


@app.command()
def paths(confdir: Confdir = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print absolute paths as JSON")] = False) -> None:
    """Where Clutch keeps its files: your rules and keys, the CA, state, usage, the addon script."""
    from launcher.paths_report import file_map, render_paths
    found = file_map(places(), ca_files(confdir_or_default(confdir)), SCRIPT, ROOT)
    typer.echo(json.dumps(found, indent=2) if as_json else render_paths(found))


@app.command(name="addon-path")
def addon_path() -> None:
    """The script mitmproxy loads: mitmdump -s "$(clutch addon-path)" (or mitmweb -s ...)."""
    typer.echo(str(SCRIPT))


def mitmproxy_tool(tool: str) -> Path:
    """mitmproxy's command `tool` (mitmdump, mitmweb) of the environment this Python imports mitmproxy
    from: where its installer wrote it (pip's RECORD: a venv's bin/, ~/.local/bin for --user), else
    beside this Python. Never one found on PATH, which may belong to another environment."""
    from importlib import metadata
    with contextlib.suppress(metadata.PackageNotFoundError):
        for file in metadata.distribution("mitmproxy").files or []:
            if file.name == tool and "bin" in file.parts[:-1]:
                recorded = Path(str(file.locate())).resolve()
                if os.access(recorded, os.X_OK):
                    return recorded
    beside = Path(sys.executable).with_name(tool)
    if os.access(beside, os.X_OK):
        return beside
    raise FileNotFoundError(f"{tool} is not installed beside this Python ({sys.executable}) nor where "
                            f"mitmproxy's installer put it: reinstall Clutch with its dependencies")


def _exec(tool: str, args: list[str]) -> None:
    try:
        binary = mitmproxy_tool(tool)
    except FileNotFoundError as e:
        typer.echo(f"clutch: {e}", err=True)
        raise typer.Exit(2) from None
    os.execv(binary, [str(binary), *args])


app.command(name="init")(rules_cli.init_command)
app.add_typer(rules_cli.app, name="rules")
app.add_typer(users_cli.app, name="users")


if __name__ == "__main__":
    app(prog_name="clutch")
