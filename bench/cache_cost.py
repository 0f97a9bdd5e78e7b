"""What a replayed session costs with each provider's prompt-cache pricing, in uncached-input tokens.

A compressor that saves tokens can still cost money: replacing an already-sent message makes the
provider bill the prompt from there again, at its cache-write price. So the compression benchmark
prices every turn of a session the way the provider bills it, from one table, `PRICES`:

* Anthropic (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching, "Pricing"):
  caching is explicit. A request is cached up to its last `cache_control` breakpoint: the part of
  that prefix not read from the cache is written at 1.25x the input price (5-minute cache), a prefix
  already written by an earlier request is read at 0.1x, and whatever follows the last breakpoint
  is plain input (1x). A cache entry exists only where a breakpoint was, so after a rewrite at
  message 5 nothing past the system prompt and tools is read. Prefixes under 1,024 tokens are not
  cached (Sonnet and Opus; Haiku's minimum is 2,048). The lookback of 20 content blocks is not
  modelled (a turn of these agents adds fewer).
* OpenAI (https://platform.openai.com/docs/guides/prompt-caching and
  https://openai.com/index/api-prompt-caching/): caching is automatic for prompts of 1,024 tokens
  or more, the longest previously seen prefix in 128-token steps; cached input is billed at 0.5x
  (GPT-4o) or 0.25x (GPT-4.1), writing costs nothing extra.
* OpenRouter (https://openrouter.ai/docs/features/prompt-caching): per model, the upstream
  provider's rules: Anthropic models 1.25x / 0.1x with `cache_control` required (the `anthropic`
  row), OpenAI models 0.25x or 0.5x (the `openai` rows), DeepSeek 0.1x read with no write premium
  (64-token cache units), Gemini 2.5 implicit caching 0.25x read (1,024 tokens minimum on Flash).

Costs are in units of one uncached input token, over the `messages` (the corpus has no system
prompt or tools; they are the same for every method, so leaving them out only makes savings look
larger by the same factor for all). Times are ignored: the turns come back to back, so the cache is
always warm. Dollars: multiply by the row's input price (`usd_per_mtok`, per million tokens).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import statistics

from addons.wire import tokens
from addons.wire.dialects import Dialect


@dataclasses.dataclass(frozen=True)
class CachePricing:
    """One provider's cache billing, as multiples of its uncached input price."""
    name: str
    read: float  # cache read
    write: float  # cache write (1.0: no premium)
    explicit: bool  # cached only up to a `cache_control` breakpoint (Anthropic); else automatic
    min_tokens: int  # shorter prefixes are not cached
    step: int  # the cached prefix is counted in whole steps of this many tokens
    usd_per_mtok: float  # uncached input price of the model named, for dollars


PRICES = (
    CachePricing("anthropic", read=0.1, write=1.25, explicit=True, min_tokens=1024, step=1,
                 usd_per_mtok=3.00),  # Claude Sonnet 4.6
    CachePricing("openai 0.5x", read=0.5, write=1.0, explicit=False, min_tokens=1024, step=128,
                 usd_per_mtok=2.50),  # GPT-4o
    CachePricing("openai 0.25x", read=0.25, write=1.0, explicit=False, min_tokens=1024, step=128,
                 usd_per_mtok=2.00),  # GPT-4.1
    CachePricing("openrouter deepseek", read=0.1, write=1.0, explicit=False, min_tokens=64, step=64,
                 usd_per_mtok=0.28),  # DeepSeek V3.2
    CachePricing("openrouter gemini", read=0.25, write=1.0, explicit=False, min_tokens=1024, step=1,
                 usd_per_mtok=0.30),  # Gemini 2.5 Flash, implicit caching
)
PRICING = {p.name: p for p in PRICES}
# Anthropic's prices with the breakpoints Clutch adds to a request that has none (issue 18, point 5:
# addons/compression/breakpoints.py); where that module is missing, one on the newest message, modelled
WITH_BREAKPOINTS = "anthropic + Clutch's breakpoints"
try:
    from addons.compression.breakpoints import with_breakpoints as clutch_breakpoints
except ImportError:  # point 5 not merged yet
    clutch_breakpoints = None


@dataclasses.dataclass(frozen=True)
class Turn:
    """One request as the provider sees it: each message's identity (its canonical bytes), its
    tokens, and `breakpoint`: how many leading messages its last cache breakpoint covers
    (0: none; len(keys): one on the newest message); `marks`: the same for earlier breakpoints,
    which write cache entries of their own."""
    keys: tuple[str, ...]
    tokens: tuple[int, ...]
    breakpoint: int
    marks: tuple[int, ...] = ()


