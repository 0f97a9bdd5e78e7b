"""The rules in force: the embedded defaults (rules/default.yaml) with the user's file layered over them.

Why layers: a user's file used to replace the defaults, so a file that forgot `anthropic` silently
stopped intercepting Claude Code, and a file without `launch_tiers` left `xx cnpk` with no model. Now
a user's file says only what differs, as a LiteLLM config does, and everything it does not mention
stays as the defaults have it.

The user's file is the one named by `--rules` / `clutch_rules` / the xx config's `rules:`, else
`$XDG_CONFIG_HOME/clutch/rules.yaml` (addons.config.paths) when it exists, else there is none. The
merge:

* a section merges field by field: `tiers: {big: ...}` sets one tier and keeps the others, `fallback:
  {sort: price}` keeps the defaults' method;
* in a named table (providers, aliases, cascades, quotas, profiles, launch_tiers, the budgets'
  agents and providers) an entry the user's file names replaces the default's entry of that name
  whole, and every other entry stays. A provider is one definition: were it merged field by field,
  a user who points `openrouter` at a mirror's base_url would silently keep the default's hosts and
  key variable, and the OpenRouter key would go to a host the user never named with it. Written
  whole, the provider is exactly what the file says, and a missing base_url is an error naming it;
* anything else (a string, a number, a list) replaces: `dialects: [openai_chat]` is the whole list;
* `null` removes what the defaults set (`providers: {gemini: null}`, `aliases: {coder-model: null}`,
  `launch_tiers: {k: null}`); where the defaults set nothing, null stays for the schema to read, as
  it would in a file on its own (in a profile, `big: null` unsets the tier for that agent).

Errors name the user's file, its line and the field. A mistake only the merged rules show, in a
value the user's file does not contain (it removed a provider the defaults still route to), names
the user's file and the field, and says where the defaults set it.

Pure logic, no mitmproxy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from addons.config.paths import places
from addons.config.rules import DEFAULT_RULES_PATH, Rules, RulesError, read_config_text, validate_rules
from addons.config.yaml_lines import line_of, read_yaml

MAX_RULES_BYTES = 1024 * 1024  # a rules file is a few kilobytes; past this it is not one


@dataclasses.dataclass(frozen=True)
class RulesSource:
    """Which user file is layered over the defaults, and whether it must exist."""

    user: Path | None  # None: the defaults alone
    explicit: bool  # named by an option: a missing file is an error, not "no file"

    @property
    def present(self) -> Path | None:
        """The user's file as it is now: named and required, or found where Clutch looks."""
        if self.user is None:
            return None
        return self.user if self.explicit or self.user.is_file() else None

    @property
    def shown(self) -> Path:
        """The one path that stands for these rules (in /health, notes, errors): the user's file, or
        the embedded defaults when there is none."""
        return self.present or DEFAULT_RULES_PATH

    def describe(self) -> str:
        present = self.present
        if present is None:
            return f"the embedded defaults ({DEFAULT_RULES_PATH.name}; no {self.user or 'user file'})"
        return f"{present} over the embedded defaults"


def rules_source(option: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> RulesSource:
    """The user's rules file: `option` (--rules, clutch_rules, the xx config's rules) when given, else
    `$XDG_CONFIG_HOME/clutch/rules.yaml` of `env` (os.environ unless given). Naming the embedded
    defaults themselves means no user file."""
    if option is not None and str(option).strip():
        path = Path(os.path.expanduser(str(option).strip())).resolve()
        return RulesSource(None if path == DEFAULT_RULES_PATH else path, True)
    return RulesSource(places(dict(env) if env is not None else None).rules, False)


def load_layered(source: RulesSource) -> Rules:
    """The defaults with the user's file over them, validated; raise RulesError naming the user's file,
    line and field (or the defaults' file, were the defaults themselves broken)."""
    default_root, default_data = _document(DEFAULT_RULES_PATH)
    user = source.present
    if user is None:
        return validate_rules(default_data, DEFAULT_RULES_PATH.parent,
                              lambda loc, message: _at(DEFAULT_RULES_PATH, default_root, loc, message))
    user_root, user_data = _document(user)
    merged = merge(default_data, user_data)

    def locate(loc: tuple, message: str) -> RulesError:
        field = _field(loc)
        missing = message == "Field required"  # in an entry of the user's file
        if missing and loc[:1] == ("providers",) and _holds(default_root, loc[:2]):
            message += f" (a provider named here replaces the defaults' {loc[1]} whole: write all its fields)"
        if user_root is not None and _holds(user_root, loc):
            return RulesError(str(user), line_of(user_root, loc), field, message)
        if _holds(default_root, loc) and not missing:
            line = line_of(default_root, loc)
            return RulesError(str(user), None, field, f"{message} (set by the embedded defaults, "
                                                      f"{DEFAULT_RULES_PATH.name}:{line}; `null` here removes it)")
        return RulesError(str(user), line_of(user_root, loc) if user_root is not None else None, field, message)

    return validate_rules(merged, user.parent, locate)


# The named tables: name -> entry. A user's entry replaces the default's entry of that name whole.
ENTRY_TABLES = {("providers",), ("aliases",), ("cascades",), ("quotas",), ("profiles",), ("launch_tiers",),
                ("budgets", "agents"), ("budgets", "providers")}


def merge(base: Any, over: Any, at: tuple[str, ...] = ()) -> Any:
    """`over` layered on `base`: sections field by field; in a named table (ENTRY_TABLES) each entry
    whole; anything else replaces. A null removes the base's key (and stays a null where the base
    has none)."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    merged = dict(base)
    for key, value in over.items():
        if value is None and key in base:
            del merged[key]
        elif at in ENTRY_TABLES:
            merged[key] = value
        else:
            merged[key] = merge(base.get(key), value, (*at, str(key)))
    return merged


def _document(path: Path) -> tuple[Any, dict]:
    """A rules file's node tree and data; an empty file (all comments, as `clutch init` writes it) is
    an empty mapping: nothing changed."""
    text = read_config_text(path, MAX_RULES_BYTES, "rules file")
    root, data = read_yaml(text, str(path), RulesError)
    if data is None:
        return root, {}
    if not isinstance(data, dict):
        raise RulesError(str(path), 1, None, "the rules file must be a mapping (providers:, tiers:, ...)")
    return root, data


def _holds(node: Any, loc: tuple) -> bool:
    """Whether the document has a value at every step of `loc` (pydantic's error location)."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return False
        if node is None:
            return False
    return True


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _at(path: Path, root: Any, loc: tuple, message: str) -> RulesError:
    return RulesError(str(path), line_of(root, loc), _field(loc), message)
