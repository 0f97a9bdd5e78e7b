"""The cascade's policy: which targets a request may try, in which order, what OpenRouter is asked to
do natively, and how long to wait before retrying the same model.

Pure logic, no mitmproxy. The engine (relay.py) carries the attempts out; breakers, quotas and
stickiness keep their own state (breakers.py, quotas.py, sticky.py).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from addons.config.rules import ModelTarget, Rules
from addons.wire.dialects import Dialect

# the live API refuses longer `models` arrays ("'models' array must have 3 items or fewer")
OPENROUTER_MAX_MODELS = 3
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
NATIVE_DIALECTS = (Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES)


@dataclasses.dataclass
class Candidates:
    """The targets one request may try, in order, and those left out (with why)."""

    order: list[ModelTarget]  # what Clutch itself tries, in order
    skipped: list[tuple[ModelTarget, str]] = dataclasses.field(default_factory=list)
    # the whole usable chain, which OpenRouter's `models` list is drawn from: with `openrouter_native`,
    # Clutch makes one attempt (`order` has one target) and OpenRouter falls back along this list
    native: list[ModelTarget] = dataclasses.field(default_factory=list)
    wait_s: float | None = None  # when everything was skipped for quota: the shortest wait
    sticky: ModelTarget | None = None  # the target stickiness put first
    replacements: list[ModelTarget] = dataclasses.field(default_factory=list)  # drawn from the ranking


def chain(primary: ModelTarget, rules: Rules) -> list[ModelTarget]:
    """primary, its cascade from the rules, then `fallback.models`; each target once."""
    found = [primary]
    for text in [*rules.cascades.get(str(primary), []), *rules.fallback.models]:
        target = ModelTarget.parse(text)
        if target is not None and target not in found:
            found.append(target)
    return found


def order(primary: ModelTarget, rules: Rules, *, breakers, quotas, sticky, session: str | None,
          ranked: Callable[[list[ModelTarget]], Sequence[ModelTarget]] | None = None) -> Candidates:
    """The chain with open breakers and exhausted quotas left out, the session's sticky target first.

    When every model of the chain was left out for an open breaker, `ranked(chain)` (the model scan's
    replacements for that chain, best first: RankingsBook.for_chain) is asked, only then, and those of
    its models not in the chain are tried instead, those with an open breaker or a used quota left out
    too. Not when a quota is what stopped the chain: a quota is the user's own limit, and the agent gets
    its 429 with the wait."""
    full = chain(primary, rules)
    targets = list(full)
    pinned = None
    if session and len(targets) > 1:
        held = sticky.get(session, str(primary))
        pinned = ModelTarget.parse(held) if held else None
        if pinned in targets:
            targets.remove(pinned)
            targets.insert(0, pinned)
        else:
            pinned = None
    result = Candidates([], sticky=pinned)
    waits = []
    for target in targets:
        key = str(target)
        if breakers.is_open(key):
            result.skipped.append((target, f"breaker open ({breakers.retry_after(key) or 0:.0f} s left)"))
            continue
        wait = quotas.wait_s(key)
        if wait is not None:
            waits.append(wait)
            result.skipped.append((target, f"over quota ({wait:.0f} s)"))
            continue
        result.order.append(target)
    if not result.order and waits:
        result.wait_s = min(waits)
    elif not result.order and ranked is not None:
        for target in ranked(full):
            key = str(target)
            if target in targets or target in result.order or breakers.is_open(key) or quotas.wait_s(key) is not None:
                continue
            result.order.append(target)
            result.replacements.append(target)
    result.native = list(result.order)
    if rules.fallback.method == "openrouter_native":
        result.order = result.order[:1]  # OpenRouter falls back along `native` by itself; Clutch asks once
    return result


def native_models(candidates: list[ModelTarget], first: ModelTarget) -> list[str]:
    """OpenRouter's `models` fallback list for an attempt at `first`: it and the next candidates on
    OpenRouter (same provider), at most 3. Open breakers and exhausted quotas are already out."""
    models = [first.model]
    for target in candidates[candidates.index(first) + 1:] if first in candidates else []:
        if target.provider == first.provider and target.model not in models:
            models.append(target.model)
        if len(models) == OPENROUTER_MAX_MODELS:
            break
    return models


def inject_openrouter(body: dict[str, Any], models: list[str], sort: str, partition: str | None) -> dict[str, Any]:
    """OpenRouter's native fallback: an ordered `models` list, and provider sorting merged into the
    provider preferences the agent already sent (the agent's own settings win).

    `partition: "none"` is left out unless the rules ask: it sorts the endpoints of every listed model
    together on the sort key, so the primary may never be used (the default, "model", keeps fallbacks
    as fallbacks).
    """
    out = dict(body)
    if len(models) > 1 and "models" not in body:
        out["models"] = models[:OPENROUTER_MAX_MODELS]
    provider = dict(body["provider"]) if isinstance(body.get("provider"), dict) else {}
    if "sort" not in provider and "order" not in provider:
        provider["sort"] = {"by": sort, "partition": partition} if partition else sort
    if body.get("tools") and "require_parameters" not in provider:
        provider["require_parameters"] = True  # only endpoints that really support tools
    out["provider"] = provider
    return out


def backoff_s(retry_after_s: float | None, attempt: int, rng: random.Random | None = None) -> float | None:
    """How long to wait before retrying the same model: its Retry-After when it gave one (None when
    that is beyond the cap: not worth holding the agent), else exponential with full jitter."""
    if retry_after_s is not None:
        return retry_after_s if retry_after_s <= BACKOFF_CAP_S else None
    rng = rng or random.Random()
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt))