def _prefix_hashes(keys: tuple[str, ...]) -> list[bytes]:
    """hashes[i] identifies the first i messages."""
    hashes, running = [b""], hashlib.sha256()
    for key in keys:
        running.update(hashlib.sha256(key.encode()).digest())
        hashes.append(running.copy().digest())
    return hashes


def session_cost(pricing: CachePricing, turns: list[Turn]) -> float:
    """The session's input cost in uncached-input tokens, turn by turn, as `pricing` bills it."""
    entries: set[bytes] = set()  # prefixes the provider holds (explicit: only at breakpoints)
    previous: list[bytes] = []
    total = 0.0
    for turn in turns:
        hashes = _prefix_hashes(turn.keys)
        upto = [0]
        for count in turn.tokens:
            upto.append(upto[-1] + count)
        if pricing.explicit:
            end = turn.breakpoint
            hit = max((i for i in range(end + 1) if hashes[i] in entries), default=0)
            cached = upto[hit] if hit else 0
            written = upto[end] - cached if upto[end] >= pricing.min_tokens else 0
            plain = upto[-1] - cached - written
            if written:
                entries.update(hashes[i] for i in (*turn.marks, end) if upto[i] >= pricing.min_tokens)
        else:
            common = 0
            while common < min(len(previous), len(hashes)) - 1 and previous[common + 1] == hashes[common + 1]:
                common += 1
            cached = upto[common] // pricing.step * pricing.step if upto[common] >= pricing.min_tokens else 0
            written, plain = 0, upto[-1] - cached
        total += pricing.read * cached + pricing.write * written + plain
        previous = hashes
    return total


def p3_cost(turns: list[Turn]) -> float:
    """The research's P3 price (compression.md 5.3), kept to compare with runs recorded before the
    table: 0.1x for the messages byte-equal to the previous request's, 1.25x for the rest, with no
    breakpoints, minimum or steps."""
    total, previous = 0.0, ()
    for turn in turns:
        same = 0
        while same < min(len(previous), len(turn.keys)) and previous[same] == turn.keys[same]:
            same += 1
        total += 0.1 * sum(turn.tokens[:same]) + 1.25 * sum(turn.tokens[same:])
        previous = turn.keys
    return total


# ---------------------------------------------------------------- replayed sessions

def _without_cache_control(node):
    """`cache_control` markers are ignored in a message's identity: moving a cache breakpoint changes
    where the cache is written, not the prompt, so it does not invalidate the cache. Nor is a lone
    text block's wrapping: `"content": "x"` is Anthropic's shorthand for `[{"type": "text", "text":
    "x"}]`, the form a breakpoint on a string message needs."""
    if isinstance(node, dict):
        out = {k: _without_cache_control(v) for k, v in node.items() if k != "cache_control"}
        blocks = out.get("content")
        if isinstance(blocks, list) and len(blocks) == 1 and isinstance(blocks[0], dict) \
                and set(blocks[0]) == {"type", "text"} and blocks[0]["type"] == "text":
            out["content"] = blocks[0]["text"]
        return out
    if isinstance(node, list):
        return [_without_cache_control(v) for v in node]
    return node


