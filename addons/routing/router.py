"""The routing decision: which provider and model serve a request, and which rule said so.

Pure logic, no mitmproxy. The order, first match wins:

    launch options (xx):  bypass (route b) -> model override -> tier letter (launch_tiers; for m and f
                          without one, the model scan's ranking: ranking.py)
    per request:          custom router -> explicit provider:model -> subagent tag -> image
                          -> web_search -> long_context -> think -> toolcall -> background
    by model name:        alias -> Claude family tier (opus/sonnet/haiku) -> default route
    otherwise:            unchanged (the agent's own provider and model)

Tiers, routes and aliases come in layers: the rules file, then the agent's profile
(`profiles.claude`, ...), then a profile chosen at launch (`xx ...3` = `profiles."3"`); a field set
in a later layer wins. Task routes are read from the request in its own dialect (signals.py).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

from addons.config.rules import ModelTarget, Routes, Rules, Tiers
from addons.models.ranking import TierPick
from addons.routing import signals
from addons.wire.dialects import Dialect
from addons.wire.identity import Identity

BACKGROUND_MAX_TOKENS = 256
TASK_ROUTES = ("image", "web_search", "long_context", "think", "toolcall", "background")
_FAMILY_TIER = {"opus": "big", "sonnet": "middle", "haiku": "small"}
RANKED_TIERS = ("m", "f")  # launch tiers the model scan fills when launch_tiers does not pin them


@dataclasses.dataclass(frozen=True)
class Layer:
    """The tiers, routes and aliases in force for one agent and launch, and where they came from."""

    tiers: dict[str, str | None]
    routes: dict[str, Any]
    aliases: dict[str, str]
    sources: tuple[str, ...]

    @property
    def long_context_threshold(self) -> int:
        return self.routes["long_context_threshold"]


def layer_for(rules: Rules, agent: str, launch_profile: str | None = None) -> Layer:
    tiers = rules.tiers.model_dump()
    routes = rules.routes.model_dump()
    aliases = dict(rules.aliases)
    sources = ["rules"]
    for name in (agent, launch_profile):
        profile = rules.profiles.get(name) if name else None
        if profile is None:
            continue
        sources.append(f"profile {name}")
        tiers.update(_explicit(profile.tiers))
        routes.update(_explicit(profile.routes))
        aliases.update(profile.aliases)
    return Layer(tiers, routes, aliases, tuple(sources))


def _explicit(section: Tiers | Routes) -> dict[str, Any]:
    """Only the fields a profile sets: an unset field must not erase the layer below."""
    return {name: getattr(section, name) for name in section.model_fields_set}


@dataclasses.dataclass
class RouteRequest:
    """What the router reads of one LLM call."""

    dialect: Dialect
    provider: str  # the provider the agent called
    model: str | None
    body: dict[str, Any] | None
    body_bytes: int  # size of the body as sent: an upper bound of its token count
    identity: Identity = dataclasses.field(default_factory=Identity)


@dataclasses.dataclass
class Decision:
    rule: str  # the rule that fired, e.g. "think", "tier:big", "alias:coder-model", "unchanged"
    target: ModelTarget | None  # None: the agent's own provider and model
    reason: str
    signals: list[str] = dataclasses.field(default_factory=list)  # task triggers present in the request
    tokens: int | None = None
    subagent_tag: str | None = None  # the tag found in the system prompt (always stripped)
    notes: list[str] = dataclasses.field(default_factory=list)
    layer: tuple[str, ...] = ()

    def describe(self) -> str:
        target = str(self.target) if self.target else "unchanged"
        return f"{self.rule} -> {target}"


def needs_token_count(request: RouteRequest, layer: Layer) -> bool:
    """Counting tokens costs tens of ms on a large body: only when a long_context route exists and
    the body is big enough to possibly exceed it (a token is at least one byte)."""
    return (request.body is not None and bool(layer.routes.get("long_context"))
            and request.body_bytes > layer.long_context_threshold)


def decide(request: RouteRequest, rules: Rules, layer: Layer | None = None, *,
           custom_result: str | None = None, tokens: int | None = None, explain: bool = False,
           ranked: Callable[[str], TierPick | None] | None = None) -> Decision:
    """The routing decision. `custom_result` is what the custom router returned (the caller runs it,
    with its time limit); `tokens` is the request's token count when `needs_token_count`; `explain`
    lists every signal, also those no route asks for; `ranked(letter)` is the model scan's pick for
    launch tier m or f (RankingsBook.pick), used when launch_tiers does not pin that letter.
    Launch options win, then what the request says, then its model name."""
    identity = request.identity
    launch_profile = identity.tier if identity.tier and identity.tier.isdigit() else None
    layer = layer or layer_for(rules, identity.agent, launch_profile)
    body = request.body or {}
    tag = signals.find_subagent_tag(request.dialect, body) if request.body else None
    found = request_signals(request, layer, tokens, explain)
    notes: list[str] = []

    def made(rule: str, target: ModelTarget | None, reason: str) -> Decision:
        return Decision(rule, target, reason, found, tokens, tag, notes, layer.sources)

    return (_by_launch(request, rules, launch_profile, ranked, notes, made)
            or _by_request(request, rules, layer, custom_result, tag, found, tokens, notes, made)
            or _by_model_name(request, layer, made))


# Builds a Decision that carries what every decision of a request shares (signals, tag, notes, layer).
_Made = Callable[[str, ModelTarget | None, str], Decision]


def _by_launch(request: RouteRequest, rules: Rules, launch_profile: str | None,
               ranked: Callable[[str], TierPick | None] | None, notes: list[str], made: _Made) -> Decision | None:
    """The launch options: route b, a launch model, a launch tier letter; None (perhaps with a note) when
    none decides."""
    identity = request.identity
    if identity.route == "b":
        return made("bypass", None, "launched with route b: every feature but no model change")
    if identity.model:
        target = _valid(rules, identity.model, notes, "launch model")
        if target:
            return made("launch:model", target, "model chosen at launch")
    if identity.tier and not identity.tier.isdigit():
        return _launch_tier(identity.tier, rules, ranked, notes, made)
    if launch_profile and launch_profile not in rules.profiles:
        notes.append(f"launch profile {launch_profile!r} is not in rules profiles; routing as usual")
    return None


def _launch_tier(letter: str, rules: Rules, ranked: Callable[[str], TierPick | None] | None, notes: list[str],
                 made: _Made) -> Decision | None:
    """A launch tier letter: the rules' launch_tiers, else the model scan's pick for m and f."""
    if letter in rules.launch_tiers:
        return made(f"launch:tier-{letter}", ModelTarget.parse(rules.launch_tiers[letter]),
                    f"tier {letter} chosen at launch (rules launch_tiers.{letter})")
    picked = ranked(letter) if ranked is not None and letter in RANKED_TIERS else None
    if picked is not None and picked.target.provider in rules.providers:
        return made(f"launch:tier-{letter}", picked.target, picked.reason)
    if picked is not None:
        notes.append(f"the model scan ranks {picked.target} for tier {letter!r}, but its provider "
                     f"{picked.target.provider!r} is not in the rules; ignored")
    ranking_note = ""
    if letter in RANKED_TIERS:
        ranking_note = (" and the model scan ranked none (run `xx scan`)" if ranked is not None
                        else " and no model ranking is loaded here")
    notes.append(f"launch tier {letter!r} has no model in rules launch_tiers{ranking_note}; routing as usual")
    return None


def _by_request(request: RouteRequest, rules: Rules, layer: Layer, custom_result: str | None, tag: str | None,
                found: list[str], tokens: int | None, notes: list[str], made: _Made) -> Decision | None:
    """What the request says: the custom router's answer, a provider:model it names, a subagent tag, then
    the task routes in priority order."""
    if custom_result:
        target = _valid(rules, custom_result, notes, "custom router", separators=":,")
        if target:
            return made("custom", target, f"custom router {layer.routes.get('custom')}")
    if request.model:
        explicit = ModelTarget.parse(request.model, ":,")
        if explicit and explicit.provider in rules.providers:
            return made("explicit", explicit, f"the agent asked for {request.model!r}")
    if tag:
        target = _valid(rules, tag, notes, "subagent tag", separators=":,")
        if target:
            return made("subagent", target, "subagent tag in the system prompt")
    for name in TASK_ROUTES:
        if name in found and (route := layer.routes.get(name)):
            return made(name, ModelTarget.parse(route), _WHY[name](request, layer, tokens))
    return None


def _by_model_name(request: RouteRequest, layer: Layer, made: _Made) -> Decision:
    """The model name the agent sent: an alias, its family's tier, else the default route."""
    model = request.model or ""
    alias = _alias(layer.aliases, model)
    if alias:
        return made(f"alias:{alias}", ModelTarget.parse(layer.aliases[alias]), f"alias {alias!r}")
    family = signals.family(model)
    if family and (tiered := layer.tiers.get(_FAMILY_TIER[family])):
        tier = _FAMILY_TIER[family]
        return made(f"tier:{tier}", ModelTarget.parse(tiered), f"{family} family -> {tier.upper()}")
    if layer.routes.get("default"):
        return made("default", ModelTarget.parse(layer.routes["default"]), "default route")
    return made("unchanged", None, "no rule applies")


