"""Provider keys a launch needs: Claude Code routed away from Anthropic with no key of its own, and
the key of every provider the rules name (for `xx doctor`).

Why: Claude Code refuses to start without a credential ("Not logged in · Please run /login"), even
when the rules send its requests to another provider, whose key the gateway adds itself: for a
request routed to another provider the gateway removes the agent's key and sends the provider's
`key_env` (addons/routing/plan.py). So a Claude Code launch on route p whose requests leave Anthropic, with
neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN set and no login of its own (`claude auth
status`), is told so before it starts.

Decision, a placeholder credential: only when every LLM request of the launch leaves Anthropic (a
tier letter of launch_tiers or of the model scan, a `-m provider:model` or profile pin, or a default
route with nothing in the agent's layer pointing back to Anthropic) and `claude auth status` says
Claude Code has no login (a placeholder would override an OAuth login). Then the key Claude Code
sends is never used for a model call, and xx sets ANTHROPIC_AUTH_TOKEN (Claude Code's variable for
LLM gateways: a Bearer token, no "use this API key?" question, and, seen with 2.1.330, fewer
start-up calls than with an API key) to a placeholder so Claude Code starts; its own calls to
api.anthropic.com (telemetry, bootstrap) carry no real key and get 401s there. When only some
requests leave (a tier for opus, a think route...), a placeholder would turn the rest into "Invalid
auth token" errors from Anthropic, which hide the real problem, so xx sets nothing and says what to
do: set the key, log in (`claude /login`), or pin the whole launch elsewhere.

Pure, except `logged_in` (and `claude_advice`, which calls it): they ask the agent.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import shutil
import subprocess
from collections.abc import Mapping

from addons.config.rules import ModelTarget, Rules
from addons.routing.router import layer_for
from addons.routing.signals import family
from launcher.codes import LaunchCode

ANTHROPIC_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
PLACEHOLDER_VARIABLE = "ANTHROPIC_AUTH_TOKEN"
PLACEHOLDER = "clutch-placeholder-not-an-anthropic-key"
CLAUDE_HOST = ("api.anthropic.com", 443)
# Model names Claude Code sends, one per family: what an alias must match to apply to it.
CLAUDE_MODELS = ("claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5")
_ROUTES = ("default", "background", "think", "long_context", "web_search", "image", "toolcall")


@dataclasses.dataclass(frozen=True)
class Routing:
    """Where one agent's requests may go for one launch: the rules in force for it, by field."""

    source: str
    home: str | None  # the provider that owns Claude Code's own API host (None: not intercepted)
    providers: tuple[str, ...]
    launch_tiers: dict[str, str]
    fields: dict[str, str]  # tiers.big, routes.think, aliases.<name> ... -> target
    custom: str | None = None  # a custom router file (it may send anything anywhere)
    partial: bool = False  # the agent's profile and the aliases are unknown (only /health's summary)


def routing_for(rules: Rules, source: str, agent: str, digit: str | None) -> Routing:
    """The agent's layer (rules, then profiles.<agent>, then the launch's profile digit)."""
    home = rules.provider_at(*CLAUDE_HOST)
    layer = layer_for(rules, agent, digit)
    fields = {f"tiers.{name}": target for name, target in layer.tiers.items() if target}
    fields.update({f"routes.{name}": layer.routes[name] for name in _ROUTES if layer.routes.get(name)})
    fields.update({f"aliases.{name}": target for name, target in layer.aliases.items() if _claude_alias(name)})
    launch_tiers: dict[str, str] = {letter: target for letter, target in rules.launch_tiers.items()}
    return Routing(source, home[0] if home else None, tuple(sorted(rules.providers)), launch_tiers,
                   fields, layer.routes.get("custom"))


def routing_from_summary(summary: Mapping, source: str) -> Routing:
    """From /health's rules summary alone (the gateway's file cannot be read here): top-level tiers
    and routes, no profiles or aliases; Claude Code's provider is taken to be `anthropic`. Whatever
    is not the shape the gateway sends is left out."""
    def section(name: str) -> dict:
        found = summary.get(name)
        return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}

    providers = summary.get("providers")
    providers = tuple(p for p in providers if isinstance(p, str)) if isinstance(providers, list) else ()
    fields = {f"tiers.{name}": target for name, target in section("tiers").items()}
    fields.update({f"routes.{name}": target for name, target in section("routes").items() if name in _ROUTES})
    return Routing(source, "anthropic" if "anthropic" in providers else None, providers, section("launch_tiers"),
                   fields, section("routes").get("custom"), partial=True)


def routing_of(view: Mapping, code: LaunchCode) -> Routing:
    """Claude Code's routing for a launch, from xx's view of the rules in force (launcher.run_agent
    rules_view): the whole rules where they could be read, else the gateway's /health summary."""
    digit = code.tier if code.tier and code.tier.isdigit() else None
    if view.get("rules") is not None:
        return routing_for(view["rules"], view["source"], "claude", digit)
    return routing_from_summary(view.get("summary") or {}, f"{view['source']}, whose file xx cannot read: its "
                                                            "profiles and aliases are not known here")


def _claude_alias(pattern: str) -> bool:
    """Could this alias apply to a model name Claude Code sends?"""
    return family(pattern.replace("*", "")) is not None or any(fnmatch.fnmatchcase(m, pattern) for m in CLAUDE_MODELS)


