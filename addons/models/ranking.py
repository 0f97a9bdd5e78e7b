"""The model ranking: which catalog models are worth sending a coding agent's requests to today.

Pure logic, no mitmproxy, no I/O. Inputs: the catalog models fit for coding (catalog.py), the scan's
probes (a tiny streamed request: worked or not, time to first token, tokens per second) and the
usage store's `model_stats` (how each model fared in real use). Output: ranking dicts in the usage
store's shape, best first, each with a `why` a person can read.

The score, for a model with evidence E:

    reliability R = (PRIOR * K + successes) / (K + attempts)          PRIOR = 0.75, K = 2
        attempts and successes add real use (model_stats over the last 7 days, weight 1 each) and
        probes of the last 7 days, each weighted 0.5 ** (age / 24 h): yesterday's probe counts half,
        so a model that failed this morning ranks below one that worked last week.
        With no evidence R is the prior, 0.75: unknown is not bad (a proven failure drives R towards 0)
        but not as good as proven (one good probe gives 0.83, twenty good requests 0.98).
    speed S in [0, 1], the mean of what is known (0.5 when nothing is):
        time to first token t: 1 / (1 + t / 1500 ms) from probes (all the same tiny prompt, so they
        compare fairly); without a probe, real use's median with a 4000 ms reference (real prompts
        are tens of thousands of tokens, their first token comes later);
        tokens per second v: v / (v + 60).
    context C = log2(context / 32k) / 5, clamped to [0, 1] (32k: 0, 128k: 0.4, 1M: 1).
    value V for paid models = 1 / (1 + blended / 2), blended = (3 * prompt + completion) / 4 in USD
        per million tokens (coding agents read far more than they write). Free models get V = 0.5:
        a price of zero must not lift a free model over better paid ones in `m`, because OpenRouter's
        free variants share account-wide caps (20 requests a minute, 50 or 1000 a day), which a launch
        that sends every request to one model soon meets.
    quality Q = 0.5 S + 0.3 C + 0.2 V
    score = R^2 * (0.5 + 0.5 Q)

Reliability dominates: Q moves a score by at most a factor of 2, while R going from 0.9 to 0.6
divides it by 2.25, so no speed or context makes up for a model that fails a third of its requests.

The tiers: `m` takes the best-ranked model that is not known to be broken (observed success rate
below 50 %); `f` looks at free models only, and among them first at those proven to work (a
success rate of at least 50 %), then at unknown ones, never at broken ones. Free and paid are kept
apart there, and in `replacements`: a cascade of free models draws free replacements only, so a
breaker never moves a user onto a model that bills without being asked.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from addons.config.rules import ModelTarget
from addons.models.catalog import CatalogModel, is_free

PRIOR = 0.75
PRIOR_WEIGHT = 2.0
PROBE_HALF_LIFE_S = 24 * 3600
EVIDENCE_WINDOW_S = 7 * 24 * 3600
BROKEN_BELOW = 0.5
PROBE_TTFT_REF_MS = 1500.0
USAGE_TTFT_REF_MS = 4000.0
TPS_REF = 60.0


@dataclasses.dataclass
class Evidence:
    """What is known of one model: weighted probe outcomes and real use."""

    probe_weight: float = 0.0
    probe_ok_weight: float = 0.0
    probes: int = 0
    probes_ok: int = 0
    last_probe_error: str | None = None
    ttft_ms: float | None = None  # from probes (weighted mean of successful ones)
    tokens_per_s: float | None = None
    attempts: int = 0
    successes: int = 0
    usage_ttft_ms: float | None = None

    @property
    def weight(self) -> float:
        return self.probe_weight + self.attempts

    @property
    def success_rate(self) -> float | None:
        """The observed rate (probes weighted by age, real use by count); None with no evidence."""
        if self.weight <= 0:
            return None
        return (self.probe_ok_weight + self.successes) / self.weight

    @property
    def reliability(self) -> float:
        return (PRIOR * PRIOR_WEIGHT + self.probe_ok_weight + self.successes) / (PRIOR_WEIGHT + self.weight)


def gather(probes: Iterable[Mapping[str, Any]], stats: Mapping[str, Mapping[str, Any]] | None,
           now: float) -> dict[str, Evidence]:
    """Evidence per model key ("provider:model") from probe dicts and `model_stats`."""
    found: dict[str, Evidence] = {}
    timed: dict[str, list[tuple[float, float]]] = {}
    rates: dict[str, list[tuple[float, float]]] = {}
    latest: dict[str, float] = {}
    for probe in probes:
        key, ts = probe.get("model"), probe.get("ts")
        if not isinstance(key, str) or not isinstance(ts, (int, float)):
            continue
        age = now - ts
        if age > EVIDENCE_WINDOW_S:
            continue
        weight = 0.5 ** (max(0.0, age) / PROBE_HALF_LIFE_S)
        evidence = found.setdefault(key, Evidence())
        evidence.probes += 1
        evidence.probe_weight += weight
        if probe.get("ok"):
            evidence.probes_ok += 1
            evidence.probe_ok_weight += weight
            if _number(probe.get("ttft_ms")) is not None:
                timed.setdefault(key, []).append((weight, float(probe["ttft_ms"])))
            if _number(probe.get("tokens_per_s")) is not None:
                rates.setdefault(key, []).append((weight, float(probe["tokens_per_s"])))
        if ts >= latest.get(key, -math.inf):
            latest[key] = ts
            evidence.last_probe_error = None if probe.get("ok") else str(probe.get("error") or probe.get("status")
                                                                          or "failed")
    for key, pairs in timed.items():
        found[key].ttft_ms = _weighted_mean(pairs)
    for key, pairs in rates.items():
        found[key].tokens_per_s = _weighted_mean(pairs)
    for key, stat in (stats or {}).items():
        attempts = stat.get("attempts") or 0
        if not attempts:
            continue
        evidence = found.setdefault(key, Evidence())
        evidence.attempts = int(attempts)
        evidence.successes = int(stat.get("successes") or 0)
        evidence.usage_ttft_ms = _number(stat.get("ttft_ms_p50"))
    return found


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _weighted_mean(pairs: list[tuple[float, float]]) -> float:
    total = sum(w for w, _ in pairs)
    return sum(w * v for w, v in pairs) / total


def speed(evidence: Evidence) -> tuple[float, float | None]:
    """S, and the time to first token it used."""
    parts, ttft = [], None
    if evidence.ttft_ms is not None:
        ttft = evidence.ttft_ms
        parts.append(1 / (1 + ttft / PROBE_TTFT_REF_MS))
    elif evidence.usage_ttft_ms is not None:
        ttft = evidence.usage_ttft_ms
        parts.append(1 / (1 + ttft / USAGE_TTFT_REF_MS))
    if evidence.tokens_per_s is not None and evidence.tokens_per_s > 0:
        parts.append(evidence.tokens_per_s / (evidence.tokens_per_s + TPS_REF))
    return (sum(parts) / len(parts) if parts else 0.5), ttft


def context_score(context_length: int | None) -> float:
    if not context_length:
        return 0.0
    return min(1.0, max(0.0, math.log2(context_length / 32_000) / 5))


def blended_per_million(model: CatalogModel) -> float | None:
    if model.prompt_price is None or model.completion_price is None:
        return None
    return (3 * model.prompt_price + model.completion_price) / 4 * 1e6


def value_score(model: CatalogModel) -> float:
    blended = blended_per_million(model)
    if is_free(model) or blended is None:
        return 0.5
    return 1 / (1 + blended / 2)


def score(model: CatalogModel, evidence: Evidence) -> tuple[float, float | None]:
    """The model's score and the time to first token it counted."""
    s, ttft = speed(evidence)
    quality = 0.5 * s + 0.3 * context_score(model.context_length) + 0.2 * value_score(model)
    return evidence.reliability ** 2 * (0.5 + 0.5 * quality), ttft