def request_signals(request: RouteRequest, layer: Layer, tokens: int | None, explain: bool = False) -> list[str]:
    """The task triggers present in a request, in priority order (whether or not a route is set)."""
    body, dialect = request.body, request.dialect
    if body is None:
        return []
    found = []
    # the image search walks every message (about 1 ms on a 400 KB Claude Code body): only when
    # an image route exists, or when explaining
    if (layer.routes.get("image") or explain) and signals.has_image(dialect, body):
        found.append("image")
    if signals.wants_web_search(dialect, body):
        found.append("web_search")
    if tokens is not None and tokens > layer.long_context_threshold:
        found.append("long_context")
    if signals.wants_thinking(dialect, body, request.identity.agent):
        found.append("think")
    if signals.continues_tool_loop(dialect, body) or signals.forces_tool_call(dialect, body):
        found.append("toolcall")
    if _is_background(request):
        found.append("background")
    return found


def _is_background(request: RouteRequest) -> bool:
    if signals.family(request.model) == "haiku":
        return True
    limit = signals.max_output_tokens(request.dialect, request.body or {})
    return limit is not None and 0 < limit <= BACKGROUND_MAX_TOKENS


def _why_toolcall(request: RouteRequest, layer: Layer, tokens: int | None) -> str:
    if signals.continues_tool_loop(request.dialect, request.body or {}):
        return "the newest message carries tool results"
    return "tool_choice requires a tool call"


