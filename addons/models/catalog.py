"""OpenRouter's model catalog: what each model costs, how much context it takes, whether it calls tools.

Pure logic, no mitmproxy and no network (the model scan, launcher/scan/, fetches; the gateway only
reads the cache). The catalog is `GET {openrouter base_url}/models`
(https://openrouter.ai/docs/api-reference/list-available-models): `{"data": [model, ...]}` where a
model has `id` ("vendor/name", variants as "vendor/name:free"), `name`, `context_length`,
`pricing` {prompt, completion, input_cache_read, input_cache_write, request, ...} as strings of US
dollars per token, `supported_parameters` (["tools", "tool_choice", "reasoning", ...]),
`top_provider` {context_length, max_completion_tokens, is_moderated} and `architecture`
{input_modalities, output_modalities, ...}. It is parsed once into `CatalogModel` values; an entry
that cannot be read is left out (and counted), never guessed at.

Prices: a negative price is OpenRouter's "varies" (its router models, `openrouter/auto`, list -1),
so it is read as unknown, never as a refund. A missing cache price means "billed as input".

The cache is `<state_dir>/catalog.json`: the raw entries (so a newer Clutch can read more of them),
the time they were fetched and where from, written atomically (statefile.save_json). A scan uses it
while it is younger than the TTL (6 h by default: prices and free variants change a few times a
week, and the list is about a megabyte); the gateway uses it whatever its age, since an old price is
a better estimate than none.

`Catalog.price_for(provider, model)` maps a routed target to catalog prices, in this order:
1. the model is an OpenRouter id ("qwen/qwen3-coder:free"), whatever the rules call the provider;
2. an OpenRouter variant of a listed id ("vendor/name:nitro" is priced as "vendor/name"; an unlisted
   "vendor/name:free" is free);
3. by name, only for a provider whose vendor is known (anthropic, openai, gemini/google, deepseek,
   mistral, xai, moonshot, ... or the provider's own name as a vendor prefix): the model name,
   lower-cased with "." and "_" as "-" and any "vendor/" prefix, ":variant" and "models/" removed,
   against the part of each catalog id after its vendor ("claude-sonnet-4-5" = "anthropic/claude-
   sonnet-4.5"); then the same without a date or "-latest" suffix ("claude-sonnet-4-5-20250929").
   `:free` entries never price a direct provider (it bills), and when several vendors list the name
   the provider's own vendor wins; if it is still ambiguous, there is no price.
An unknown provider such as a local ollama gets prices only for exact OpenRouter ids: it is not
billed like the hosted model of the same name.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from addons.config import statefile

logger = logging.getLogger(__name__)

CACHE_NAME = "catalog.json"
DEFAULT_TTL_S = 6 * 3600
MIN_CONTEXT = 32_000  # a coding agent's system prompt and tool schemas alone take 15-30k tokens
MIN_OUTPUT = 4_096  # an edit of a long file must fit in one answer
CACHE_VERSION = 1

# Provider names (as rules usually spell them) -> the vendor prefix of OpenRouter ids.
VENDORS = {
    "anthropic": "anthropic", "claude": "anthropic",
    "openai": "openai",
    "gemini": "google", "google": "google", "vertex": "google",
    "deepseek": "deepseek",
    "mistral": "mistralai", "mistralai": "mistralai",
    "xai": "x-ai", "x-ai": "x-ai", "grok": "x-ai",
    "moonshot": "moonshotai", "moonshotai": "moonshotai", "kimi": "moonshotai",
    "qwen": "qwen", "dashscope": "qwen",
    "zai": "z-ai", "z-ai": "z-ai", "zhipu": "z-ai",
    "groq": None, "ollama": None,  # hosts of other vendors' models: no vendor to match on
}
_DATE = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|\d{4})$|-latest$")


class CatalogError(ValueError):
    """A catalog answer that is not OpenRouter's model list."""


