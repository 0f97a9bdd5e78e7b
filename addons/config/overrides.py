"""Environment overrides for users coming from claude-code-proxy, whose `.env` set the models with
BIG_MODEL, ROUTER_THINK and friends. A variable that is set wins over the rules file.

Pure logic, no mitmproxy. Values are targets (`provider:model`); a bare model name, as in
claude-code-proxy's `.env`, means the `openrouter` provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from addons.config.rules import Rules, RulesError

# variable -> (section, field, kind)
ENV_OVERRIDES: dict[str, tuple[str, str, str]] = {
    "BIG_MODEL": ("tiers", "big", "target"),
    "MIDDLE_MODEL": ("tiers", "middle", "target"),
    "SMALL_MODEL": ("tiers", "small", "target"),
    "TOOLCALL_MODELS": ("routes", "toolcall", "target_list"),
    "OPENROUTER_FALLBACK_MODELS": ("fallback", "models", "target_list"),
    "FALLBACK_METHOD": ("fallback", "method", "text"),
    "ROUTER_DEFAULT": ("routes", "default", "target"),
    "ROUTER_BACKGROUND": ("routes", "background", "target"),
    "ROUTER_THINK": ("routes", "think", "target"),
    "ROUTER_LONG_CONTEXT": ("routes", "long_context", "target"),
    "ROUTER_LONG_CONTEXT_THRESHOLD": ("routes", "long_context_threshold", "int"),
    "ROUTER_WEB_SEARCH": ("routes", "web_search", "target"),
    "ROUTER_IMAGE": ("routes", "image", "target"),
    "ROUTER_CUSTOM_PATH": ("routes", "custom", "path"),
}
BARE_MODEL_PROVIDER = "openrouter"


def apply_overrides(rules: Rules, environ: Mapping[str, str] | None = None) -> tuple[Rules, dict[str, str]]:
    """The rules with every set override applied, and the overrides in force (variable -> value)."""
    environ = os.environ if environ is None else environ
    in_force = {name: environ[name].strip() for name in ENV_OVERRIDES if environ.get(name, "").strip()}
    if not in_force:
        return rules, {}
    # only what the file set: re-validating a full dump would mark every field of every profile as set, and
    # a profile's empty tier would then hide the override (layers replace the fields a profile sets)
    data = rules.model_dump(exclude_unset=True)
    for name, value in in_force.items():
        section, field, kind = ENV_OVERRIDES[name]
        data.setdefault(section, {})
        if kind == "target":
            data[section][field] = _target(name, value, rules)
        elif kind == "int":
            try:
                data[section][field] = int(value)
            except ValueError:
                raise RulesError("environment", None, name, f"{value!r} is not a whole number") from None
        elif kind == "path":
            data[section][field] = str(Path(value).expanduser().resolve())
        elif kind == "target_list":
            targets = [_target(name, item, rules) for item in value.split(",") if item.strip()]
            if field == "toolcall":
                # claude-code-proxy tried its TOOLCALL_MODELS in order: the first is the route,
                # the rest its cascade
                data["routes"]["toolcall"] = targets[0] if targets else None
                if len(targets) > 1:
                    data.setdefault("cascades", {})[targets[0]] = targets[1:]
            else:
                data[section][field] = targets
        else:
            data[section][field] = value
    try:
        updated = Rules.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        culprit = _culprit(first["loc"])
        raise RulesError("environment", None, culprit, first["msg"].removeprefix("Value error, ")) from None
    updated._base_dir = rules._base_dir
    for loc, message in updated.problems()[:1]:
        raise RulesError("environment", None, _culprit(loc), message)
    return updated, in_force


def _target(name: str, value: str, rules: Rules) -> str:
    value = value.strip()
    provider, sep, model = value.partition(":")
    if sep and provider in rules.providers:
        return value
    if BARE_MODEL_PROVIDER not in rules.providers:
        raise RulesError("environment", None, name,
                         f"{value!r}: write provider:model (no {BARE_MODEL_PROVIDER!r} provider for a bare model)")
    return f"{BARE_MODEL_PROVIDER}:{value}"


def _culprit(loc: tuple[Any, ...]) -> str:
    for name, (section, field, _) in ENV_OVERRIDES.items():
        if tuple(loc[:2]) == (section, field):
            return name
    return ".".join(str(p) for p in loc)
