"""`./clutch route BODY.json`: what the gateway would do with a saved request, without sending it.

A dry run of the compressor, the router and the upstream plan on the current rules (and environment
overrides): what compression cuts, the rule that fires, why, the target, the upstream URL, what
translation changes, and which key would be used (named by its variable, never printed).
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from addons.compression import policy as compression
from addons.config.layering import load_layered, rules_source
from addons.config.overrides import apply_overrides
from addons.config.rules import Rules, RulesError
from addons.routing.custom_router import CustomRouter, RouterContext
from addons.routing.plan import Plan, PlanError, build_plan, json_bytes
from addons.routing.router import Decision, RouteRequest, decide, layer_for, needs_token_count, request_signals
from addons.wire import dialects, tokens
from addons.wire.dialects import Dialect
from addons.wire.identity import Identity, identity_from_username
from launcher.rules_in_force import provider_keys

DEFAULT_URLS = {
    Dialect.ANTHROPIC: "https://api.anthropic.com/v1/messages",
    Dialect.OPENAI_CHAT: "https://openrouter.ai/api/v1/chat/completions",
    Dialect.OPENAI_RESPONSES: "https://api.openai.com/v1/responses",
}
_SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key"}


def read_body(path: Path) -> dict[str, Any]:
    """A request body saved as JSON; a corpus record ({meta, format, body}) is unwrapped."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    if isinstance(data.get("body"), dict) and "messages" not in data:
        return data["body"]
    return data


def guess_dialect(body: dict[str, Any]) -> Dialect:
    if "contents" in body:
        return Dialect.GEMINI
    if "input" in body or "instructions" in body:
        return Dialect.OPENAI_RESPONSES
    if "system" in body or any(isinstance(t, dict) and "input_schema" in t for t in body.get("tools") or []):
        return Dialect.ANTHROPIC
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in
                                             ("tool_result", "tool_use", "thinking") for p in content):
            return Dialect.ANTHROPIC
    return Dialect.OPENAI_CHAT


def explain(body: dict[str, Any], *, url: str | None = None, identity: Identity = Identity(),
            rules_path: Path | None = None, environ: dict[str, str] | None = None,
            timeout_s: float = 2.0) -> dict[str, Any]:
    environ = dict(os.environ) if environ is None else environ
    source = rules_source(rules_path, environ)  # the one loader, as the gateway layers them
    rules, overrides = apply_overrides(load_layered(source), environ)
    if url is None:
        url = DEFAULT_URLS.get(guess_dialect(body))
        if url is None:
            raise ValueError("a Gemini body needs --url (the model is in its path)")
    provider, dialect, path = _endpoint(rules, url)
    raw = json.dumps(body).encode()
    call = dialects.read_call(dialect, provider, path, raw)
    if call.invalid:
        raise ValueError(f"the gateway answers this request with 400 itself: {call.invalid}")
    launch_profile = identity.tier if identity.tier and identity.tier.isdigit() else None
    squeezed = _compress(rules, call, identity, launch_profile)
    if squeezed["changed"]:  # the gateway compresses before it routes: route what it would send
        raw = json_bytes(squeezed.pop("body"))
        call = dialects.read_call(dialect, provider, path, raw)
    squeezed.pop("body", None)
    decision = _decide(rules, call, len(raw), identity, launch_profile, timeout_s)
    result: dict[str, Any] = {
        "request": {"url": url, "dialect": str(dialect), "provider": provider, "model": call.model,
                    "agent": identity.agent, "launch": identity.describe()},
        "decision": {"rule": decision.rule, "reason": decision.reason,
                     "target": str(decision.target) if decision.target else None,
                     "signals": decision.signals, "tokens": decision.tokens, "layers": list(decision.layer)},
        "rules": {"path": str(source.shown), "overrides": overrides},
        "compression": squeezed,
    }
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer <the agent's key>")]
    try:
        plan = build_plan(call, decision, rules, url, headers, raw, _keys(environ), agent=identity.agent)
    except PlanError as e:
        result["error"] = str(e)
        return result
    result["upstream"] = _upstream(plan)
    return result


def _keys(environ: dict[str, str]) -> Mapping[str, str]:
    """The keys as the gateway reads them (the environment, then the keys file); a keys file the
    gateway would refuse counts as none here: `xx doctor` and the gateway's start say why."""
    try:
        return provider_keys(environ)
    except RulesError:
        return environ


