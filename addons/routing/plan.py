"""The upstream request for a routing decision: URL, headers, key and body, translated when the
target provider does not speak the agent's dialect (translate/pairs.py says which translation carries
which pair), and the way back: the provider's answer in the agent's dialect.

Pure logic, no mitmproxy. An unchanged decision sends the agent's bytes as they came (still
content-encoded); any change re-serialises the JSON body and drops its content-encoding. A routed
request that cannot be carried to the target (no translation for the pair, or the request uses
something the target's dialect cannot express) is refused with PlanError "untranslatable", status
400, and a request malformed where translation reads it (request_shape.py) with "malformed", 400:
never sent somewhere else than the decision says, nor as something the agent did not ask.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from addons.compression import breakpoints
from addons.config.rules import Provider, Rules
from addons.guard import request_shape
from addons.routing import signals
from addons.routing.router import Decision
from addons.translate import errors as translate_errors
from addons.translate import pairs as translation
from addons.translate import pi_repair
from addons.translate.responses_tools import Untranslatable
from addons.translate.vocabulary import Flavour
from addons.wire.dialects import Dialect, LLMCall

logger = logging.getLogger(__name__)

# (client, upstream) pairs Clutch translates (translate/pairs.py).
TRANSLATABLE = translation.TRANSLATABLE
ANTHROPIC_VERSION = "2023-06-01"

AUTH_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key", b"api-key"})
_BODY_HEADERS = frozenset({b"content-encoding", b"content-length"})


class PlanError(Exception):
    """The decision cannot be carried out (e.g. the target's key is not set); `status` for the agent."""

    def __init__(self, kind: str, message: str, status: int = 502):
        super().__init__(message)
        self.kind, self.status = kind, status


@dataclasses.dataclass
class Plan:
    provider: str  # the provider that will be called
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    model: str | None  # the model sent upstream
    client_dialect: Dialect
    upstream_dialect: Dialect
    changed: bool  # the request differs from what the agent sent
    key_source: str  # "agent" or the environment variable the key came from
    notes: list[str] = dataclasses.field(default_factory=list)
    sent: dict[str, Any] | None = None  # the body as a dict, in the upstream's dialect (None: unread)
    client_context: Any = None  # what translating the answer back needs from the agent's request

    @property
    def translated(self) -> bool:
        return self.client_dialect is not self.upstream_dialect

    def describe(self) -> str:
        parts = [f"{self.provider}:{self.model or '?'}"]
        if self.translated:
            parts.append(f"translated {self.client_dialect}->{self.upstream_dialect}")
        if self.key_source != "agent":
            parts.append(f"key from ${self.key_source}")
        return ", ".join(parts)


def build_plan(call: LLMCall, decision: Decision | None, rules: Rules, url: str,
               headers: list[tuple[bytes, bytes]], raw_body: bytes, environ: Mapping[str, str] | None = None,
               agent: str | None = None) -> Plan:
    """The only way a Plan is made: Route's decision, Budget's `over: free`, each cascade candidate
    of the engine and `clutch explain` all come here, so a request is carried the same way whoever
    decided where it goes.

    `decision` None: no router ran (no Route addon loaded): the agent's request goes exactly as it
    came, nothing read from it. `agent` (the identity's agent name) turns on that agent's request
    repairs (Pi's, pi_repair.py)."""
    if decision is None:
        return Plan(call.provider, url, list(headers), raw_body, call.model, call.dialect, call.dialect,
                    False, "agent")
    environ = os.environ if environ is None else environ
    unchanged = Plan(call.provider, url, list(headers), raw_body, call.model, call.dialect, call.dialect,
                     False, "agent", sent=call.body)
    notes = list(decision.notes)
    unchanged.notes = notes
    if call.body is None:
        if decision.target:
            notes.append(f"body unreadable ({call.body_error}); sent unchanged")
        return unchanged
    body, repaired, tag_removed = _repaired(call, call.body, decision, agent, notes)
    target = decision.target
    if target is None or (target.provider == call.provider and target.model == call.model):
        body, marked = _cached(call, body, decision, rules, call.provider, call.model, notes)
        if not tag_removed and not repaired and not marked:
            return unchanged
        if tag_removed:
            notes.append("subagent tag stripped")
        # `sent` too: OpenRouter's native fallbacks rebuild the body from it
        return with_body(unchanged, body)

    provider = rules.providers[target.provider]
    upstream_dialect = translation.upstream_for(call.dialect, provider.dialects)
    if upstream_dialect is None:
        raise _untranslatable(call.dialect, target, provider, f"Clutch translates {call.dialect} to none of those")
    if tag_removed:
        notes.append("subagent tag stripped")
    body, _ = _cached(call, body, decision, rules, target.provider, target.model, notes)
    same_provider = target.provider == call.provider
    new_url, sent, context = _carried(call, body, target, provider, upstream_dialect, url, notes)
    out_body = json_bytes(sent)
    out_headers = _without(headers, _BODY_HEADERS)
    key_source = "agent"
    if not same_provider or upstream_dialect is not call.dialect:
        out_headers, key_source = _keyed(out_headers, target, provider, upstream_dialect, same_provider, environ)
    if upstream_dialect is not call.dialect:
        out_headers = _translated_headers(out_headers, upstream_dialect)
    return Plan(target.provider, new_url, out_headers, out_body, target.model, call.dialect, upstream_dialect,
                True, key_source, notes, sent, context)


def _repaired(call: LLMCall, body: dict[str, Any], decision: Decision, agent: str | None,
              notes: list[str]) -> tuple[dict[str, Any], bool, int]:
    """The body with the agent's request repairs and the subagent tag stripped, whether a repair was
    made, and how many tags went. Before translation, and also when the route changes nothing:
    strict backends sit behind any provider."""
    repair = pi_repair.repair_pi_request(call.dialect, body) if agent == "pi" else None
    if repair is not None:
        body = repair.body
        notes.append(repair.note)
    tag_removed = signals.strip_subagent_tags(call.dialect, body) if decision.subagent_tag else 0
    return body, repair is not None, tag_removed


def _cached(call: LLMCall, body: dict[str, Any], decision: Decision, rules: Rules, provider_name: str,
            model: str | None, notes: list[str]) -> tuple[dict[str, Any], int]:
    """The body with the prompt-cache breakpoints its target needs and the agent left out
    (compression/breakpoints.py), before translation, which carries them where the target takes them."""
    provider = rules.providers.get(provider_name)
    profiles = tuple(source.removeprefix("profile ") for source in decision.layer if source.startswith("profile "))
    if provider is None or not breakpoints.wanted(rules, profiles):
        return body, 0
    upstream = translation.upstream_for(call.dialect, provider.dialects)
    if upstream is None or not breakpoints.needed(upstream, flavour_of(provider_name, provider) is Flavour.OPENROUTER,
                                                  model):
        return body, 0
    body, added = breakpoints.with_breakpoints(call.dialect, body, upstream)
    if added:
        notes.append(f"{added} prompt-cache breakpoints added")
    return body, added


def _carried(call: LLMCall, body: dict[str, Any], target, provider: Provider, upstream_dialect: Dialect,
             url: str, notes: list[str]) -> tuple[str, dict[str, Any], Any]:
    """The URL, the body in the upstream's dialect and the context of the way back, for `target`."""
    same_provider = target.provider == call.provider
    if call.dialect is Dialect.GEMINI:
        new_url = _gemini_url(provider, url, target.model) if not same_provider else _gemini_model(url, target.model)
        return new_url, body, None
    if upstream_dialect is call.dialect:
        new_url = url if same_provider else endpoint_url(provider, upstream_dialect, urlsplit(url).query)
        return new_url, {**body, "model": target.model}, None
    new_url = endpoint_url(provider, upstream_dialect, "")
    malformed = request_shape.problem(call.dialect, body)
    if malformed is not None:
        raise PlanError("malformed", f"this {call.dialect} request is malformed ({malformed}), so it cannot "
                                     f"be translated for {target}", 400)
    try:
        sent, context = translation.translate_request(body, call.dialect, upstream_dialect, target.model,
                                                      flavour_of(target.provider, provider), notes)
    except Untranslatable as e:
        raise _untranslatable(call.dialect, target, provider, str(e)) from None
    except Exception as e:  # a shape the checks above missed: this request fails, it never goes elsewhere
        logger.exception("translating %s to %s for %s failed", call.dialect, upstream_dialect, target)
        # 400, not 500: the same request fails the same way again, so the agent must not retry it
        raise PlanError("translation_failed", f"Clutch could not translate this {call.dialect} request to "
                                              f"{upstream_dialect} for {target} ({type(e).__name__}: {e}); "
                                              f"the gateway log has the details", 400) from e
    return new_url, sent, context


def _keyed(headers: list[tuple[bytes, bytes]], target, provider: Provider, dialect: Dialect, same_provider: bool,
           environ: Mapping[str, str]) -> tuple[list[tuple[bytes, bytes]], str]:
    """The headers with the key the target gets, in its dialect's header, and where the key came from:
    the agent's own on its own provider, the rules' key_env on another ("none" if it has none)."""
    key = _agent_key(headers) if same_provider else None
    key_source = "agent"
    variable = provider.key_variable
    if not same_provider and variable:
        key = environ.get(variable, "").strip() or None
        if key is None:
            raise PlanError("missing_key",
                            f"rules route this request to {target}, but ${variable} (the "
                            f"{target.provider} key) is set neither in the gateway's environment nor in "
                            f"its keys file")
        key_source = variable
    elif not same_provider:
        key_source = "none"
    headers = _without(headers, AUTH_HEADERS)
    if key:
        headers += _auth(dialect, key, provider)
    return headers, key_source


def with_body(plan: Plan, body: dict[str, Any], note: str | None = None) -> Plan:
    """A built plan sending another JSON body (in the upstream's dialect), e.g. with OpenRouter's
    native fallbacks added: re-serialised, so the agent's content-encoding and length go."""
    notes = plan.notes if note is None else [*plan.notes, note]
    return dataclasses.replace(plan, headers=_without(plan.headers, _BODY_HEADERS), body=json_bytes(body),
                               changed=True, sent=body, notes=notes)


def _untranslatable(client: Dialect, target, provider: Provider, reason: str) -> PlanError:
    return PlanError("untranslatable", f"cannot send this {client} request to {target} ({target.provider} speaks "
                                       f"{', '.join(provider.dialects)}): {reason}", status=400)


def stream_translator_for(plan: Plan, include_usage: bool):
    """Translates the provider's SSE stream back into the agent's dialect, piece by piece."""
    return translation.stream_translator(plan.client_dialect, plan.upstream_dialect, plan.model or "",
                                         include_usage, plan.client_context)


def translate_answer(plan: Plan, raw: bytes, status: int) -> tuple[int, bytes]:
    """A whole (non-streamed) answer of the provider, in the agent's dialect: (status, body)."""
    client = plan.client_dialect
    if 200 <= status < 300:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        # OpenRouter can answer 200 with an error object (a failed Response carries one too, and every
        # Response has the key), and anything unreadable is no answer either
        if isinstance(payload, dict) and not payload.get("error") and payload.get("type") != "error":
            return status, json_bytes(translation.translate_whole(client, plan.upstream_dialect, payload,
                                                                  plan.client_context))
        status = 502
    return status, translate_errors.translate_error(raw, status, client)


def url_of(scheme: str, host: str, port: int, path: str) -> str:
    """A request's URL, the default port left out (as the agent wrote it)."""
    default = 443 if scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}{'' if port == default else f':{port}'}{path}"