def _why_background(request: RouteRequest, layer: Layer, tokens: int | None) -> str:
    if signals.family(request.model) == "haiku":
        return f"haiku-family model {request.model!r}"
    return f"max tokens <= {BACKGROUND_MAX_TOKENS}"


_WHY = {
    "image": lambda r, layer, t: "the request carries an image",
    "web_search": lambda r, layer, t: "the request offers a web search tool",
    "long_context": lambda r, layer, t: f"{t} tokens > {layer.long_context_threshold}",
    "think": lambda r, layer, t: (f"reasoning effort {signals.thinking_effort(r.dialect, r.body or {})}, more than "
                              f"{r.identity.agent or 'the agent'}'s default "
                              f"{signals.default_effort(r.identity.agent)}"),
    "toolcall": _why_toolcall,
    "background": _why_background,
}


def _alias(aliases: dict[str, str], model: str) -> str | None:
    if not model:
        return None
    if model in aliases:
        return model
    for pattern in aliases:
        if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
            return pattern
    return None


def _valid(rules: Rules, text: str, notes: list[str], what: str, separators: str = ":") -> ModelTarget | None:
    target = ModelTarget.parse(text, separators)
    if target is None:
        notes.append(f"{what} {text!r} is not provider:model; ignored")
        return None
    if target.provider not in rules.providers:
        notes.append(f"{what} {text!r} names provider {target.provider!r}, which is not in the rules; ignored")
        return None
    return target