def rank(models: Iterable[CatalogModel], *, probes: Iterable[Mapping[str, Any]] = (),
         stats: Mapping[str, Mapping[str, Any]] | None = None, provider: str = "openrouter",
         now: float | None = None) -> list[dict[str, Any]]:
    """Ranking dicts (the usage store's shape), best first. `models` should already be fit for
    coding (catalog.fit_models); model keys are "<provider>:<catalog id>"."""
    now = time.time() if now is None else now
    evidence = gather(probes, stats, now)
    rows: list[dict[str, Any]] = []
    for model in models:
        key = f"{provider}:{model.id}"
        known = evidence.get(key, Evidence())
        value, ttft = score(model, known)
        rate = known.success_rate
        rows.append({
            "model": key, "free": is_free(model), "score": round(value, 4), "why": _why(model, known, ttft),
            "context_length": model.context_length, "tools": model.tools, "prompt_price": model.prompt_price,
            "completion_price": model.completion_price,
            "success_rate": round(rate, 4) if rate is not None else None,
            "ttft_ms": round(ttft, 1) if ttft is not None else None,
            "tokens_per_s": round(known.tokens_per_s, 1) if known.tokens_per_s is not None else None,
            "computed_at": now,
        })
    # ties (no evidence, same facts) keep a stable, explainable order: bigger context, then the id
    rows.sort(key=lambda r: (-r["score"], -(r["context_length"] or 0), r["model"]))
    for number, row in enumerate(rows, 1):
        row["rank"] = number
    return rows