def endpoint_url(provider: Provider, dialect: Dialect, query: str) -> str:
    """The provider's URL for a dialect: base_url + the dialect's path (Anthropic's base may or may
    not end in /v1: https://api.anthropic.com and https://openrouter.ai/api/v1 both work)."""
    base = provider.base_url
    if dialect is Dialect.ANTHROPIC:
        path = "/messages" if base.endswith("/v1") else "/v1/messages"
    elif dialect is Dialect.OPENAI_CHAT:
        path = "/chat/completions"
    elif dialect is Dialect.OPENAI_RESPONSES:
        path = "/responses"
    else:
        raise ValueError("Gemini URLs carry the model; use _gemini_url")
    return base + path + (f"?{query}" if query else "")


def flavour_of(name: str, provider: Provider) -> Flavour:
    host = provider.base_host
    if name == "openrouter" or host.endswith("openrouter.ai"):
        return Flavour.OPENROUTER
    if host.endswith("api.openai.com"):
        return Flavour.OPENAI
    if host.endswith("anthropic.com"):
        return Flavour.ANTHROPIC
    return Flavour.GENERIC


def _gemini_model(url: str, model: str) -> str:
    parts = urlsplit(url)
    head, _, tail = parts.path.rpartition("/models/")
    method = tail.partition(":")[2]
    new = parts._replace(path=f"{head}/models/{model}:{method}")
    return new.geturl()


