"""`./clutch init` and `./clutch rules check [FILE]`: a starter rules file where Clutch looks for it,
and the rules in force (the defaults with the user's file over them) printed with each target's
fallback chain, so a user sees what a short file amounts to before a gateway runs on it.

Both read the rules as the gateway does (addons/config/layering.py, keyfile.py); nothing here starts
or asks a gateway.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from addons.config.keyfile import missing_keys
from addons.config.layering import load_layered, rules_source
from addons.config.overrides import apply_overrides
from addons.config.paths import ROOT, places
from addons.config.rules import ModelTarget, Rules, RulesError
from addons.fallback.cascade import chain
from launcher.rules_in_force import provider_keys

STARTER = ROOT / "rules" / "starter.yaml"
KEYS_STARTER = """\
# Provider keys for Clutch: NAME=value, one a line, read when the environment does not set NAME
# (the environment wins). Keep this file readable by you alone (chmod 600): Clutch refuses it
# otherwise. The rules name these variables (key_env: NAME, or api_key: ${NAME}).
#
# OPENROUTER_API_KEY=sk-or-v1-...
# ANTHROPIC_API_KEY=sk-ant-...
"""

app = typer.Typer(no_args_is_help=True, help="The rules in force: check them, see each fallback chain.")


def init_command(force: Annotated[bool, typer.Option("--force", help="replace an existing rules file")] = False,
         keys: Annotated[bool, typer.Option("--keys", help="also create an empty keys file (0600)")] = False,
         ) -> None:
    """Write a commented starter rules file where Clutch looks for it ($XDG_CONFIG_HOME/clutch)."""
    where = places()
    where.config.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        _write(where.rules, STARTER.read_text(encoding="utf-8"), 0o644, replace=force)
    except FileExistsError:
        typer.echo(f"clutch init: {where.rules} exists; --force replaces it", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"clutch: wrote {where.rules}")
    typer.echo("  (all comments: the defaults apply until you uncomment something)")
    if keys:
        try:
            _write(where.keys, KEYS_STARTER, 0o600, replace=False)  # never replaced: it holds keys
            typer.echo(f"clutch: wrote {where.keys} (0600)")
        except FileExistsError:
            typer.echo(f"clutch: {where.keys} exists; left as it is")
    typer.echo("Check the rules in force: ./clutch rules check")


@app.command(name="check")
def check_rules_command(file: Annotated[Path | None, typer.Argument(
        envvar="CLUTCH_RULES", show_default=False,
        help="rules file; default: $XDG_CONFIG_HOME/clutch/rules.yaml when it exists")] = None) -> None:
    """Validate the rules, then print those in force (YAML) and each target's fallback chain."""
    source = rules_source(file)
    try:
        rules, overrides = apply_overrides(load_layered(source))
        keys = provider_keys(os.environ)
    except RulesError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"# The rules in force: {source.describe()}")
    if overrides:
        typer.echo(f"# with the environment's {', '.join(sorted(overrides))}")
    typer.echo(yaml.safe_dump(rules.model_dump(mode="json", exclude_none=True), sort_keys=False, width=100), nl=False)
    typer.echo("\n" + render_chains(rules))
    for missing in missing_keys(rules, keys):
        typer.echo(f"clutch: warning: {missing.describe(keys.path)}", err=True)


def render_chains(rules: Rules) -> str:
    """Each target the rules name, and what the cascade tries for it, in order (no breaker open, no
    quota used up; the model scan's m / f tiers and replacements are not rules, so not shown). As
    YAML comments, so the whole output still reads as a rules file."""
    lines = ["# What the cascade tries for each target, in order:"]
    seen = []
    for loc, text in rules.targets():
        target = ModelTarget.parse(text)
        if loc[0] in ("cascades", "fallback") or target is None:
            continue  # the chains themselves
        where = ".".join(str(part) for part in loc)
        seen.append((where, " -> ".join(str(t) for t in chain(target, rules))))
    width = max((len(where) for where, _ in seen), default=0)
    lines += [f"#   {where:<{width}}  {steps}" for where, steps in seen] or ["#   (no target: every request "
                                                                             "keeps its model)"]
    if rules.fallback.method == "openrouter_native":
        lines.append("# fallback.method openrouter_native: Clutch asks once; OpenRouter tries the rest itself")
    return "\n".join(lines)


def _write(path: Path, text: str, mode: int, replace: bool) -> None:
    """Written whole or not at all (a temporary file renamed), with its mode from the start."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)  # fails if the file appeared meanwhile: never overwritten
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