def _why(model: CatalogModel, evidence: Evidence, ttft: float | None) -> str:
    parts = []
    rate = evidence.success_rate
    if rate is None:
        parts.append(f"no probe or use yet (reliability assumed {PRIOR:.0%})")
    else:
        seen = []
        if evidence.attempts:
            seen.append(f"{evidence.successes}/{evidence.attempts} real attempts")
        if evidence.probes:
            seen.append(f"{evidence.probes_ok}/{evidence.probes} probes")
        parts.append(f"success {rate:.0%} ({', '.join(seen)})")
        if evidence.last_probe_error:
            parts.append(f"last probe failed: {evidence.last_probe_error}")
    if ttft is not None:
        parts.append(f"first token {ttft:.0f} ms" + ("" if evidence.ttft_ms is not None else " in real use"))
    if evidence.tokens_per_s is not None:
        parts.append(f"{evidence.tokens_per_s:.0f} tokens/s")
    if model.context_length:
        parts.append(f"{_tokens(model.context_length)} context")
    if is_free(model):
        parts.append("free")
    elif model.prompt_price is not None and model.completion_price is not None:
        parts.append(f"${model.prompt_price * 1e6:.2f}/${model.completion_price * 1e6:.2f} per M in/out")
    return "; ".join(parts)


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    return f"{round(n / 1000)}k"


# ------------------------------------------------------------ using a ranking

def broken(row: Mapping[str, Any]) -> bool:
    rate = row.get("success_rate")
    return rate is not None and rate < BROKEN_BELOW


def best(rankings: Sequence[Mapping[str, Any]], free: bool) -> Mapping[str, Any] | None:
    """The tier's model: `free=False` (m) the best-ranked one not known to be broken; `free=True`
    (f) the best free one proven to work, else the best free one not tried yet."""
    ordered = sorted(rankings, key=lambda r: r.get("rank") or 0)
    if not free:
        return next((r for r in ordered if not broken(r)), None)
    pool = [r for r in ordered if r.get("free")]
    proven = next((r for r in pool if r.get("success_rate") is not None and not broken(r)), None)
    return proven or next((r for r in pool if r.get("success_rate") is None), None)


def replacements(rankings: Sequence[Mapping[str, Any]], exclude: set[str], limit: int,
                 free: bool | None = None) -> list[ModelTarget]:
    """Ranked models to try when a cascade's own are all out: best first, none in `exclude`, none
    known to be broken; `free=True` free ones only, `False` paid only, None either."""
    found: list[ModelTarget] = []
    for row in sorted(rankings, key=lambda r: r.get("rank") or 0):
        if len(found) >= limit:
            break
        key = row.get("model")
        if not isinstance(key, str) or key in exclude or broken(row):
            continue
        if free is not None and bool(row.get("free")) != free:
            continue
        target = ModelTarget.parse(key)
        if target is not None:
            found.append(target)
    return found


@dataclasses.dataclass(frozen=True)
class TierPick:
    """The model a ranking gives a launch tier, and the reason the router reports."""

    letter: str
    target: ModelTarget
    reason: str
    row: Mapping[str, Any]


TIER_FREE = {"m": False, "f": True}


def pick(rankings: Sequence[Mapping[str, Any]], letter: str, now: float | None = None) -> TierPick | None:
    if letter not in TIER_FREE:
        return None
    row = best(rankings, TIER_FREE[letter])
    target = ModelTarget.parse(str(row.get("model"))) if row else None
    if row is None or target is None:
        return None
    now = time.time() if now is None else now
    what = "best-ranked model" if letter == "m" else "best working free model"
    age = _age(now - float(row.get("computed_at") or now))
    reason = (f"tier {letter} chosen at launch: the model scan's {what} (rank {row.get('rank')}, "
              f"score {row.get('score')}, ranked {age} ago: {row.get('why')})")
    return TierPick(letter, target, reason, row)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
