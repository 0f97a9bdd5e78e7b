"""Which rules a gateway runs on, as the launcher sees them: one loader for `xx doctor`, every `xx`
launch, `xx codes`, `xx scan`, `./clutch route` and `./clutch rules check`, so that none of them can
disagree with another or with the gateway (`xx codes` listing a tier that `xx cnpk` says has no model).

The rules are the running gateway's when one answers (its /health names the user's file, and the
claude-code-proxy overrides it runs with), else those a gateway `xx` starts would load: the xx
config's `rules`, or a `--set clutch_rules=` among its `gateway_args` (the last one wins, as in
mitmdump), else `$XDG_CONFIG_HOME/clutch/rules.yaml` when it exists; always layered over the
embedded defaults (addons/config/layering.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from addons.config.keyfile import ProviderKeys, read_keys_file
from addons.config.layering import RulesSource, load_layered, rules_source
from addons.config.overrides import apply_overrides
from addons.config.paths import places
from addons.config.rules import Rules
from launcher.config import XXConfig, gateway_option


def started_rules_option(config: XXConfig) -> str | None:
    """The rules file a gateway xx starts is given (None: it looks in the XDG folder itself)."""
    return gateway_option(config, "clutch_rules") or config.rules


def source_for(config: XXConfig, healthy: dict | None = None, environ: Mapping[str, str] | None = None,
               option: str | Path | None = None) -> RulesSource:
    """The user's file: `option` when given, else the running gateway's (`healthy`, its /health), else
    the one a gateway xx starts would load."""
    if option is not None and str(option):
        return rules_source(option, environ)
    running = ((healthy or {}).get("rules") or {}).get("path")
    if isinstance(running, str) and running:
        return rules_source(running, environ)
    return rules_source(started_rules_option(config), environ)


def effective_rules(source: RulesSource, overrides: Mapping[str, str]) -> Rules:
    """The rules a gateway runs on: the defaults, the user's file, then its claude-code-proxy
    variables (BIG_MODEL, ...). Raises RulesError."""
    return apply_overrides(load_layered(source), overrides)[0]


def provider_keys(environ: Mapping[str, str], keys_file: Path | None = None) -> ProviderKeys:
    """The keys as a gateway with this environment reads them: the environment, then the keys file
    (`keys_file`, else places().keys of `environ`). Raises RulesError for a keys file it would refuse."""
    path = keys_file or places(dict(environ)).keys
    return ProviderKeys(read_keys_file(path), path, environ)