def _endpoint(rules: Rules, url: str) -> tuple[str, Dialect, str]:
    """The provider of the rules at the URL's host, the dialect its path speaks, and the path."""
    parts = urlsplit(url)
    owner = rules.provider_at(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    if owner is None:
        raise ValueError(f"{parts.hostname} is not a provider in the rules")
    dialect = dialects.recognise("POST", parts.path)
    if dialect is None:
        raise ValueError(f"{parts.path} is not an LLM endpoint Clutch recognises")
    return owner[0], dialect, parts.path


def _decide(rules: Rules, call, body_bytes: int, identity: Identity, launch_profile: str | None,
            timeout_s: float) -> Decision:
    """The router's decision as the Route addon makes it: tokens counted when a rule needs them, the
    custom router run (its note kept)."""
    wanted = RouteRequest(call.dialect, call.provider, call.model, call.body, body_bytes, identity)
    layer = layer_for(rules, identity.agent, launch_profile)
    count = tokens.request_tokens(call.dialect, call.body) \
        if call.body is not None and needs_token_count(wanted, layer) else None
    custom, custom_note = _custom(rules, layer, call, identity, count,
                                  tuple(request_signals(wanted, layer, count, explain=True)), timeout_s)
    decision = decide(wanted, rules, layer, custom_result=custom, tokens=count, explain=True)
    if custom_note:
        decision.notes.append(custom_note)
    return decision


def _upstream(plan: Plan) -> dict[str, Any]:
    """What would be sent upstream: URL, model, translation, which key (named, never shown), the
    headers with every secret masked, the notes and the body when it changed."""
    return {
        "url": plan.url, "provider": plan.provider, "model": plan.model, "changed": plan.changed,
        "translated": f"{plan.client_dialect}->{plan.upstream_dialect}" if plan.translated else None,
        "key": "the agent's own" if plan.key_source == "agent" else f"${plan.key_source}",
        "headers": {k.decode(): ("<masked>" if k.decode().lower() in _SECRET_HEADERS else v.decode("latin-1"))
                    for k, v in plan.headers},
        "notes": plan.notes,
        "body": json.loads(plan.body) if plan.changed else None,
    }


def _compress(rules: Rules, call, identity: Identity, launch_profile: str | None) -> dict[str, Any]:
    mode = compression.mode_for(rules, identity.agent, launch_profile)
    if call.body is None:
        return {"mode": str(mode), "changed": False, "cuts": []}
    outcome = compression.compress_request(call.dialect, call.body, compression.settings_for(rules.compression, mode))
    after = tokens.request_tokens(call.dialect, outcome.body)
    return {"mode": str(mode), "changed": outcome.changed, "body": outcome.body,
            "tokens_before": after + outcome.tokens_saved, "tokens_after": after,
            "cuts": [{"output": c.output, "kind": c.kind, "tokens_before": c.tokens_before,
                      "tokens_after": c.tokens_after} for c in outcome.cuts]}


def _custom(rules: Rules, layer, call, identity: Identity, count, found: tuple[str, ...], timeout_s: float):
    path = rules.custom_router_path(layer.routes.get("custom"))
    if path is None or call.body is None or identity.route == "b":
        return None, None
    router = CustomRouter(max_workers=1)
    try:
        context = RouterContext(identity.agent, identity.session, str(call.dialect), call.provider, call.model,
                                count, found)
        outcome = router.run_sync(path, call.body, context, timeout_s)
    finally:
        router.close()
    return outcome.target, outcome.note


def identity_for(agent: str | None, launch: str | None) -> Identity:
    """`--launch cip3` (an xx code) or `--agent claude`."""
    if launch:
        found = identity_from_username(f"xx-{launch}")
        if not found.from_credentials or found.agent == "unknown":
            raise ValueError(f"{launch!r} is not an xx launch code (e.g. cip, hcf, xnb3)")
        return found
    return Identity(agent=agent or "unknown")


def render_explanation(result: dict[str, Any]) -> str:
    request, decision = result["request"], result["decision"]
    lines = [
        f"request   {request['dialect']} to {request['provider']} ({request['url']}), model {request['model']!r}, "
        f"agent {request['launch']}",
        f"rule      {decision['rule']}: {decision['reason']}",
        f"target    {decision['target'] or 'unchanged (the agent model and provider)'}",
        f"signals   {', '.join(decision['signals']) or 'none'}"
        + (f"; {decision['tokens']} tokens" if decision["tokens"] is not None else ""),
        f"layers    {' > '.join(decision['layers'])}",
    ]
    if result["rules"]["overrides"]:
        lines.append("overrides " + ", ".join(f"{k}={v}" for k, v in result["rules"]["overrides"].items()))
    squeezed = result["compression"]
    kinds = collections.Counter(c["kind"] for c in squeezed["cuts"])
    lines.append("compress  " + compression.describe_compression(squeezed["mode"], kinds, squeezed.get("tokens_before"),
                                                     squeezed.get("tokens_after")))
    if "error" in result:
        lines.append(f"error     {result['error']}")
        return "\n".join(lines)
    upstream = result["upstream"]
    lines += [
        f"upstream  POST {upstream['url']} model {upstream['model']!r}, key: {upstream['key']}",
        f"translate {upstream['translated'] or 'no'}",
    ]
    lines += [f"note      {note}" for note in upstream["notes"]]
    return "\n".join(lines)