def _gemini_url(provider: Provider, url: str, model: str) -> str:
    parts = urlsplit(url)
    method = parts.path.rpartition(":")[2]
    query = f"?{parts.query}" if parts.query else ""
    return f"{provider.base_url}/v1beta/models/{model}:{method}{query}"


def _agent_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        lower = name.lower()
        if lower == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if lower in (b"x-api-key", b"x-goog-api-key", b"api-key"):
            return value.decode("latin-1").strip()
    return None


def auth_headers(provider: Provider, key: str, path: str) -> list[tuple[bytes, bytes]]:
    """The gateway's key as `provider` takes it on `path`, before the request's dialect is known (a team
    gateway's Credentials): Gemini's native API takes x-goog-api-key, its OpenAI-compatible one a Bearer."""
    if Dialect.GEMINI in provider.dialects and "/openai/" not in path:
        return [(b"x-goog-api-key", key.encode("latin-1"))]
    return _auth(Dialect.ANTHROPIC if provider.base_host.endswith("anthropic.com") else Dialect.OPENAI_CHAT,
                 key, provider)


def _auth(dialect: Dialect, key: str, provider: Provider) -> list[tuple[bytes, bytes]]:
    # Anthropic itself takes x-api-key; Anthropic-compatible endpoints elsewhere (OpenRouter's
    # /api/v1/messages, ...) document a Bearer token, as Claude Code's ANTHROPIC_AUTH_TOKEN sends it.
    if dialect is Dialect.ANTHROPIC and provider.base_host.endswith("anthropic.com"):
        return [(b"x-api-key", key.encode("latin-1"))]
    if dialect is Dialect.GEMINI:
        return [(b"x-goog-api-key", key.encode("latin-1"))]
    return [(b"authorization", b"Bearer " + key.encode("latin-1"))]


def _translated_headers(headers: list[tuple[bytes, bytes]], upstream: Dialect) -> list[tuple[bytes, bytes]]:
    # The translated answer is parsed here, so ask for it uncompressed; the other dialect's
    # versioning headers mean nothing to the target.
    out = [(k, v) for k, v in headers
           if k.lower() != b"accept-encoding" and not k.lower().startswith(b"anthropic-")
           and not k.lower().startswith(b"openai-")]
    out.append((b"accept-encoding", b"identity"))
    if upstream is Dialect.ANTHROPIC:
        out.append((b"anthropic-version", ANTHROPIC_VERSION.encode()))
    if not any(k.lower() == b"content-type" for k, _ in out):
        out.append((b"content-type", b"application/json"))
    return out


def _without(headers: list[tuple[bytes, bytes]], names: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in names]


def json_bytes(body: dict[str, Any]) -> bytes:
    """A body as compact JSON. A lone surrogate (`\\ud83d`: JavaScript agents cut strings in the
    middle of an emoji) has no UTF-8 form, so such a body keeps its escapes instead."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()