@dataclasses.dataclass(frozen=True)
class Prices:
    """US dollars per token of one catalog model, and how the target was matched to it."""

    prompt: float
    completion: float
    cache_read: float | None = None
    cache_write: float | None = None
    model_id: str = ""  # the catalog id the prices are from
    match: str = "exact"  # exact | variant | free_variant | name | dated_name

    @property
    def free(self) -> bool:
        return self.prompt == 0 and self.completion == 0


def cost_usd(prices: Prices, input_tokens: int | None, output_tokens: int | None, cached_tokens: int | None,
             cache_write_tokens: int | None = 0) -> float:
    """What a call cost at catalog prices.

    `input_tokens` counts every prompt token, cached ones included (OpenAI's and OpenRouter's
    `prompt_tokens`; for Anthropic pass input_tokens + cache_read_input_tokens +
    cache_creation_input_tokens). Of those, `cached_tokens` are billed at the cache-read price and
    `cache_write_tokens` at the cache-write price (each at the prompt price when the catalog has none);
    `output_tokens` (reasoning included, as providers bill it) at the completion price.
    """
    total_in = max(0, input_tokens or 0)
    cached = min(max(0, cached_tokens or 0), total_in)
    written = min(max(0, cache_write_tokens or 0), total_in - cached)
    plain = total_in - cached - written
    cost = (plain * prices.prompt
            + cached * (prices.prompt if prices.cache_read is None else prices.cache_read)
            + written * (prices.prompt if prices.cache_write is None else prices.cache_write)
            + max(0, output_tokens or 0) * prices.completion)
    return round(cost, 10)


@dataclasses.dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    context_length: int | None
    prompt_price: float | None  # USD per prompt token; None: unknown or variable
    completion_price: float | None
    cache_read_price: float | None
    cache_write_price: float | None
    supported_parameters: frozenset[str]
    max_completion_tokens: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]

    @property
    def tools(self) -> bool:
        return "tools" in self.supported_parameters

    @property
    def vendor(self) -> str:
        return self.id.split("/", 1)[0] if "/" in self.id else ""

    @property
    def free(self) -> bool:
        return is_free(self)

    def prices(self, match: str = "exact") -> Prices | None:
        if self.prompt_price is None or self.completion_price is None:
            return None
        return Prices(self.prompt_price, self.completion_price, self.cache_read_price, self.cache_write_price,
                      self.id, match)


def is_free(model: CatalogModel) -> bool:
    """A `:free` variant, or a model that costs nothing per token (e.g. `openrouter/free`)."""
    return model.id.endswith(":free") or (model.prompt_price == 0 and model.completion_price == 0)


@dataclasses.dataclass(frozen=True)
class Fitness:
    """Whether a model can serve a coding agent, and why (or why not). Truthy when fit."""

    fit: bool
    reason: str

    def __bool__(self) -> bool:
        return self.fit


def fit_for_coding(model: CatalogModel, min_context: int = MIN_CONTEXT, min_output: int = MIN_OUTPUT) -> Fitness:
    """Coding agents drive everything through tool calls and send long prompts: a model must take
    `tools` and at least `min_context` tokens; it must answer in text; and when the catalog states
    its output limit, allow at least `min_output` tokens."""
    if not model.tools:
        return Fitness(False, "no tool calling (supported_parameters has no 'tools')")
    if model.context_length is None:
        return Fitness(False, "context length unknown")
    if model.context_length < min_context:
        return Fitness(False, f"context {model.context_length} < {min_context} tokens")
    if model.output_modalities and "text" not in model.output_modalities:
        return Fitness(False, f"answers in {', '.join(model.output_modalities)}, not text")
    if model.max_completion_tokens is not None and model.max_completion_tokens < min_output:
        return Fitness(False, f"at most {model.max_completion_tokens} output tokens < {min_output}")
    if model.prompt_price is None or model.completion_price is None:
        return Fitness(False, "no fixed price (a router that picks other models)")
    return Fitness(True, f"tools, {model.context_length} context")