@dataclasses.dataclass(frozen=True)
class Away:
    """Claude Code's requests that the launch sends to providers other than its own."""

    every: bool  # every LLM request of the launch
    targets: tuple[tuple[str, str], ...]  # (why, target)

    def describe(self) -> str:
        return ", ".join(f"{why} -> {target}" for why, target in self.targets)


def claude_away(routing: Routing, code: LaunchCode, pin: str | None, ranked: str | None) -> Away | None:
    """Which of Claude Code's requests leave Anthropic on this launch; None when none do. `pin` is
    the launch's `-m provider:model` or profile model, `ranked` the model scan's pick for tier m/f."""
    if code.agent != "claude" or code.route != "p" or routing.home is None:
        return None  # route b never changes the model; route d bypasses the gateway
    launch: tuple[str, str] | None = None
    pinned = ModelTarget.parse(pin) if pin else None
    if pin and pinned is not None and pinned.provider in routing.providers:  # else the gateway ignores it, too
        launch = ("the launch's pin", pin)
    elif code.tier and not code.tier.isdigit():
        if code.tier in routing.launch_tiers:
            launch = (f"launch_tiers.{code.tier}", routing.launch_tiers[code.tier])
        elif ranked:
            launch = (f"tier {code.tier} (the model scan)", ranked)
    if launch is not None:
        return Away(True, (launch,)) if _elsewhere(routing, launch[1]) else None
    away = tuple((why, target) for why, target in routing.fields.items() if _elsewhere(routing, target))
    if not away:
        return None
    # a default route catches what no other rule takes: with no rule pointing back and no custom
    # router, nothing is left for Anthropic
    every = "routes.default" in routing.fields and len(away) == len(routing.fields) and not routing.custom
    return Away(every, away)


def _elsewhere(routing: Routing, target: str) -> bool:
    parsed = ModelTarget.parse(target)
    return parsed is not None and parsed.provider != routing.home


@dataclasses.dataclass(frozen=True)
class Advice:
    note: str
    env: dict[str, str]  # what xx adds to the launch's environment (the placeholder), or nothing


def advise(away: Away | None, env: Mapping[str, str], login: bool | None, source: str) -> Advice | None:
    """What xx says (and sets) before a Claude Code launch whose requests leave Anthropic. `login`:
    what `claude auth status` said (None: could not tell)."""
    if away is None or any(env.get(name, "").strip() for name in ANTHROPIC_KEYS) or login:
        return None
    where = f"{away.describe()}; rules: {source}"
    unknown = " (and whether it has a login of its own could not be told)" if login is None else ""
    if away.every and login is False:
        return Advice(f"every request of this launch leaves Anthropic ({where}), and Claude Code has no key "
                      f"or login: xx sets {PLACEHOLDER_VARIABLE} to a placeholder so it starts. The gateway "
                      "sends each request with the target provider's own key; Claude Code's own calls to "
                      "api.anthropic.com (telemetry, bootstrap) get 401 there",
                      {PLACEHOLDER_VARIABLE: PLACEHOLDER})
    if away.every:
        which, fix = "its requests go", ("Set ANTHROPIC_AUTH_TOKEN (any value: the gateway sends the provider's own "
                                         "key instead) or log in with `claude /login`")
    else:
        which, fix = "some of its requests go", ("Set ANTHROPIC_API_KEY (its requests that stay on Anthropic need "
                                                 "a real key), log in with `claude /login`, or send the whole "
                                                 "launch elsewhere (a tier letter, e.g. `xx cipd`, or -m "
                                                 "provider:model), where xx supplies a placeholder")
    return Advice(f"Claude Code has neither ANTHROPIC_API_KEY nor ANTHROPIC_AUTH_TOKEN{unknown}, and {which} to "
                  f"other providers ({where}). Without a credential Claude Code stops with \"Not logged in · "
                  f"Please run /login\". {fix}", {})


def claude_advice(code: LaunchCode, binary: str, env: Mapping[str, str], pin: str | None, routing: Routing,
                  ranked: str | None) -> Advice | None:
    """The whole check for one launch: `claude auth status` is asked only when the rules send
    requests away and no key is set (it costs a start of Claude Code, about 0.2 s)."""
    away = claude_away(routing, code, pin, ranked)
    if away is None or any(env.get(name, "").strip() for name in ANTHROPIC_KEYS):
        return None
    found = shutil.which(binary, path=env.get("PATH"))
    return advise(away, env, logged_in(found, env) if found else None, routing.source)


def logged_in(binary: str, env: Mapping[str, str], timeout: float = 15.0) -> bool | None:
    """`claude auth status` (JSON: loggedIn) with the launch's environment; None when it cannot
    tell. It reads Claude Code's config dir, keychain and settings (OAuth, apiKeyHelper, Bedrock...),
    which xx could not judge from the files alone."""
    try:
        result = subprocess.run([binary, "auth", "status", "--json"], env=dict(env), capture_output=True,
                                text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        status = json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    found = status.get("loggedIn") if isinstance(status, dict) else None
    return found if isinstance(found, bool) else None


def mask(value: str) -> str:
    """A key as `xx doctor` may show it: a short prefix (never more than a quarter of it) and its length."""
    value = value.strip()
    return f"{value[:min(6, len(value) // 4)]}…, {len(value)} characters"