def message_keys(body: dict) -> tuple[str, ...]:
    return tuple(json.dumps(_without_cache_control(m), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
                 for m in body.get("messages", []))


_message_tokens: dict[str, int] = {}


def _tokens_of(fmt: str, key: str, message: dict) -> int:
    found = _message_tokens.get(key)
    if found is None:
        found = _message_tokens[key] = tokens.request_tokens(
            Dialect.ANTHROPIC if fmt == "anthropic" else Dialect.OPENAI_CHAT, {"messages": [message]})
    return found


def marked_messages(fmt: str, body: dict) -> list[int]:
    """How many leading messages each of the agent's breakpoints covers: one past each message carrying
    `cache_control`; failing that, for Anthropic-format bodies (Claude Code's), the newest message,
    since Claude Code marks it on every request and the corpus, rebuilt from transcripts, has lost the
    markers; else none (the OpenAI-format agents here send none)."""
    messages = body.get("messages", [])
    marked = [i + 1 for i, m in enumerate(messages) if "cache_control" in json.dumps(m)]
    if marked:
        return marked
    return [len(messages)] if fmt == "anthropic" and messages else []


def turn_of(fmt: str, body: dict, breakpoints: str = "agent") -> Turn:
    """`breakpoints`: "agent" (what the agent marks) or "clutch" (what Clutch adds to a body that has
    none: addons/compression/breakpoints.py, or one on the newest message where it is missing)."""
    if breakpoints == "clutch" and clutch_breakpoints is not None:
        dialect = Dialect.ANTHROPIC if fmt == "anthropic" else Dialect.OPENAI_CHAT
        body = clutch_breakpoints(dialect, body)[0]  # the identity is the body as it goes upstream
    keys = message_keys(body)
    counts = tuple(_tokens_of(fmt, k, m) for k, m in zip(keys, body.get("messages", []), strict=True))
    if breakpoints == "clutch" and clutch_breakpoints is None:
        marks = [len(keys)] if keys else []
    else:
        marks = marked_messages(fmt, body)
    return Turn(keys, counts, marks[-1] if marks else 0, tuple(marks[:-1]))


def _saving(before: float, after: float) -> float:
    return 100.0 * (1 - after / before) if before else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def measure_replay(method: str, sessions: list[list[tuple[dict, dict]]], times: list[float],
                   source: str = "ALL") -> dict:
    """Over replayed sessions ((sent, forwarded) per turn): the token saving, the rewrite turns, and
    the cost saving at each row of PRICES (the forwarded session against the session as sent), at
    Anthropic's prices with Clutch's breakpoints (WITH_BREAKPOINTS),
    and at P3; the Anthropic-priced cost of the sessions in dollars, before and after."""
    rewrite_turns = bp_rewrite_turns = turns_total = tokens_raw = tokens_sent = 0
    raw = collections.Counter()
    sent = collections.Counter()
    per_session = []
    for session in sessions:
        fmt = "anthropic" if session and "max_tokens" in session[0][0] else "openai"
        before = [turn_of(fmt, s) for s, _ in session]
        after = [turn_of(fmt, f) for _, f in session]
        for old, new in zip(after, after[1:], strict=False):
            turns_total += 1
            rewrite_turns += new.keys[:len(old.keys)] != old.keys
        tokens_raw += sum(sum(t.tokens) for t in before)
        tokens_sent += sum(sum(t.tokens) for t in after)
        for pricing in PRICES:
            raw[pricing.name] += session_cost(pricing, before)
            sent[pricing.name] += session_cost(pricing, after)
        marked = [turn_of(fmt, f, "clutch") for _, f in session]
        sent[WITH_BREAKPOINTS] += session_cost(PRICING["anthropic"], marked)
        # with the breakpoints too, each turn's prompt (markers aside) extends the previous one's
        bp_rewrite_turns += sum(new.keys[:len(old.keys)] != old.keys
                                for old, new in zip(marked, marked[1:], strict=False))
        raw["P3"] += (p3_raw := p3_cost(before))
        sent["P3"] += (p3_sent := p3_cost(after))
        per_session.append(_saving(p3_raw, p3_sent))
    raw[WITH_BREAKPOINTS] = raw["anthropic"]
    names = ["anthropic", WITH_BREAKPOINTS] + [p.name for p in PRICES[1:]] + ["P3"]
    usd = PRICING["anthropic"].usd_per_mtok / 1e6
    return {"method": method, "source": source, "sessions": len(sessions), "turns": turns_total,
            "rewrite_turns": rewrite_turns, "bp_rewrite_turns": bp_rewrite_turns, "token_saving": _saving(tokens_raw, tokens_sent),
            "cost_saving": _saving(raw["P3"], sent["P3"]),
            "median_session_cost_saving": statistics.median(per_session) if per_session else 0.0,
            "cost_savings": {name: _saving(raw[name], sent[name]) for name in names},
            "usd_before": raw["anthropic"] * usd, "usd_after": sent["anthropic"] * usd,
            "timed_turns": len(times), "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def measure_replays(method: str, sessions: list[list[tuple[dict, dict]]], times: list[float],
                    source_of: dict[int, str]) -> list[dict]:
    """measure_replay over all sessions, then per corpus source."""
    rows = [measure_replay(method, sessions, times)]
    for source in sorted(set(source_of.values())):
        picked = [s for i, s in enumerate(sessions) if source_of[i] == source]
        rows.append(measure_replay(method, picked, [], source))
    return rows