def parse_model(entry: Any) -> CatalogModel:
    """One entry of the catalog's `data`; raises CatalogError when it has no usable id."""
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"].strip():
        raise CatalogError("model entry without an id")
    pricing = _mapping(entry.get("pricing"))
    top = _mapping(entry.get("top_provider"))
    arch = _mapping(entry.get("architecture"))
    params = entry.get("supported_parameters")
    return CatalogModel(
        id=entry["id"].strip(),
        name=str(entry.get("name") or entry["id"]),
        context_length=_count(entry.get("context_length")) or _count(top.get("context_length")),
        prompt_price=_price(pricing.get("prompt")),
        completion_price=_price(pricing.get("completion")),
        cache_read_price=_price(pricing.get("input_cache_read")),
        cache_write_price=_price(pricing.get("input_cache_write")),
        supported_parameters=frozenset(p for p in params if isinstance(p, str)) if isinstance(params, list)
        else frozenset(),
        max_completion_tokens=_count(top.get("max_completion_tokens")),
        input_modalities=_strings(arch.get("input_modalities")),
        output_modalities=_strings(arch.get("output_modalities")),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return int(value)


def _price(value: Any) -> float | None:
    """A USD-per-token price string ("0.000003"); negative means variable, so unknown."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(price) or price < 0:
        return None
    return price


@dataclasses.dataclass(frozen=True)
class Catalog:
    models: tuple[CatalogModel, ...]
    fetched_at: float
    source: str = ""
    unreadable: int = 0  # entries left out because they had no id
    # indexes derived from `models` (by __post_init__), for price_for
    _by_id: dict[str, CatalogModel] = dataclasses.field(init=False, repr=False, compare=False)
    _by_name: dict[str, list[CatalogModel]] = dataclasses.field(init=False, repr=False, compare=False)
    _by_undated: dict[str, list[CatalogModel]] = dataclasses.field(init=False, repr=False, compare=False)
    _vendors: frozenset[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {m.id: m for m in self.models}
        exact: dict[str, list[CatalogModel]] = {}
        undated: dict[str, list[CatalogModel]] = {}
        for m in self.models:
            if m.id.endswith(":free") or "/" not in m.id:
                continue  # a direct provider bills: its names never match a free variant
            tail = _name_key(m.id.split("/", 1)[1])
            exact.setdefault(tail, []).append(m)
            undated.setdefault(_undated(tail), []).append(m)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_name", exact)
        object.__setattr__(self, "_by_undated", undated)
        object.__setattr__(self, "_vendors", frozenset(m.vendor for m in self.models))

    def get(self, model_id: str) -> CatalogModel | None:
        return self._by_id.get(model_id)

    def __len__(self) -> int:
        return len(self.models)

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.fetched_at

    def fresh(self, ttl_s: float, now: float | None = None) -> bool:
        return 0 <= self.age_s(now) < ttl_s

    def price_for(self, provider: str, model: str) -> Prices | None:
        """Catalog prices for a routed target (module docstring: the order of matching)."""
        if not model:
            return None
        found = self.get(model)
        if found is not None:
            return found.prices("exact")
        base, sep, variant = model.rpartition(":")
        if sep and "/" in base:
            listed = self.get(base)
            if variant == "free":
                # OpenRouter's free variants cost nothing, listed or not
                return Prices(0.0, 0.0, 0.0, 0.0, listed.id if listed else model, "free_variant")
            if listed is not None:
                return listed.prices("variant")
        name = provider.lower()
        vendor = VENDORS[name] if name in VENDORS else (name if name in self._vendors else None)
        stated = model.split("/", 1)[0].lower() if "/" in model else None
        if vendor is None and stated is None:
            return None  # a host of other vendors' models (a local ollama): only exact ids
        wanted = stated or vendor
        key = _name_key(model)
        for index, match in ((self._by_name, "name"), (self._by_undated, "dated_name")):
            candidates = index.get(key if match == "name" else _undated(key), [])
            picked = _one(candidates, wanted)
            if picked is not None:
                return picked.prices(match)
        return None


def _one(candidates: list[CatalogModel], vendor: str | None) -> CatalogModel | None:
    own = [m for m in candidates if m.vendor == vendor]
    for group in (own, candidates):
        prices = {(m.prompt_price, m.completion_price) for m in group if m.prices() is not None}
        if len(prices) == 1:
            return next(m for m in group if m.prices() is not None)
        if len(prices) > 1:
            return None  # several vendors list the name at different prices: do not guess
    return None


def _name_key(model: str) -> str:
    name = model.strip().lower()
    name = name.removeprefix("models/")  # Gemini's path spelling
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    name = name.split(":", 1)[0]
    return re.sub(r"[._\s]+", "-", name)


def _undated(key: str) -> str:
    previous = None
    while previous != key:  # "-20250929-latest" and the like
        previous, key = key, _DATE.sub("", key)
    return key


def parse_catalog(data: Any, fetched_at: float, source: str = "") -> Catalog:
    """OpenRouter's `{"data": [...]}` answer as a Catalog; CatalogError when it is not that shape."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CatalogError("not OpenRouter's model list (no 'data' array)")
    models, unreadable, seen = [], 0, set()
    for entry in data["data"]:
        try:
            model = parse_model(entry)
        except CatalogError:
            unreadable += 1
            continue
        if model.id not in seen:
            seen.add(model.id)
            models.append(model)
    if unreadable:
        logger.warning("model catalog %s: %d entries without an id were left out", source or "", unreadable)
    return Catalog(tuple(models), fetched_at, source, unreadable)


# ------------------------------------------------------------ the cache file

def cache_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / CACHE_NAME


def save_cache(path: Path | str, raw: dict, fetched_at: float, source: str) -> None:
    """Keep the catalog answer as it came (its `data`), with when and where it was fetched."""
    statefile.save_json(Path(path), {"version": CACHE_VERSION, "fetched_at": fetched_at, "source": source,
                                     "data": raw.get("data", [])})


def read_cache(path: Path | str) -> Catalog | None:
    """The cached catalog whatever its age; None when there is none or it cannot be read."""
    stored = statefile.load_json(Path(path))
    if stored is None:
        return None
    fetched_at = stored.get("fetched_at")
    if not isinstance(fetched_at, (int, float)) or isinstance(fetched_at, bool):
        logger.warning("model catalog cache %s has no fetch time; ignored", path)
        return None
    try:
        return parse_catalog(stored, float(fetched_at), str(stored.get("source") or ""))
    except CatalogError as e:
        logger.warning("model catalog cache %s: %s; ignored", path, e)
        return None


def load_cache(path: Path | str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> Catalog | None:
    """The cached catalog if it is younger than `ttl_s`, else None (fetch a new one)."""
    found = read_cache(path)
    if found is None or not found.fresh(ttl_s, now):
        return None
    return found


class CatalogFile:
    """The gateway's view of the cache: re-read when the scan replaced it (a stat every
    `check_every_s` at most, so pricing a request costs nothing)."""

    def __init__(self, path: Path | str, check_every_s: float = 30.0, clock=time.monotonic):
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._clock = clock
        self._checked: float | None = None
        self._stamp: tuple[int, int] | None = None
        self._catalog: Catalog | None = None

    def current(self) -> Catalog | None:
        now = self._clock()
        if self._checked is not None and now - self._checked < self.check_every_s:
            return self._catalog
        self._checked = now
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._catalog = read_cache(self.path) if stamp else None
        return self._catalog

    def price_for(self, provider: str, model: str) -> Prices | None:
        catalog = self.current()
        return catalog.price_for(provider, model) if catalog else None


def fit_models(catalog: Iterable[CatalogModel], min_context: int = MIN_CONTEXT
               ) -> tuple[list[CatalogModel], dict[str, str]]:
    """The models fit for coding, and the others with the reason each was left out."""
    fit, left_out = [], {}
    for model in catalog:
        verdict = fit_for_coding(model, min_context)
        if verdict:
            fit.append(model)
        else:
            left_out[model.id] = verdict.reason
    return fit, left_out
