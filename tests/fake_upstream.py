"""A faithful fake LLM provider for Clutch tests (aiohttp.web, no mitmproxy imports).

It stands in for OpenRouter, OpenAI, Anthropic and Google Gemini.  Wire formats
follow the public API documentation:

* OpenAI Chat Completions (object + streaming chunk shapes):
  https://platform.openai.com/docs/api-reference/chat/create
  https://platform.openai.com/docs/api-reference/chat-streaming
* OpenAI Responses API streaming events:
  https://platform.openai.com/docs/api-reference/responses-streaming
* OpenAI error body / rate-limit headers:
  https://platform.openai.com/docs/guides/error-codes
  https://platform.openai.com/docs/guides/rate-limits
* Anthropic Messages API, streaming and errors:
  https://docs.anthropic.com/en/api/messages
  https://docs.anthropic.com/en/docs/build-with-claude/streaming
  https://docs.anthropic.com/en/api/errors
* OpenRouter (OpenAI-compatible, ``/api/v1``), its errors and usage accounting:
  https://openrouter.ai/docs/api-reference/overview
  https://openrouter.ai/docs/api-reference/streaming   (": OPENROUTER PROCESSING" comments)
  https://openrouter.ai/docs/api-reference/errors-and-debugging
  https://openrouter.ai/docs/use-cases/usage-accounting
  https://openrouter.ai/docs/api-reference/list-available-models   (the model catalog: OPENROUTER_MODELS)
* Google Gemini generateContent / streamGenerateContent:
  https://ai.google.dev/api/generate-content
  https://ai.google.dev/gemini-api/docs/troubleshooting  (error statuses)

Usage::

    fake = FakeUpstream()
    await fake.start(ssl_context=pki.server_ssl_context())
    ...                       # talk to fake.url
    fake.log[-1]["outcome"]   # "ok" | "fault:<name>" | "aborted"
    await fake.stop()

Dialect is chosen by path (and Host for unknown paths):
``/api/v1/...`` -> OpenRouter, ``/v1/chat/completions`` + ``/v1/responses`` +
``/v1/models`` -> OpenAI, ``/v1/messages`` -> Anthropic, ``/v1beta/models/...``
-> Gemini.

Request validation: as the providers do, a body that is not a JSON object, a Chat or Messages request
without a string ``model`` or whose ``messages`` is not an array of objects gets a 400 in the provider's
error shape and wording (see :func:`_check_shape`).

Fault injection: the request's model name (JSON body ``model`` or, for Gemini,
the model in the path) is searched for one of the tokens in :data:`FAULTS`
(substring match, first match in the tuple order wins, so
``openrouter/fake-fail-429:free`` and ``fail-429`` both select ``fail-429``), or
for ``chunks-<N>``.  See :data:`FAULTS` for what each one does.

Every request is logged in :attr:`FakeUpstream.log`: the entry is appended as
soon as the request arrives and updated in place when the response has
finished; finished entries are also appended to ``log_path`` as JSON lines
(flushed per line) when given.  Entry keys:

* ``t`` (arrival, epoch s), ``method``, ``path`` (raw, incl. query), ``host``
  (Host header), ``headers`` (every request header, lower-cased names)
* ``model`` / ``stream`` (``None`` until the body is parsed / for non-LLM routes)
* ``body_bytes``: request body size on the wire (before Content-Encoding decoding)
* ``status``: HTTP status sent; ``0`` when no response head was ever sent (``hang``)
* ``outcome``: ``None`` while in flight, then ``"ok"``, ``"fault:<name>"`` (any
  model-selected fault, incl. ``slow`` and ``chunks-<N>``) or ``"aborted"`` (the
  client went away before the response was complete; this wins over the fault)
* ``chunks_sent``: SSE events (or JSON-array elements) written, incl. ``[DONE]``;
  SSE comments are not counted
* extras: ``fault`` (name or ``None``), ``dialect``
  (``openai|openrouter|anthropic|gemini``), ``request_json`` (decoded body),
  ``t_end`` (finish time)

Token numbers are deterministic: prompt = 10 + decoded_body_len // 16, cached =
prompt // 2, reasoning = 2 (0 for ``empty``), completion = content pieces +
reasoning.  Anthropic reports input_tokens = prompt - cached,
cache_read_input_tokens = cached, cache_creation_input_tokens = 2.  OpenRouter
cost = prompt * 1e-6 + completion * 2e-6.

``FakeUpstream(prompt_cache=True)`` caches as Anthropic does instead: a request's prefix up to a
``cache_control`` breakpoint (tools, system, messages; on Chat, content parts) that an earlier
request also marked is read from the cache, the rest up to its last breakpoint is written (one
token per 16 characters of the prefix's JSON); no breakpoint, no cache.  Anthropic reports
input_tokens = prompt - read - written, cache_read_input_tokens = read,
cache_creation_input_tokens = written; Chat (OpenRouter) ``prompt_tokens_details`` {cached_tokens,
cache_write_tokens}.  https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching

Tool-call variant: when the request has ``tools`` and the text of its last
message contains the trigger, the answer is a tool call instead of text (id
``call_fake_1``; Anthropic ``toolu_fake_1``; Gemini a ``functionCall`` part with
``args``).  Trigger forms (see :func:`parse_tool_trigger`):

* ``use-tool``: call the first tool in ``tools`` with arguments ``{}``;
* ``use-tool:NAME``: call tool ``NAME`` (letters, digits, ``_ . -``) with ``{}``;
* ``use-tool:NAME:{JSON object}``, e.g. ``use-tool:Bash:{"command":"echo hi"}``:
  call ``NAME`` with those arguments (the object ends where the JSON ends, so
  text may follow it).  Arguments that are not a JSON object get a 400
  ``invalid_request`` error in the dialect's shape.

The named tool need not be among ``tools``.  The arguments (compact JSON) are
streamed as deltas (OpenAI chat ``function.arguments``, Anthropic
``input_json_delta``, Responses ``function_call_arguments.delta``): ``"{"`` and
``"}"`` for ``{}``, otherwise three pieces.  Only the *last* message counts: when
it is a tool result (OpenAI ``role: tool``, Anthropic ``tool_result``, Responses
``function_call_output``, Gemini ``functionResponse``), the answer is the normal
text, which completes an agent's tool round trip.  System and developer messages
after it are skipped (Claude Code 2.1.330 sends a ``role: system`` message after
the user's prompt).

Strict roles (``strict-roles``): some providers refuse a conversation in which two user turns follow
each other, e.g. models served with a chat template that demands alternation (vLLM / Hugging Face
templates of Gemma and Mistral: 400 "Conversation roles must alternate user/assistant/user/assistant/...")
and Anthropic-compatible endpoints that do not combine turns ('roles must alternate between "user" and
"assistant", but found multiple "user" roles in a row').  With this token the fake answers such a request
(Chat ``messages``, Anthropic ``messages``, Responses ``input`` items; entries without a role, such as
tool outputs, separate turns) with that 400 in the dialect's error shape, and any other request normally.

Also runnable as a process::

    python tests/fake_upstream.py --host 127.0.0.1 --port 0 [--cert C --key K]
        [--log-path F] [--port-file F] [--answer TEXT] [--chunk-delay S] [--n-chunks N]
        [--tokens N] [--first-token-delay S]

Token streaming (``--tokens N``, ``tokens=N``; the benchmark's realistic provider): a normal answer is
N word-sized tokens (``token_pieces``: " the", " function", "(", ...), one SSE event each, as real
providers stream (OpenAI Chat: one ``chat.completion.chunk`` with one token of ``delta.content``;
Anthropic: one ``content_block_delta``), usage at the end as usual.  ``--first-token-delay S`` is
the wait before the first token for every model that does not name its own ``first-token-<MS>``.
Both default off: the tests' answers are unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import os
import pathlib
import re
import secrets
import signal
import ssl
import string
import sys
import time
import zlib
from typing import Any

from aiohttp import web

try:  # Brotli is optional for aiohttp; we only need it to decode request bodies.
    import brotli as _brotli  # type: ignore
except ImportError:  # pragma: no cover
    _brotli = None

try:  # Python 3.14+
    from compression import zstd as _zstd_std  # type: ignore
except ImportError:
    _zstd_std = None
try:
    import zstandard as _zstandard  # type: ignore
except ImportError:  # pragma: no cover
    _zstandard = None

__all__ = ["FakeUpstream", "FAULTS", "parse_fault", "parse_tool_trigger", "split_answer", "token_pieces", "MODEL_IDS", "main",
           "repeated_user_turn", "STRICT_ROLES_TEMPLATE", "STRICT_ROLES_ANTHROPIC", "OPENROUTER_MODELS",
           "openrouter_catalog"]

# Fault tokens, in match order (longer / more specific tokens first).
FAULTS: tuple[str, ...] = (
    "hang-after-headers",  # 200 + SSE headers, then nothing until the client leaves
    "hang",                # no response at all until the client leaves (cap 600 s)
    "rampup-429",          # 429 "... rate increased too quickly ..."
    "daily-cap-429",       # 429 OpenRouter free-models-per-day (elsewhere the dialect's daily limit); x-ratelimit-*
                           # headers (and OpenRouter's metadata.headers) reset at the next UTC midnight (epoch ms);
                           # no retry-after
    "once-429",            # the first request for this exact model name: fail-429's answer; later ones succeed
    "fail-429",            # 429 + retry-after: 2 + x-ratelimit-* headers
    "fail-401",            # 401 invalid API key
    "fail-500",
    "fail-502",
    "fail-503",
    "fail-529",            # Anthropic overloaded_error (also used on other paths)
    "midstream-error",     # 2 content chunks, then an in-stream error event, then close
    "error-200",           # HTTP 200 whose body / first SSE event is an error object
    "empty",               # 200, well-formed answer without any content
    "slow",                # 10 chunks, 0.2 s apart (FakeUpstream's slow_delay)
    "fail-404",            # 404: the model does not exist (each dialect's not-found error)
    "stream-cut",          # 2 content chunks, then the body ends without the dialect's end marker
    "ignores-tools",       # answers with text even when the request forces a tool call (tool_choice)
    "text-before-tool",    # when a tool call is triggered: streams text first, then the tool call
    "strict-roles",        # 400 when two user turns follow each other (chat / messages / responses), else a
                           # normal answer: providers whose chat template demands alternation (see the docstring)
    "huge-answer",         # 200 application/json of HUGE_ANSWER_BYTES (an answer padded past any sane size)
    "endless-event",       # 200 text/event-stream, then ENDLESS_EVENT_BYTES of one `data:` line that never ends
)
# Plus "chunks-<N>": stream N content chunks; and two timings that combine with any of the above:
# "delay-<MS>": MS milliseconds between streamed pieces; "first-token-<MS>": the first content comes MS
# milliseconds after the stream opened, the dialect's keep-alives meanwhile (OpenRouter's
# ": OPENROUTER PROCESSING" comments, Anthropic's `ping` events after `message_start`; OpenAI chat and
# Responses send their opening chunk or events, then nothing).
# "index-not-a-number": an Anthropic stream's tool_use block gives its `index` as a JSON array ([0])
# in its content_block_start, _delta and _stop events. No real provider does (the Messages streaming
# docs give an integer); a broken or hostile server may, and the translation must not fail on it.
BAD_INDEX_TOKEN = "index-not-a-number"
# "status-not-a-string": a Responses request is answered with the whole Response object (JSON, as if
# `stream` were false, which some OpenAI-compatible servers do whatever the request says) whose
# `status` is a JSON array (["completed"]) where the API reference gives a string. A broken or hostile
# server; what Clutch makes of the answer must not fail on it.
BAD_STATUS_TOKEN = "status-not-a-string"
_CHUNKS_RE = re.compile(r"chunks-(\d+)")
_DELAY_RE = re.compile(r"(?<![a-z])delay-(\d+)")
_FIRST_TOKEN_RE = re.compile(r"first-token-(\d+)")
# Size faults: a broken or hostile server (no real provider sends these) must cost Clutch a bounded
# amount of memory and end in an error in the agent's dialect.
HUGE_ANSWER_BYTES = 20 << 20
ENDLESS_EVENT_BYTES = 12 << 20
KEEPALIVE_SECONDS = 0.25  # between keep-alives while a first-token wait runs (real ones come every few s)
HANG_CAP_SECONDS = 600.0
SLOW_DELAY = 0.2
SLOW_CHUNKS = 10
RETRY_AFTER_SECONDS = 2
PROVIDER_NAME = "FakeProvider"
TOOL_CALL_ID = "call_fake_1"        # OpenAI / OpenRouter / Responses call id
ANTHROPIC_TOOL_ID = "toolu_fake_1"  # Anthropic tool_use block id
TOOL_TRIGGER = "use-tool"

MODEL_IDS: tuple[str, ...] = (
    "fake/good",
    *(f"fake/{f}" for f in FAULTS),
    "fake/chunks-200",
    "openrouter/free",
    "openrouter/fake-fail-429:free",
)

# OpenRouter's model catalog (GET /api/v1/models), shaped as
# https://openrouter.ai/docs/api-reference/list-available-models documents it: `pricing` values are
# strings of US dollars per token ("0" for free variants; "-1" for the router openrouter/auto, whose
# price depends on the model it picks), `supported_parameters` lists "tools" only for models that call
# tools, `top_provider.max_completion_tokens` may be null, and `architecture.input_modalities` /
# `output_modalities` name text, image, file.  Every MODEL_IDS entry is listed with the same facts
# (131072 tokens of context, tools, $1 / $2 per million tokens, the prices the fake's OpenRouter
# `usage.cost` uses), except where CATALOG_FACTS says otherwise; the OPENROUTER_MODELS after them
# make the catalog varied the way the real one is (prices as listed on openrouter.ai/models, rounded):
# free and paid models, cache prices, one without tools, one with a small context, a router with no
# fixed price.  A model whose name holds a fault token (``openrouter/fake-fail-429:free``,
# ``fake/fail-500``) fails when a scan probes it, like any request to it.
_TEXT = ["text"]
_TEXT_IMAGE_FILE = ["text", "image", "file"]
_TOOL_PARAMS = ["max_tokens", "temperature", "top_p", "tools", "tool_choice", "stop", "response_format",
                "structured_outputs", "seed"]
_REASONING_TOOL_PARAMS = [*_TOOL_PARAMS, "reasoning", "include_reasoning"]
_CHAT_PARAMS = ["max_tokens", "temperature", "top_p", "stop", "frequency_penalty", "presence_penalty", "seed"]
_FREE = {"prompt": "0", "completion": "0"}


def _paid(prompt: str, completion: str, cache_read: str | None = None, cache_write: str | None = None) -> dict:
    pricing = {"prompt": prompt, "completion": completion}
    if cache_read is not None:
        pricing["input_cache_read"] = cache_read
    if cache_write is not None:
        pricing["input_cache_write"] = cache_write
    return pricing


# id -> (name, context_length, max_completion_tokens, pricing, supported_parameters, input_modalities)
OPENROUTER_MODELS: dict[str, tuple[str, int, int | None, dict, list[str], list[str]]] = {
    "qwen/qwen3-coder:free": ("Qwen: Qwen3 Coder 480B A35B (free)", 262144, None, _FREE, _TOOL_PARAMS, _TEXT),
    "qwen/qwen3-coder": ("Qwen: Qwen3 Coder 480B A35B", 262144, 65536,
                         _paid("0.00000022", "0.00000095", "0.000000022"), _TOOL_PARAMS, _TEXT),
    "moonshotai/kimi-k2.6": ("MoonshotAI: Kimi K2.6", 262144, 65536,
                             _paid("0.0000006", "0.0000025", "0.00000015"), _REASONING_TOOL_PARAMS, _TEXT_IMAGE_FILE),
    "deepseek/deepseek-v4-flash": ("DeepSeek: DeepSeek V4 Flash", 163840, 65536,
                                   _paid("0.00000014", "0.00000028", "0.000000028"), _REASONING_TOOL_PARAMS, _TEXT),
    "nvidia/nemotron-3-super-120b-a12b:free": ("NVIDIA: Nemotron 3 Super 120B A12B (free)", 262144, None, _FREE,
                                               _REASONING_TOOL_PARAMS, _TEXT),
    "anthropic/claude-sonnet-4.5": ("Anthropic: Claude Sonnet 4.5", 1000000, 64000,
                                    _paid("0.000003", "0.000015", "0.0000003", "0.00000375"), _REASONING_TOOL_PARAMS,
                                    _TEXT_IMAGE_FILE),
    "openai/gpt-5": ("OpenAI: GPT-5", 400000, 128000, _paid("0.00000125", "0.00001", "0.000000125"),
                     _REASONING_TOOL_PARAMS, _TEXT_IMAGE_FILE),
    # no tool calling: a coding agent cannot use it
    "meta-llama/llama-3.3-8b-instruct:free": ("Meta: Llama 3.3 8B Instruct (free)", 128000, 4028, _FREE,
                                              _CHAT_PARAMS, _TEXT),
    # tools, but a context a coding agent's system prompt and tool schemas alone would fill
    "fake/small-context": ("Fake: small context", 8192, 2048, _paid("0.0000001", "0.0000001"), _TOOL_PARAMS, _TEXT),
    # a router: it bills the model it picks, so the catalog lists no price
    "openrouter/auto": ("Auto Router", 2000000, None, {"prompt": "-1", "completion": "-1"}, _TOOL_PARAMS,
                        _TEXT_IMAGE_FILE),
}
# Facts of MODEL_IDS entries that differ from the default: free models cost nothing.
CATALOG_FACTS: dict[str, dict] = {
    "openrouter/free": {"name": "Free Models Router", "context_length": 200000, "pricing": _FREE},
    "openrouter/fake-fail-429:free": {"pricing": _FREE},
}


def _catalog_entry(model_id: str, name: str, context: int, max_out: int | None, pricing: dict,
                   params: list[str], inputs: list[str], created: int) -> dict:
    modality = "+".join(inputs) + "->text"
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "name": name,
        "created": created,
        "description": "Model served by the Clutch fake upstream.",
        "context_length": context,
        "architecture": {"modality": modality, "input_modalities": list(inputs), "output_modalities": ["text"],
                         "tokenizer": "Other", "instruct_type": None},
        "pricing": {"request": "0", "image": "0", "web_search": "0", "internal_reasoning": "0", **pricing},
        "top_provider": {"context_length": context, "max_completion_tokens": max_out, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": list(params),
    }


def openrouter_catalog() -> list[dict]:
    """The `data` of the fake's GET /api/v1/models (see OPENROUTER_MODELS)."""
    created = 1735689600
    default = {"context_length": 131072, "pricing": _paid("0.000001", "0.000002"),
               "max_out": 16384, "params": ["max_tokens", "temperature", "tools", "tool_choice", "stream", "stop"]}
    entries = []
    for m in MODEL_IDS:
        facts = {**default, **CATALOG_FACTS.get(m, {})}
        entries.append(_catalog_entry(m, facts.get("name", "Fake: " + m.split("/", 1)[-1]), facts["context_length"],
                                      facts["max_out"], facts["pricing"], facts["params"], _TEXT, created))
    for m, (name, context, max_out, pricing, params, inputs) in OPENROUTER_MODELS.items():
        entries.append(_catalog_entry(m, name, context, max_out, pricing, params, inputs, created))
    return entries


_ERROR_STATUS = {
    "fail-404": 404,
    "once-429": 429,
    "fail-429": 429,
    "rampup-429": 429,
    "daily-cap-429": 429,
    "fail-401": 401,
    "fail-500": 500,
    "fail-502": 502,
    "fail-503": 503,
    "fail-529": 529,
}


def _daily_cap_headers() -> dict[str, str]:
    """OpenRouter's free-models-per-day limit: 50 a day, none left, reset at the next UTC midnight
    (epoch milliseconds); the day is the UTC day."""
    today = datetime.datetime.now(datetime.UTC).date()
    midnight = datetime.datetime.combine(today + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    return {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(midnight.timestamp() * 1000))}


def parse_fault(model: str | None) -> tuple[str | None, int | None]:
    """Return ``(fault_name, n)`` for a model name; ``n`` only for ``chunks-<N>``.

    ``fault_name`` is one of :data:`FAULTS`, ``"chunks-<N>"`` or ``None``.
    """
    if not model:
        return None, None
    low = model.lower()
    for token in FAULTS:
        if token in low:
            return token, None
    m = _CHUNKS_RE.search(low)
    if m:
        n = max(1, int(m.group(1)))
        return f"chunks-{n}", n
    return None, None


def parse_timing(model: str | None) -> tuple[float, float]:
    """``(delay_s, first_token_s)`` from ``delay-<MS>`` and ``first-token-<MS>`` in a model name (0 when absent)."""
    low = (model or "").lower()
    delay = _DELAY_RE.search(low)
    first = _FIRST_TOKEN_RE.search(low)
    return (int(delay.group(1)) / 1000 if delay else 0.0), (int(first.group(1)) / 1000 if first else 0.0)


# OpenRouter's model fallbacks (https://openrouter.ai/docs/features/model-routing): with a ``models`` list,
# "if the first model returns an error, OpenRouter will try the next model in the list"; the answer's
# ``model`` names the model that served. These faults are errors OpenRouter moves past.
_NATIVE_SKIPPED = {"fail-404", "fail-429", "rampup-429", "daily-cap-429", "fail-500", "fail-502", "fail-503",
                   "fail-529"}


def openrouter_pick(body: dict) -> tuple[str, list[str]]:
    """The model OpenRouter serves a request with a ``models`` list from, and the ones it moved past.
    ``model`` comes first when it is not in the list; when every entry fails, the last one answers
    (with its error)."""
    listed = [m for m in body.get("models") or [] if isinstance(m, str) and m]
    first = str(body.get("model") or "")
    order = ([first] if first and first not in listed else []) + listed
    if not order:
        return first, []
    for index, model in enumerate(order):
        if parse_fault(model)[0] not in _NATIVE_SKIPPED:
            return model, order[:index]
    return order[-1], order[:-1]


# prose and code as a coding agent's model writes it; token_pieces cuts it into word-sized tokens
_TOKEN_SOURCE = (
    "The test fails because the parser decodes escape sequences twice. In `decode()` the input is "
    "first passed through `codecs.decode(s, 'unicode_escape')` and then again in `normalize()`, so "
    "a literal backslash followed by u00e9 turns into the character itself. I'll remove the second "
    "call and add a regression test:\n\n```python\ndef test_unicode_escape_once():\n    assert "
    "decode('\\\\u00e9') == '\\\\u00e9'\n    assert decode('caf\\u00e9') == 'caf\u00e9'\n```\n\n"
    "Running the suite again: 213 passed in 3.38s. The public API is unchanged. "
)
_TOKEN_RE = re.compile(r" ?[A-Za-z]+| ?\d{1,3}| ?[^\sA-Za-z\d]|\s+")


def token_pieces(n: int) -> list[str]:
    """``n`` word-sized tokens of a coding agent's answer (about 4 characters each, as BPE tokens
    of English and code are), cycling through :data:`_TOKEN_SOURCE`."""
    source = _TOKEN_RE.findall(_TOKEN_SOURCE)
    return [source[i % len(source)] for i in range(max(1, n))]


def split_answer(answer: str, n: int) -> list[str]:
    """Split ``answer`` into exactly ``n`` non-empty pieces.

    If the answer is shorter than ``n`` characters it is first repeated
    (joined by single spaces) until it is long enough, so the concatenation of
    the pieces is deterministic: ``"".join(split_answer(a, n))``.
    """
    n = max(1, n)
    text = answer or "."
    while len(text) < n:
        text = text + " " + (answer or ".")
    size, extra = divmod(len(text), n)
    pieces, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        pieces.append(text[pos : pos + step])
        pos += step
    return pieces


STRICT_ROLES_TEMPLATE = "Conversation roles must alternate user/assistant/user/assistant/..."
STRICT_ROLES_ANTHROPIC = ('messages: roles must alternate between "user" and "assistant", '
                          'but found multiple "user" roles in a row')


def repeated_user_turn(api: str, body: Any) -> int | None:
    """Index of the first of two user turns in a row (what ``strict-roles`` refuses), or ``None``.
    Entries without a role (Responses ``function_call_output``, ...) separate turns."""
    field = {"chat": "messages", "messages": "messages", "responses": "input"}.get(api)
    items = body.get(field) if field and isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    roles = [item.get("role") if isinstance(item, dict) else None for item in items]
    for n in range(1, len(roles)):
        if roles[n - 1] == roles[n] == "user":
            return n - 1
    return None


def _rand(n: int = 24, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _texts(obj: Any) -> list[str]:
    """All text found in a message / content structure of any of the dialects."""
    out: list[str] = []
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, list):
        for item in obj:
            out.extend(_texts(item))
    elif isinstance(obj, dict):
        for key in ("text", "content", "parts", "input"):
            if key in obj:
                out.extend(_texts(obj[key]))
    return out


_TRIGGER_RE = re.compile(r"use-tool(?::(?P<name>[A-Za-z0-9_.\-]+)(?P<colon>:)?)?")


def parse_tool_trigger(text: str) -> tuple[str | None, dict] | None:
    """The tool call a message text asks for: ``(name or None for the first tool, arguments)``,
    or ``None`` without a trigger.  Raises ``ValueError`` when ``use-tool:NAME:`` is not
    followed by a JSON object."""
    m = _TRIGGER_RE.search(text)
    if m is None:
        return None
    name = m.group("name")
    if not m.group("colon"):
        return name, {}
    try:
        args, _ = json.JSONDecoder().raw_decode(text, m.end())
    except ValueError as exc:
        raise ValueError(f"tool trigger use-tool:{name}: is not followed by a JSON object: {exc}") from exc
    if not isinstance(args, dict):
        raise ValueError(f"tool trigger use-tool:{name}: arguments must be a JSON object")
    return name, args


def _argument_pieces(arguments: str) -> list[str]:
    """How streamed tool-call arguments are split: ``{`` ``}`` for ``{}``, else three pieces."""
    return split_answer(arguments, 2 if len(arguments) <= 2 else 3)


def _last_turn(items: Any) -> Any:
    """The last message that is not a system / developer message (Claude Code >= 2.1.3xx puts a
    ``role: system`` message with its environment after the user's prompt)."""
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if not (isinstance(item, dict) and item.get("role") in ("system", "developer")):
            return item
    return None


def _first_tool_name(tools: Any) -> str:
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return "tool"
    t = tools[0]
    if isinstance(t.get("function"), dict) and t["function"].get("name"):
        return str(t["function"]["name"])  # OpenAI chat: {"type":"function","function":{...}}
    if t.get("name"):
        return str(t["name"])  # Anthropic / Responses
    decls = t.get("functionDeclarations") or t.get("function_declarations")
    if isinstance(decls, list) and decls and isinstance(decls[0], dict) and decls[0].get("name"):
        return str(decls[0]["name"])  # Gemini
    return "tool"


# Typed request-storage key (aiohttp >= 3.12 warns about plain string keys).
_ENTRY_KEY: Any = web.RequestKey("fake_entry", dict) if hasattr(web, "RequestKey") else "fake_entry"


class _ClientGone(Exception):
    """The client closed the connection while we were streaming."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def _breakpoint_prefixes(body: dict) -> list[tuple[int, str]]:
    """(characters, digest) of the prompt up to each `cache_control` breakpoint, in Anthropic's order
    (tools, system, messages) or a chat request's (messages, their content parts); the markers left
    out and a lone string read as the one text block it is."""
    import hashlib
    digest, chars, out = hashlib.sha256(), 0, []

    def unit(item: Any, tag: str) -> None:
        nonlocal chars
        marked = isinstance(item, dict) and "cache_control" in item
        if isinstance(item, str):
            item = {"type": "text", "text": item}
        if isinstance(item, dict):
            item = {k: v for k, v in item.items() if k != "cache_control"}
        text = tag + json.dumps(item, sort_keys=True)
        digest.update(text.encode())
        chars += len(text)
        if marked:
            out.append((chars, digest.copy().hexdigest()))

    for tool in body.get("tools") or []:
        unit(tool, "tool:")
    system = body.get("system")
    for block in ([system] if isinstance(system, str) else system or []):
        unit(block, "system:")
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        extra = {k: v for k, v in message.items() if k not in ("content", "role")}
        unit(json.dumps(extra, sort_keys=True), f"{message.get('role')}:")
        for block in ([content] if isinstance(content, str) else content or []):
            unit(block, "part:")
    return out


class _Ctx:
    """Per-request state shared by the handlers."""

    def __init__(self, request: web.Request, entry: dict, dialect: str, api: str) -> None:
        self.request = request
        self.entry = entry
        self.dialect = dialect  # openai | openrouter | anthropic | gemini
        self.api = api          # chat | messages | responses | gemini | other
        self.body: dict = {}
        self.model: str = ""
        self.stream = False
        self.fault: str | None = None
        self.fault_n: int | None = None
        self.request_id = ""
        self.gen_id = "gen-" + str(int(time.time())) + "-" + _rand(20)  # OpenRouter generation id
        self.prompt_chars = 0
        self.gemini_sse = False
        self.extra_delay = 0.0         # "delay-<MS>" in the model name
        self.first_token_s = 0.0       # "first-token-<MS>" in the model name
        self.tool: str | None = None   # tool-call variant: the tool's name ...
        self.tool_args: dict = {}      # ... its arguments
        self.tool_args_json = "{}"     # ... and them as compact JSON
        self.cache_numbers: tuple[int, int] | None = None  # prompt_cache: (read, written) tokens


class FakeUpstream:
    """Fake OpenRouter / OpenAI / Anthropic / Gemini server (see module docstring)."""

    def __init__(
        self,
        answer: str = "pong from the fake upstream",
        chunk_delay: float = 0.0,
        n_chunks: int = 4,
        log_path: str | os.PathLike | None = None,
        slow_delay: float = SLOW_DELAY,
        prompt_cache: bool = False,
        tokens: int = 0,
        first_token_delay: float = 0.0,
    ) -> None:
        self.answer = answer
        # token streaming (module docstring): a normal answer is `tokens` word-sized tokens, one per event
        self.token_answer = token_pieces(tokens) if tokens > 0 else None
        self.first_token_delay = first_token_delay
        # Anthropic-style prompt caching at breakpoints (module docstring); off: the fixed numbers
        self.prompt_cache = prompt_cache
        self._cached_prefixes: set[str] = set()
        self.chunk_delay = chunk_delay
        # the pause between the ``slow`` fault's chunks: a test that reads its pieces, not their timing,
        # sets it near zero
        self.slow_delay = slow_delay
        self.n_chunks = max(1, int(n_chunks))
        self.log_path = pathlib.Path(log_path) if log_path else None
        self.log: list[dict] = []
        self.port: int | None = None
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._failed_once: set[str] = set()  # models that already gave their "once-429"

    # ------------------------------------------------------------------ lifecycle
    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        r = app.router
        for p in ("/v1/chat/completions", "/api/v1/chat/completions", "/chat/completions"):
            r.add_post(p, self._handle_chat)
        for p in ("/v1/messages", "/api/v1/messages"):
            r.add_post(p, self._handle_messages)
        for p in ("/v1/responses", "/api/v1/responses"):
            r.add_post(p, self._handle_responses)
            r.add_get(p, self._handle_responses_get)
        r.add_post("/v1beta/models/{model_action}", self._handle_gemini)
        r.add_post("/v1/models/{model_action}", self._handle_gemini)
        r.add_get("/api/v1/models", self._handle_models)
        r.add_get("/v1/models", self._handle_models)
        r.add_get("/v1beta/models", self._handle_models)
        r.add_get("/api/claude_code/policy_limits", self._handle_policy_limits)
        r.add_get("/api/hello", self._handle_hello)
        r.add_route("*", "/{tail:.*}", self._handle_not_found)
        # auto_decompress=False: we decode Content-Encoding ourselves (and count wire bytes).
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            auto_decompress=False,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        url_host = "127.0.0.1" if host in ("127.0.0.1", "0.0.0.0", "", "localhost") else host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self.url = f"{'https' if ssl_context else 'http'}://{url_host}:{self.port}"

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def expected_answer(self, model: str = "") -> str:
        """The full text a normal (non-tool) answer for ``model`` streams/returns."""
        fault, n = parse_fault(model)
        return "".join(self._pieces(fault, n))

    def entries(self, path_prefix: str = "") -> list[dict]:
        return [e for e in self.log if str(e.get("path", "")).startswith(path_prefix)]

    # ------------------------------------------------------------------ logging
    @staticmethod
    def _new_entry(request: web.Request) -> dict:
        return {
            "t": time.time(),
            "method": request.method,
            "path": request.raw_path,
            "host": request.headers.get("Host"),
            "model": None,
            "stream": None,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_bytes": 0,  # bytes on the wire (before Content-Encoding decoding)
            "status": None,
            "outcome": None,
            "chunks_sent": 0,  # SSE events written (incl. [DONE]; comments not counted)
            # extras
            "fault": None,
            "dialect": None,
            "request_json": None,
            "t_end": None,
        }

    def _finish_entry(self, entry: dict) -> None:
        entry["t_end"] = time.time()
        if entry["outcome"] is None:
            entry["outcome"] = "ok"
        if self.log_path is not None:
            try:
                line = json.dumps(entry, ensure_ascii=False, default=str)
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate in the request (valid JSON, no UTF-8): escaped
                line = json.dumps(entry, default=str)
            except (TypeError, ValueError):  # pragma: no cover
                line = json.dumps({k: v for k, v in entry.items() if k != "request_json"}, default=str)
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
                fh.flush()

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        entry = self._new_entry(request)
        self.log.append(entry)
        request[_ENTRY_KEY] = entry
        try:
            resp = await handler(request)
            if entry["status"] is None:
                entry["status"] = resp.status
            return resp
        except web.HTTPException as exc:
            if entry["status"] is None:
                entry["status"] = exc.status
            raise
        except asyncio.CancelledError:
            if entry["outcome"] is None:
                entry["outcome"] = "aborted"
            raise
        except Exception:
            if entry["status"] is None:
                entry["status"] = 500
            entry["outcome"] = entry["outcome"] or "error"
            raise
        finally:
            self._finish_entry(entry)

    # ------------------------------------------------------------------ request parsing
    @staticmethod
    def _decode(raw: bytes, header: str) -> bytes:
        encodings = [e.strip().lower() for e in header.split(",") if e.strip()]
        data = raw
        for enc in reversed(encodings):
            if enc in ("identity", ""):
                continue
            try:
                if enc in ("gzip", "x-gzip"):
                    data = gzip.decompress(data)
                elif enc == "deflate":
                    try:
                        data = zlib.decompress(data)
                    except zlib.error:
                        data = zlib.decompress(data, -zlib.MAX_WBITS)  # raw deflate
                elif enc == "br":
                    if _brotli is None:
                        raise _BadRequest(415, "Unsupported Content-Encoding: br")
                    data = _brotli.decompress(data)
                elif enc == "zstd":
                    if _zstd_std is not None:
                        data = _zstd_std.decompress(data)
                    elif _zstandard is not None:
                        data = _zstandard.ZstdDecompressor().decompressobj().decompress(data)
                    else:
                        raise _BadRequest(415, "Unsupported Content-Encoding: zstd")
                else:
                    raise _BadRequest(415, f"Unsupported Content-Encoding: {enc}")
            except _BadRequest:
                raise
            except Exception as exc:
                raise _BadRequest(400, f"Could not decode {enc} request body: {exc}") from exc
        return data

    async def _read_json(self, ctx: _Ctx) -> None:
        raw = await ctx.request.read()
        ctx.entry["body_bytes"] = len(raw)
        data = self._decode(raw, ctx.request.headers.get("Content-Encoding", ""))
        ctx.prompt_chars = len(data)
        if not data.strip():
            body: Any = {}
        else:
            try:
                body = json.loads(data)
            except ValueError as exc:
                raise _BadRequest(400, f"We could not parse the JSON body of your request: {exc}") from exc
        if not isinstance(body, dict):
            raise _BadRequest(400, "The request body must be a JSON object.")
        ctx.body = body
        ctx.entry["request_json"] = body

    def _ctx(self, request: web.Request, dialect: str, api: str) -> _Ctx:
        ctx = _Ctx(request, request[_ENTRY_KEY], dialect, api)
        ctx.entry["dialect"] = dialect
        if dialect == "anthropic":
            ctx.request_id = "req_" + _rand(24)
        else:
            ctx.request_id = "req_" + secrets.token_hex(16)
        return ctx

    def _select(self, ctx: _Ctx, model: str, stream: bool) -> None:
        ctx.model = model
        ctx.stream = stream
        ctx.entry["model"] = model
        ctx.entry["stream"] = stream
        ctx.fault, ctx.fault_n = parse_fault(model)
        ctx.extra_delay, ctx.first_token_s = parse_timing(model)
        ctx.first_token_s = ctx.first_token_s or self.first_token_delay
        ctx.entry["fault"] = ctx.fault

    def _pieces(self, fault: str | None, n: int | None) -> list[str]:
        if fault == "empty":
            return []
        if fault == "slow":
            return split_answer(self.answer, SLOW_CHUNKS)
        if fault and fault.startswith("chunks-") and n:
            return split_answer(self.answer, n)
        if self.token_answer is not None and fault is None:
            return list(self.token_answer)
        return split_answer(self.answer, self.n_chunks)

    def _delay(self, ctx: _Ctx) -> float:
        return (self.slow_delay if ctx.fault == "slow" else self.chunk_delay) + ctx.extra_delay

    @staticmethod
    def _first_token_wait(ctx: _Ctx, keepalive: bytes | None):
        """``first-token-<MS>``: the wait before the first content, as (data, delay, counted) steps, with
        ``keepalive`` sent every KEEPALIVE_SECONDS (None: silence)."""
        left = ctx.first_token_s
        while left > 0:
            step = min(left, KEEPALIVE_SECONDS) if keepalive is not None else left
            yield (keepalive or b""), step, False
            left -= step

    def _select_native(self, ctx: _Ctx) -> str:
        """OpenRouter with a ``models`` list: the model that serves (logged with the ones moved past)."""
        model = str(ctx.body.get("model") or "")
        if ctx.dialect != "openrouter" or not isinstance(ctx.body.get("models"), list):
            return model
        served, skipped = openrouter_pick(ctx.body)
        ctx.entry["native"] = {"asked": model, "skipped": skipped, "served": served}
        return served

    def _tool_name(self, ctx: _Ctx) -> str | None:
        """Name of the tool to call if the request asks for the tool-call variant (parsed by
        :meth:`_parse_tool_call` in the prologue; the arguments are in ``ctx.tool_args``);
        ``ignores-tools`` never calls one."""
        return None if ctx.fault == "ignores-tools" else ctx.tool

    def _parse_tool_call(self, ctx: _Ctx) -> None:
        """Fill ``ctx.tool`` / ``ctx.tool_args`` from the trigger in the last non-system message
        (module docstring)."""
        tools = ctx.body.get("tools")
        if not tools:
            return
        if ctx.api == "responses":
            inp = ctx.body.get("input")
            last = inp if isinstance(inp, str) else _last_turn(inp)
        elif ctx.api == "gemini":
            last = _last_turn(ctx.body.get("contents"))
        else:
            last = _last_turn(ctx.body.get("messages"))
        if last is None:
            return
        for text in _texts(last):
            if TOOL_TRIGGER not in text:
                continue
            try:
                found = parse_tool_trigger(text)
            except ValueError as exc:
                raise _BadRequest(400, str(exc)) from exc
            if found is not None:
                name, args = found
                ctx.tool = name or _first_tool_name(tools)
                ctx.tool_args = args
                ctx.tool_args_json = _dumps(args)
                return

    def _usage_numbers(self, ctx: _Ctx, out_pieces: int) -> dict:
        prompt = 10 + ctx.prompt_chars // 16
        cached, written = prompt // 2, 2
        if self.prompt_cache:
            if ctx.cache_numbers is None:  # once per request: reading the cache also fills it
                ctx.cache_numbers = self._prompt_cache(ctx.body, prompt)
            cached, written = ctx.cache_numbers
        reasoning = 2 if out_pieces else 0
        completion = out_pieces + reasoning
        return {"prompt": prompt, "cached": cached, "written": written, "reasoning": reasoning,
                "completion": completion}

    def _prompt_cache(self, body: dict, prompt: int) -> tuple[int, int]:
        """(cache-read, cache-write) tokens, as Anthropic bills them: the longest prefix up to a
        breakpoint that an earlier request wrote is read; the rest up to the last breakpoint is written.
        The markers are not part of the prefix (a breakpoint that moved on still reads)."""
        marked = _breakpoint_prefixes(body)
        read = max((chars for chars, digest in marked if digest in self._cached_prefixes), default=0)
        last = max((chars for chars, _ in marked), default=0)
        self._cached_prefixes.update(digest for _, digest in marked)
        cached = min(prompt, read // 16)
        return cached, min(prompt - cached, max(0, last - read) // 16)

    # ------------------------------------------------------------------ response headers
    def _base_headers(self, ctx: _Ctx, content_type: str = "application/json") -> dict[str, str]:
        h = {"Content-Type": content_type, "x-fake-upstream": "clutch"}
        if content_type.startswith("text/event-stream"):
            h["Cache-Control"] = "no-cache"
        if ctx.dialect == "anthropic":
            h["request-id"] = ctx.request_id
            h["anthropic-organization-id"] = "00000000-0000-4000-8000-00000000fa4e"
        elif ctx.dialect in ("openai", "openrouter"):
            h["x-request-id"] = ctx.request_id
            if ctx.dialect == "openai":
                h["openai-version"] = "2020-10-01"
                h["openai-processing-ms"] = "7"
                h["openai-organization"] = "fake-org"
            else:
                h["x-generation-id"] = ctx.gen_id
        else:  # gemini
            h["x-request-id"] = ctx.request_id
            h["server-timing"] = "gfet4t7; dur=7"
        return h

    def _rate_limit_headers(self, ctx: _Ctx) -> dict[str, str]:
        now = time.time()
        reset_ms = int((now + RETRY_AFTER_SECONDS) * 1000)
        h = {
            "retry-after": str(RETRY_AFTER_SECONDS),
            # OpenRouter style (reset = epoch milliseconds)
            "x-ratelimit-limit": "20",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(reset_ms),
        }
        if ctx.dialect == "openai":
            h.update(
                {
                    "x-ratelimit-limit-requests": "20",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{RETRY_AFTER_SECONDS}s",
                    "x-ratelimit-limit-tokens": "40000",
                    "x-ratelimit-remaining-tokens": "0",
                    "x-ratelimit-reset-tokens": f"{RETRY_AFTER_SECONDS}s",
                }
            )
        elif ctx.dialect == "anthropic":
            reset = datetime.datetime.fromtimestamp(now + RETRY_AFTER_SECONDS, datetime.UTC)
            stamp = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
            h.update(
                {
                    "anthropic-ratelimit-requests-limit": "20",
                    "anthropic-ratelimit-requests-remaining": "0",
                    "anthropic-ratelimit-requests-reset": stamp,
                }
            )
        return h

    # ------------------------------------------------------------------ error bodies
    def _error_body(self, ctx: _Ctx, status: int, kind: str, message: str | None = None) -> dict:
        """Dialect-shaped error body.

        ``kind`` is one of: rate_limit, rampup, daily_cap, auth, server, bad_gateway,
        unavailable, overloaded, not_found, invalid_request, unsupported_media.
        """
        d = ctx.dialect
        if d == "anthropic":
            # https://docs.anthropic.com/en/api/errors
            etype, default = {
                "rate_limit": ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit (fake)."),
                "rampup": ("rate_limit_error", "Your request rate increased too quickly. Please ramp up gradually (rate increased too quickly)."),
                "daily_cap": ("rate_limit_error", "Number of requests has exceeded your daily rate limit (fake)."),
                "auth": ("authentication_error", "invalid x-api-key"),
                "server": ("api_error", "Internal server error"),
                "bad_gateway": ("api_error", "Bad gateway"),
                "unavailable": ("api_error", "Service unavailable"),
                "overloaded": ("overloaded_error", "Overloaded"),
                "not_found": ("not_found_error", "Not found"),
                "invalid_request": ("invalid_request_error", "Invalid request"),
                "unsupported_media": ("invalid_request_error", "Unsupported media type"),
            }[kind]
            return {
                "type": "error",
                "error": {"type": etype, "message": message or default},
                "request_id": ctx.request_id,
            }
        if d == "gemini":
            # https://ai.google.dev/gemini-api/docs/troubleshooting
            gstatus, default = {
                "rate_limit": ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
                "rampup": ("RESOURCE_EXHAUSTED", "Resource has been exhausted: rate increased too quickly."),
                "daily_cap": ("RESOURCE_EXHAUSTED", "Quota exceeded for metric: generate_content_free_tier_requests, limit: 50 per day."),
                "auth": ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
                "server": ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
                "bad_gateway": ("UNAVAILABLE", "Bad gateway."),
                "unavailable": ("UNAVAILABLE", "The model is overloaded. Please try again later."),
                "overloaded": ("UNAVAILABLE", "The model is overloaded. Please try again later."),
                "not_found": ("NOT_FOUND", "Requested entity was not found."),
                "invalid_request": ("INVALID_ARGUMENT", "Invalid JSON payload received."),
                "unsupported_media": ("INVALID_ARGUMENT", "Unsupported Content-Encoding."),
            }[kind]
            return {"error": {"code": status, "message": message or default, "status": gstatus}}
        if d == "openrouter":
            # https://openrouter.ai/docs/api-reference/errors-and-debugging
            now_ms = int(time.time() * 1000)
            default, metadata = {
                "rate_limit": (
                    "Rate limit exceeded: free-models-per-min.",
                    {
                        "headers": {
                            "X-RateLimit-Limit": "20",
                            "X-RateLimit-Remaining": "0",
                            "X-RateLimit-Reset": str(now_ms + RETRY_AFTER_SECONDS * 1000),
                        },
                        "provider_name": None,
                    },
                ),
                "rampup": (
                    "Provider returned error: rate increased too quickly, please slow down.",
                    {"raw": "rate increased too quickly", "provider_name": PROVIDER_NAME},
                ),
                "daily_cap": (
                    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day",
                    {"headers": _daily_cap_headers(), "provider_name": None},
                ),
                "auth": ("User not found.", None),
                "server": ("Internal Server Error", None),
                "bad_gateway": (
                    "Provider returned error",
                    {"raw": "upstream connect error or disconnect/reset before headers", "provider_name": PROVIDER_NAME},
                ),
                "unavailable": ("No allowed providers are available for the selected model.", None),
                "overloaded": (
                    "Provider returned error",
                    {"raw": '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "provider_name": PROVIDER_NAME},
                ),
                "not_found": ("Not Found", None),
                "invalid_request": ("Invalid request", None),
                "unsupported_media": ("Unsupported Content-Encoding", None),
            }[kind]
            err: dict[str, Any] = {"code": status, "message": message or default}
            if metadata is not None:
                err["metadata"] = metadata
            return {"error": err, "user_id": "user_fake"}
        # OpenAI: https://platform.openai.com/docs/guides/error-codes
        etype, code, default = {
            "rate_limit": ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached for requests (fake). Please try again in 2s."),
            "rampup": ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached: your request rate increased too quickly. Please ramp up gradually."),
            "daily_cap": ("requests", "rate_limit_exceeded", "Rate limit reached for requests per day (RPD) (fake). Please try again tomorrow."),
            "auth": ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-fake***. You can find your API key at https://platform.openai.com/account/api-keys."),
            "server": ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
            "bad_gateway": ("server_error", None, "Bad gateway."),
            "unavailable": ("server_error", None, "The engine is currently overloaded, please try again later."),
            "overloaded": ("server_error", None, "The engine is currently overloaded, please try again later."),
            "not_found": ("invalid_request_error", None, None),
            "invalid_request": ("invalid_request_error", None, "Invalid request."),
            "unsupported_media": ("invalid_request_error", None, "Unsupported Content-Encoding."),
        }[kind]
        if default is None:
            default = f"Invalid URL ({ctx.request.method} {ctx.request.path})"
        return {"error": {"message": message or default, "type": etype, "param": None, "code": code}}

    def _error_response(self, ctx: _Ctx, status: int, kind: str, message: str | None = None,
                        extra_headers: dict[str, str] | None = None, http_status: int | None = None) -> web.Response:
        headers = self._base_headers(ctx)
        if extra_headers:
            headers.update(extra_headers)
        body = self._error_body(ctx, status, kind, message)
        return web.Response(status=http_status or status, body=_dumps(body).encode(), headers=headers)

    def _fault_error(self, ctx: _Ctx) -> web.Response:
        fault = ctx.fault or ""
        status = _ERROR_STATUS[fault]
        kind = {
            "fail-404": "not_found",
            "once-429": "rate_limit",
            "fail-429": "rate_limit",
            "rampup-429": "rampup",
            "daily-cap-429": "daily_cap",
            "fail-401": "auth",
            "fail-500": "server",
            "fail-502": "bad_gateway",
            "fail-503": "unavailable",
            "fail-529": "overloaded",
        }[fault]
        extra = self._rate_limit_headers(ctx) if status == 429 else None
        if fault == "daily-cap-429":
            extra = {k.lower(): v for k, v in _daily_cap_headers().items()}
        if status in (503, 529):
            extra = {"retry-after": str(RETRY_AFTER_SECONDS)}
        if ctx.dialect == "anthropic":
            extra = dict(extra or {})
            extra["x-should-retry"] = "false" if status == 401 else "true"
        ctx.entry["outcome"] = f"fault:{fault}"
        message = None
        if fault == "fail-404":  # the model-not-found wording of each API
            message = {"anthropic": f"model: {ctx.model}", "gemini": f"models/{ctx.model} is not found for API "
                       f"version v1beta, or is not supported for generateContent."}.get(
                ctx.dialect, f"The model `{ctx.model}` does not exist or you do not have access to it.")
        return self._error_response(ctx, status, kind, message, extra_headers=extra)

    def _bad_request_response(self, ctx: _Ctx, exc: _BadRequest) -> web.Response:
        kind = "unsupported_media" if exc.status == 415 else exc.kind
        return self._error_response(ctx, exc.status, kind, exc.message)

    # ------------------------------------------------------------------ streaming plumbing
    async def _open_stream(self, ctx: _Ctx, content_type: str = "text/event-stream; charset=utf-8") -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=self._base_headers(ctx, content_type))
        if content_type.startswith("text/event-stream"):
            resp.headers["Connection"] = "keep-alive"
        resp.enable_chunked_encoding()
        await resp.prepare(ctx.request)
        ctx.entry["status"] = 200
        return resp

    @staticmethod
    def _gone(request: web.Request) -> bool:
        tr = request.transport
        return tr is None or tr.is_closing()

    async def _write(self, ctx: _Ctx, resp: web.StreamResponse, data: bytes, count: bool = True) -> None:
        if self._gone(ctx.request):
            raise _ClientGone()
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError, OSError) as exc:
            raise _ClientGone() from exc
        if count:
            ctx.entry["chunks_sent"] += 1

    async def _sleep(self, ctx: _Ctx, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self._gone(ctx.request):
            raise _ClientGone()

    async def _finish_stream(self, ctx: _Ctx, resp: web.StreamResponse) -> web.StreamResponse:
        try:
            await resp.write_eof()
        except (ConnectionError, RuntimeError, OSError):
            ctx.entry["outcome"] = "aborted"
        return resp

    async def _wait_until_gone(self, ctx: _Ctx) -> bool:
        """Wait until the client disconnects (True) or the cap / server stop (False)."""
        deadline = time.monotonic() + HANG_CAP_SECONDS
        stopping = self._stopping
        while time.monotonic() < deadline:
            if self._gone(ctx.request):
                return True
            if stopping is not None and stopping.is_set():
                return False
            await asyncio.sleep(0.05)
        return False

    async def _hang(self, ctx: _Ctx) -> web.StreamResponse:
        ctx.entry["status"] = 0  # no response head was ever sent
        gone = await self._wait_until_gone(ctx)
        ctx.entry["outcome"] = "aborted" if gone else "fault:hang"
        tr = ctx.request.transport
        if tr is not None:
            tr.close()
        return web.Response(status=504, headers=self._base_headers(ctx))

    async def _hang_after_headers(self, ctx: _Ctx) -> web.StreamResponse:
        ctype = "application/json" if ctx.api == "gemini" and not ctx.gemini_sse else "text/event-stream; charset=utf-8"
        try:
            resp = await self._open_stream(ctx, ctype)
        except (ConnectionError, RuntimeError, OSError):
            ctx.entry["outcome"] = "aborted"
            return web.Response(status=499)
        gone = await self._wait_until_gone(ctx)
        ctx.entry["outcome"] = "aborted" if gone else "fault:hang-after-headers"
        tr = ctx.request.transport
        if tr is not None:
            tr.close()
        return resp

    @staticmethod
    async def _endless_event():
        """One `data:` line of ENDLESS_EVENT_BYTES, in 64 KB writes, never ended by a blank line."""
        yield b'data: {"padding": "', 0, False
        piece = b"x" * (64 << 10)
        for _ in range(ENDLESS_EVENT_BYTES // len(piece)):
            yield piece, 0, False

    async def _run_stream(self, ctx: _Ctx, events) -> web.StreamResponse:
        """Open an SSE response and write ``events`` (an async generator of
        ``(bytes, delay_before, counted)``), honouring client disconnects."""
        ctype = "application/json; charset=UTF-8" if ctx.api == "gemini" and not ctx.gemini_sse else "text/event-stream; charset=utf-8"
        try:
            resp = await self._open_stream(ctx, ctype)
        except (ConnectionError, RuntimeError, OSError):
            ctx.entry["outcome"] = "aborted"
            return web.Response(status=499)
        try:
            async for data, delay, counted in events:
                if delay:
                    await self._sleep(ctx, delay)
                if data:  # an empty step is a pause (a first-token wait in silence)
                    await self._write(ctx, resp, data, counted)
        except _ClientGone:
            ctx.entry["outcome"] = "aborted"
            return resp
        if ctx.entry["outcome"] is None:
            ctx.entry["outcome"] = f"fault:{ctx.fault}" if ctx.fault else "ok"
        return await self._finish_stream(ctx, resp)

    def _json_response(self, ctx: _Ctx, obj: Any, status: int = 200) -> web.Response:
        if ctx.entry["outcome"] is None:
            ctx.entry["outcome"] = f"fault:{ctx.fault}" if ctx.fault else "ok"
        return web.Response(status=status, body=_dumps(obj).encode(), headers=self._base_headers(ctx))

    async def _common_faults(self, ctx: _Ctx) -> web.StreamResponse | None:
        """Faults that look the same for every endpoint (errors, hangs)."""
        if ctx.fault == "once-429":
            if ctx.model in self._failed_once:
                ctx.fault = ctx.entry["fault"] = None  # it failed its once: a normal answer now
            else:
                self._failed_once.add(ctx.model)
        if ctx.fault in _ERROR_STATUS:
            return self._fault_error(ctx)
        if ctx.fault == "strict-roles" and repeated_user_turn(ctx.api, ctx.body) is not None:
            ctx.entry["outcome"] = "fault:strict-roles"
            message = STRICT_ROLES_ANTHROPIC if ctx.dialect == "anthropic" else STRICT_ROLES_TEMPLATE
            return self._error_response(ctx, 400, "invalid_request", message)
        if ctx.fault == "huge-answer":
            ctx.entry["outcome"] = "fault:huge-answer"
            padding = "x" * HUGE_ANSWER_BYTES
            return web.Response(status=200, body=_dumps({"id": "huge", "padding": padding}).encode(),
                                headers=self._base_headers(ctx))
        if ctx.fault == "endless-event":
            return await self._run_stream(ctx, self._endless_event())
        if ctx.fault == "hang":
            return await self._hang(ctx)
        if ctx.fault == "hang-after-headers":
            return await self._hang_after_headers(ctx)
        return None

    async def _prologue(self, request: web.Request, dialect: str, api: str) -> tuple[_Ctx, web.StreamResponse | None]:
        ctx = self._ctx(request, dialect, api)
        try:
            await self._read_json(ctx)
            if isinstance(ctx.body.get("model"), str):
                ctx.entry["model"] = ctx.body["model"]  # logged even when the request is refused
            _check_shape(ctx.body, api)
            self._parse_tool_call(ctx)
        except _BadRequest as exc:
            return ctx, self._bad_request_response(ctx, exc)
        return ctx, None

    # ================================================================== OpenAI / OpenRouter chat
    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions (OpenAI) and /api/v1/chat/completions (OpenRouter).

        Object shapes: https://platform.openai.com/docs/api-reference/chat/create
        Chunk shapes:  https://platform.openai.com/docs/api-reference/chat-streaming
        OpenRouter:    https://openrouter.ai/docs/api-reference/overview (``provider`` field,
                       ``native_finish_reason``), usage with ``cost`` in the final chunk per
                       https://openrouter.ai/docs/use-cases/usage-accounting, errors per
                       https://openrouter.ai/docs/api-reference/errors-and-debugging.
        """
        dialect = "openrouter" if request.path.startswith("/api/") else "openai"
        ctx, early = await self._prologue(request, dialect, "chat")
        if early is not None:
            return early
        self._select(ctx, self._select_native(ctx), ctx.body.get("stream") is True)
        resp = await self._common_faults(ctx)
        if resp is not None:
            return resp
        openrouter = dialect == "openrouter"
        cid = ctx.gen_id if openrouter else ("chatcmpl-" + _rand(29))
        created = int(time.time())
        tool = self._tool_name(ctx)

        def usage(n_out: int) -> dict:
            u = self._usage_numbers(ctx, n_out)
            out = {
                "prompt_tokens": u["prompt"],
                "completion_tokens": u["completion"],
                "total_tokens": u["prompt"] + u["completion"],
                "prompt_tokens_details": {"cached_tokens": u["cached"], "audio_tokens": 0,
                                          **({"cache_write_tokens": u["written"]} if self.prompt_cache else {})},
                "completion_tokens_details": {
                    "reasoning_tokens": u["reasoning"],
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }
            if openrouter:
                cost = round(u["prompt"] * 1e-6 + u["completion"] * 2e-6, 10)
                out["cost"] = cost
                out["is_byok"] = False
                out["cost_details"] = {"upstream_inference_cost": None,
                                       "upstream_inference_prompt_cost": round(u["prompt"] * 1e-6, 10),
                                       "upstream_inference_completions_cost": round(u["completion"] * 2e-6, 10)}
            return out

        def envelope(obj_type: str) -> dict:
            env: dict[str, Any] = {"id": cid, "object": obj_type, "created": created, "model": ctx.model}
            if openrouter:
                env["provider"] = PROVIDER_NAME
            else:
                env["service_tier"] = "default"
                env["system_fingerprint"] = "fp_fake00001"
            return env

        def choice(extra: dict, finish: str | None) -> dict:
            c: dict[str, Any] = {"index": 0, **extra, "logprobs": None, "finish_reason": finish}
            if openrouter:
                c["native_finish_reason"] = finish
            return c

        if ctx.fault == "error-200" and not ctx.stream:
            body = self._error_body(ctx, 502, "bad_gateway") if openrouter else self._error_body(ctx, 500, "server")
            return self._json_response(ctx, body)

        if not ctx.stream:
            if tool:
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [{"id": TOOL_CALL_ID, "type": "function", "function": {"name": tool, "arguments": ctx.tool_args_json}}],
                    "annotations": [],
                }
                n_out, finish = 2, "tool_calls"
            else:
                pieces = self._pieces(ctx.fault, ctx.fault_n)
                message = {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}
                n_out, finish = len(pieces), "stop"
            obj = envelope("chat.completion")
            obj["choices"] = [choice({"message": message}, finish)]
            obj["usage"] = usage(n_out)
            return self._json_response(ctx, obj)

        include_usage = bool((ctx.body.get("stream_options") or {}).get("include_usage")) or openrouter
        delay = self._delay(ctx)

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            obj = envelope("chat.completion.chunk")
            obj["choices"] = [choice({"delta": delta}, finish)]
            if include_usage and not openrouter:
                obj["usage"] = None
            return b"data: " + _dumps(obj).encode() + b"\n\n"

        async def events():
            if openrouter:
                yield b": OPENROUTER PROCESSING\n\n", 0, False
            if ctx.fault == "error-200":
                err = self._error_body(ctx, 502, "bad_gateway") if openrouter else self._error_body(ctx, 500, "server")
                yield b"data: " + _dumps(err).encode() + b"\n\n", 0, True
                yield b"data: [DONE]\n\n", 0, True
                return
            keepalive = b": OPENROUTER PROCESSING\n\n" if openrouter else None
            if tool:
                for step in self._first_token_wait(ctx, keepalive):
                    yield step
                if ctx.fault == "text-before-tool":
                    yield chunk({"role": "assistant", "content": ""}), 0, True
                    for part in self._pieces(None, 3):
                        yield chunk({"content": part}), delay, True
                yield chunk({"role": "assistant", "content": None, "tool_calls": [
                    {"index": 0, "id": TOOL_CALL_ID, "type": "function", "function": {"name": tool, "arguments": ""}}]}), 0, True
                for part in _argument_pieces(ctx.tool_args_json):
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}), delay, True
                n_out, finish = 2, "tool_calls"
            else:
                # OpenRouter sends only its comments until the model's first chunk; OpenAI opens with the
                # role chunk, then nothing until the first token
                if openrouter:
                    for step in self._first_token_wait(ctx, keepalive):
                        yield step
                yield chunk({"role": "assistant", "content": "", "refusal": None}), 0, True
                if not openrouter:
                    for step in self._first_token_wait(ctx, keepalive):
                        yield step
                pieces = self._pieces(ctx.fault, ctx.fault_n)
                if ctx.fault in ("midstream-error", "stream-cut"):
                    pieces = pieces[:2]
                for i, part in enumerate(pieces):
                    yield chunk({"content": part}), (delay if i else 0), True
                if ctx.fault == "stream-cut":
                    return  # no finish_reason, no usage, no [DONE]: the body just ends
                if ctx.fault == "midstream-error":
                    if openrouter:
                        # https://openrouter.ai/docs/api-reference/errors-and-debugging (errors during streaming)
                        obj = envelope("chat.completion.chunk")
                        obj["error"] = {"code": "server_error", "message": "Provider disconnected unexpectedly"}
                        obj["choices"] = [choice({"delta": {"content": ""}}, "error")]
                    else:
                        obj = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                                         "type": "server_error", "param": None, "code": None}}
                    yield b"data: " + _dumps(obj).encode() + b"\n\n", delay, True
                    return
                n_out, finish = len(pieces), "stop"
            yield chunk({}, finish), delay, True
            if include_usage:
                obj = envelope("chat.completion.chunk")
                obj["choices"] = []
                obj["usage"] = usage(n_out)
                yield b"data: " + _dumps(obj).encode() + b"\n\n", 0, True
            yield b"data: [DONE]\n\n", 0, True

        return await self._run_stream(ctx, events())

    # ================================================================== Anthropic Messages
    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/messages (also ``?beta=true``).

        Object:    https://docs.anthropic.com/en/api/messages
        Streaming: https://docs.anthropic.com/en/docs/build-with-claude/streaming
        Errors:    https://docs.anthropic.com/en/api/errors
        """
        dialect = "anthropic"  # also for OpenRouter's Anthropic-compatible /api/v1/messages
        ctx, early = await self._prologue(request, dialect, "messages")
        if early is not None:
            return early
        self._select(ctx, str(ctx.body.get("model") or ""), ctx.body.get("stream") is True)
        resp = await self._common_faults(ctx)
        if resp is not None:
            return resp
        msg_id = "msg_fake" + _rand(20)
        tool = self._tool_name(ctx)
        pieces = [] if tool else self._pieces(ctx.fault, ctx.fault_n)
        n_out = 2 if tool else len(pieces)
        u = self._usage_numbers(ctx, n_out)
        usage_full = {
            "input_tokens": u["prompt"] - u["cached"] - (u["written"] if self.prompt_cache else 0),
            "cache_creation_input_tokens": u["written"],
            "cache_read_input_tokens": u["cached"],
            "output_tokens": u["completion"],
            "service_tier": "standard",
        }
        stop_reason = "tool_use" if tool else "end_turn"

        if ctx.fault == "error-200" and not ctx.stream:
            return self._json_response(ctx, self._error_body(ctx, 500, "overloaded"))

        if not ctx.stream:
            if tool:
                content: list[dict] = [{"type": "tool_use", "id": ANTHROPIC_TOOL_ID, "name": tool, "input": ctx.tool_args}]
            elif pieces:
                content = [{"type": "text", "text": "".join(pieces)}]
            else:
                content = []
            obj = {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": ctx.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage_full,
            }
            return self._json_response(ctx, obj)

        delay = self._delay(ctx)

        def ev(etype: str, obj: dict) -> bytes:
            return f"event: {etype}\ndata: ".encode() + _dumps(obj).encode() + b"\n\n"

        async def events():
            if ctx.fault == "error-200":
                yield ev("error", self._error_body(ctx, 529, "overloaded")), 0, True
                return
            start_usage = dict(usage_full, output_tokens=1)
            yield ev("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": ctx.model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": start_usage}}), 0, True
            for step in self._first_token_wait(ctx, ev("ping", {"type": "ping"})):
                yield step
            if tool and ctx.fault == "text-before-tool":
                yield ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}}), 0, True
                for part in self._pieces(None, 3):
                    yield ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": part}}), delay, True
                yield ev("content_block_stop", {"type": "content_block_stop", "index": 0}), 0, True
            tool_index: int | list[int] = 1 if tool and ctx.fault == "text-before-tool" else 0
            if BAD_INDEX_TOKEN in ctx.model:
                tool_index = [tool_index]
            if tool:
                yield ev("content_block_start", {"type": "content_block_start", "index": tool_index, "content_block": {
                    "type": "tool_use", "id": ANTHROPIC_TOOL_ID, "name": tool, "input": {}}}), 0, True
                yield ev("ping", {"type": "ping"}), 0, True
                for part in _argument_pieces(ctx.tool_args_json):
                    yield ev("content_block_delta", {"type": "content_block_delta", "index": tool_index,
                                                     "delta": {"type": "input_json_delta", "partial_json": part}}), delay, True
                yield ev("content_block_stop", {"type": "content_block_stop", "index": tool_index}), 0, True
            elif pieces:
                yield ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}}), 0, True
                yield ev("ping", {"type": "ping"}), 0, True
                send = pieces[:2] if ctx.fault in ("midstream-error", "stream-cut") else pieces
                for i, part in enumerate(send):
                    yield ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": part}}), (delay if i else 0), True
                if ctx.fault == "stream-cut":
                    return  # no content_block_stop, message_delta or message_stop: the body just ends
                if ctx.fault == "midstream-error":
                    yield ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), delay, True
                    return
                yield ev("content_block_stop", {"type": "content_block_stop", "index": 0}), delay, True
            else:  # empty
                yield ev("ping", {"type": "ping"}), 0, True
            yield ev("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                       "usage": {"output_tokens": u["completion"]}}), 0, True
            yield ev("message_stop", {"type": "message_stop"}), 0, True

        return await self._run_stream(ctx, events())

    # ================================================================== OpenAI Responses
    async def _handle_responses_get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/responses: Responses over WebSocket (as Codex uses it), else 405.

        https://platform.openai.com/docs/guides/websocket-mode: the client sends
        ``{"type": "response.create", ...}`` text messages (the create body's fields beside ``type``);
        the server answers each with the same events as the SSE stream, one JSON text message per
        event, ending with ``response.completed`` carrying the usage. Token numbers follow the
        module's formula over the message's size.
        """
        ctx = self._ctx(request, "openrouter" if request.path.startswith("/api/") else "openai", "responses")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._responses_websocket(ctx, request)
        return self._error_response(ctx, 405, "invalid_request",
                                    f"Invalid method for URL ({request.method} {request.path})")

    async def _responses_websocket(self, ctx: _Ctx, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        ctx.entry["status"] = 101
        answer = self.expected_answer()
        async for message in ws:
            if message.type != web.WSMsgType.TEXT:
                continue
            try:
                create = json.loads(message.data)
            except ValueError:
                await ws.send_str(_dumps({"type": "error", "code": "invalid_json", "message": "not JSON"}))
                continue
            model = str(create.get("model") or "")
            prompt = 10 + len(message.data) // 16
            usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": prompt // 2},
                     "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": prompt + 3}
            resp_id = "resp_" + _rand()
            base = {"id": resp_id, "object": "response", "created_at": int(time.time()), "model": model}
            await ws.send_str(_dumps({"type": "response.created", "sequence_number": 0,
                                      "response": {**base, "status": "in_progress", "output": [], "usage": None}}))
            await ws.send_str(_dumps({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
                                      "output_index": 0, "content_index": 0, "delta": answer}))
            output = [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer, "annotations": []}]}]
            await ws.send_str(_dumps({"type": "response.completed", "sequence_number": 2,
                                      "response": {**base, "status": "completed", "output": output, "usage": usage}}))
        ctx.entry["outcome"] = "ok"
        return ws

    async def _handle_responses(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses (OpenAI Responses API).

        Object: https://platform.openai.com/docs/api-reference/responses/create
        Events: https://platform.openai.com/docs/api-reference/responses-streaming
        """
        dialect = "openrouter" if request.path.startswith("/api/") else "openai"
        ctx, early = await self._prologue(request, dialect, "responses")
        if early is not None:
            return early
        self._select(ctx, self._select_native(ctx), ctx.body.get("stream") is True)
        resp = await self._common_faults(ctx)
        if resp is not None:
            return resp
        resp_id = "resp_" + secrets.token_hex(24)
        item_id = "msg_" + secrets.token_hex(24)
        created = int(time.time())
        tool = self._tool_name(ctx)
        pieces = [] if tool else self._pieces(ctx.fault, ctx.fault_n)
        n_out = 2 if tool else len(pieces)
        u = self._usage_numbers(ctx, n_out)
        usage = {
            "input_tokens": u["prompt"],
            "input_tokens_details": {"cached_tokens": u["cached"]},
            "output_tokens": u["completion"],
            "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["prompt"] + u["completion"],
        }
        text = "".join(pieces)

        def response_obj(status: str, output: list, with_usage: bool) -> dict:
            return {
                "id": resp_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": ctx.body.get("instructions"),
                "max_output_tokens": ctx.body.get("max_output_tokens"),
                "model": ctx.model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": ctx.body.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "store": bool(ctx.body.get("store", True)),
                "temperature": 1.0,
                "text": {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": ctx.body.get("tools") or [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage if with_usage else None,
                "user": None,
                "metadata": ctx.body.get("metadata") or {},
            }

        def text_part(t: str) -> dict:
            return {"type": "output_text", "text": t, "annotations": [], "logprobs": []}

        def message_item(status: str, content: list) -> dict:
            return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}

        def call_item(status: str, arguments: str) -> dict:
            return {"id": "fc_" + item_id[4:], "type": "function_call", "status": status,
                    "arguments": arguments, "call_id": TOOL_CALL_ID, "name": tool}

        if tool:
            final_output = [call_item("completed", ctx.tool_args_json)]
        elif ctx.fault == "empty":
            final_output = []
        else:
            final_output = [message_item("completed", [text_part(text)])]

        if ctx.fault == "error-200" and not ctx.stream:
            return self._json_response(ctx, self._error_body(ctx, 500, "server"))
        if not ctx.stream:
            return self._json_response(ctx, response_obj("completed", final_output, True))
        if BAD_STATUS_TOKEN in ctx.model:
            return self._json_response(ctx, {**response_obj("completed", final_output, True), "status": ["completed"]})

        delay = self._delay(ctx)
        seq = 0

        def ev(etype: str, fields: dict) -> bytes:
            nonlocal seq
            obj = {"type": etype, **fields, "sequence_number": seq}
            seq += 1
            return f"event: {etype}\ndata: ".encode() + _dumps(obj).encode() + b"\n\n"

        async def events():
            if ctx.fault == "error-200":
                yield ev("error", {"code": "server_error", "message": "The server had an error while processing your request.",
                                   "param": None}), 0, True
                return
            yield ev("response.created", {"response": response_obj("in_progress", [], False)}), 0, True
            yield ev("response.in_progress", {"response": response_obj("in_progress", [], False)}), 0, True
            for step in self._first_token_wait(ctx, None):
                yield step
            if tool:
                fc_id = "fc_" + item_id[4:]
                yield ev("response.output_item.added", {"output_index": 0, "item": call_item("in_progress", "")}), 0, True
                for part in _argument_pieces(ctx.tool_args_json):
                    yield ev("response.function_call_arguments.delta",
                             {"item_id": fc_id, "output_index": 0, "delta": part}), delay, True
                yield ev("response.function_call_arguments.done",
                         {"item_id": fc_id, "output_index": 0, "name": tool, "arguments": ctx.tool_args_json}), 0, True
                yield ev("response.output_item.done", {"output_index": 0,
                                                       "item": call_item("completed", ctx.tool_args_json)}), 0, True
            elif pieces:
                yield ev("response.output_item.added", {"output_index": 0, "item": message_item("in_progress", [])}), 0, True
                yield ev("response.content_part.added", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                                         "part": text_part("")}), 0, True
                send = pieces[:2] if ctx.fault in ("midstream-error", "stream-cut") else pieces
                for i, part in enumerate(send):
                    yield ev("response.output_text.delta", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                                            "delta": part, "logprobs": []}), (delay if i else 0), True
                if ctx.fault == "stream-cut":
                    return  # no response.completed: the body just ends
                if ctx.fault == "midstream-error":
                    yield ev("error", {"code": "server_error",
                                       "message": "The server had an error while processing your request. Sorry about that!",
                                       "param": None}), delay, True
                    return
                yield ev("response.output_text.done", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                                       "text": text, "logprobs": []}), delay, True
                yield ev("response.content_part.done", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                                        "part": text_part(text)}), 0, True
                yield ev("response.output_item.done", {"output_index": 0,
                                                       "item": message_item("completed", [text_part(text)])}), 0, True
            yield ev("response.completed", {"response": response_obj("completed", final_output, True)}), 0, True

        return await self._run_stream(ctx, events())

    # ================================================================== Gemini
    async def _handle_gemini(self, request: web.Request) -> web.StreamResponse:
        """POST /v1beta/models/{model}:generateContent and :streamGenerateContent[?alt=sse].

        https://ai.google.dev/api/generate-content  (GenerateContentResponse, usageMetadata)
        With ``alt=sse`` events are ``data: {json}\\r\\n\\r\\n``; without it the
        stream is a JSON array of GenerateContentResponse objects.
        """
        model_action = request.match_info.get("model_action", "")
        model, _, action = model_action.rpartition(":")
        if request.path.startswith("/v1/models/") and not action:
            ctx = self._ctx(request, "openai", "other")
            return self._error_response(ctx, 404, "not_found")
        ctx, early = await self._prologue(request, "gemini", "gemini")
        if early is not None:
            return early
        if action not in ("generateContent", "streamGenerateContent"):
            self._select(ctx, model, False)
            return self._error_response(ctx, 404, "not_found", f"Unknown action: {action or model_action}")
        ctx.gemini_sse = request.query.get("alt") == "sse"
        self._select(ctx, model, action == "streamGenerateContent")
        resp = await self._common_faults(ctx)
        if resp is not None:
            return resp
        tool = self._tool_name(ctx)
        pieces = [] if tool else self._pieces(ctx.fault, ctx.fault_n)
        n_out = 1 if tool else len(pieces)
        u = self._usage_numbers(ctx, n_out)
        usage = {
            "promptTokenCount": u["prompt"],
            "candidatesTokenCount": u["completion"] - u["reasoning"],
            "totalTokenCount": u["prompt"] + u["completion"],
            "cachedContentTokenCount": u["cached"],
            "thoughtsTokenCount": u["reasoning"],
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u["prompt"]}],
        }
        response_id = _rand(22)

        def gcr(parts: list, last: bool) -> dict:
            cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if last:
                cand["finishReason"] = "STOP"
            obj: dict[str, Any] = {"candidates": [cand]}
            if last:
                obj["usageMetadata"] = usage
            obj["modelVersion"] = model
            obj["responseId"] = response_id
            return obj

        if tool:
            seq = [gcr([{"functionCall": {"name": tool, "args": ctx.tool_args}}], True)]
        elif not pieces:
            seq = [gcr([{"text": ""}], True)]
        else:
            seq = [gcr([{"text": p}], i == len(pieces) - 1) for i, p in enumerate(pieces)]

        if ctx.fault == "error-200" and not ctx.stream:
            return self._json_response(ctx, self._error_body(ctx, 500, "server"))
        if not ctx.stream:
            if tool or not pieces:
                return self._json_response(ctx, seq[0])
            return self._json_response(ctx, gcr([{"text": "".join(pieces)}], True))

        delay = self._delay(ctx)
        sse = ctx.gemini_sse

        def frame(obj: dict, idx: int, final: bool) -> bytes:
            if sse:
                return b"data: " + _dumps(obj).encode() + b"\r\n\r\n"
            # JSON-array streaming: "[{...}" ",\r\n{...}" ... "]"
            return (b"[" if idx == 0 else b",\r\n") + _dumps(obj).encode() + (b"]" if final else b"")

        async def events():
            if ctx.fault == "error-200":
                yield frame(self._error_body(ctx, 500, "server"), 0, True), 0, True
                return
            for step in self._first_token_wait(ctx, None):
                yield step
            send = seq[:2] if ctx.fault == "midstream-error" else seq
            for i, obj in enumerate(send):
                final = (i == len(send) - 1) and ctx.fault != "midstream-error"
                yield frame(obj, i, final), (delay if i else 0), True
            if ctx.fault == "midstream-error":
                err = self._error_body(ctx, 500, "server")
                yield frame(err, len(send), True), delay, True

        return await self._run_stream(ctx, events())

    # ================================================================== misc endpoints
    def _family(self, request: web.Request) -> str:
        host = (request.headers.get("Host") or "").lower()
        path = request.path
        if "openrouter" in host or path.startswith("/api/v1/"):
            return "openrouter"
        if "anthropic" in host or path.startswith("/v1/messages") or "anthropic-version" in request.headers:
            return "anthropic"
        if "googleapis" in host or path.startswith("/v1beta"):
            return "gemini"
        return "openai"

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/models (OpenRouter), /v1/models (OpenAI or Anthropic), /v1beta/models (Gemini).

        https://openrouter.ai/docs/api-reference/list-available-models
        https://platform.openai.com/docs/api-reference/models/list
        https://docs.anthropic.com/en/api/models-list
        https://ai.google.dev/api/models#method:-models.list
        """
        family = self._family(request)
        ctx = self._ctx(request, family, "other")
        created = 1735689600
        if family == "openrouter":
            return self._json_response(ctx, {"data": openrouter_catalog()})
        if family == "anthropic":
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODEL_IDS]
            return self._json_response(ctx, {"data": data, "has_more": False,
                                              "first_id": data[0]["id"], "last_id": data[-1]["id"]})
        if family == "gemini":
            models = [{"name": f"models/{m.replace('/', '-')}", "displayName": m, "version": "001",
                       "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
                       "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]} for m in MODEL_IDS]
            return self._json_response(ctx, {"models": models})
        data = [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in MODEL_IDS]
        return self._json_response(ctx, {"object": "list", "data": data})

    async def _handle_policy_limits(self, request: web.Request) -> web.StreamResponse:
        """GET /api/claude_code/policy_limits (called by Claude Code at start-up).

        ``restrictions`` is an object (key -> ``{"allowed": bool}``) in Claude Code 2.1.330's schema;
        an answer it cannot parse (e.g. a list) makes it retry 5 times, about 5 s (a 404 is also fine).
        """
        ctx = self._ctx(request, "anthropic", "other")
        return self._json_response(ctx, {"restrictions": {}})

    async def _handle_hello(self, request: web.Request) -> web.StreamResponse:
        """GET /api/hello (Claude Code connectivity check)."""
        ctx = self._ctx(request, "anthropic", "other")
        return self._json_response(ctx, {"message": "hello"})

    async def _handle_not_found(self, request: web.Request) -> web.StreamResponse:
        """Any other path: 404 with an error body in the API family's shape."""
        ctx = self._ctx(request, self._family(request), "other")
        raw = await request.read()
        ctx.entry["body_bytes"] = len(raw)
        ctx.entry["outcome"] = "ok"
        msg = None
        if ctx.dialect == "anthropic":
            msg = f"Not found: {request.method} {request.path}"
        return self._error_response(ctx, 404, "not_found", msg)


# ---------------------------------------------------------------------- subprocess mode
def _build_server_ssl(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _check_shape(body: dict, api: str) -> None:
    """The validation a provider does before anything else, with its wording: OpenAI answers
    "Invalid type for 'messages': expected an array of objects, but got a string instead." and
    "you must provide a model parameter"; Anthropic "messages: Input should be a valid list" and
    "model: Field required" (both 400 invalid_request_error)."""
    if api not in ("chat", "messages"):
        return
    openai = api == "chat"
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _BadRequest(400, "you must provide a model parameter" if openai else "model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        got = type(messages).__name__ if messages is not None else "nothing"
        raise _BadRequest(400, f"Invalid type for 'messages': expected an array of objects, but got {got} instead."
                          if openai else "messages: Input should be a valid list")


async def _amain(args: argparse.Namespace) -> int:
    ssl_ctx = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            print("--cert and --key must be given together", file=sys.stderr)
            return 2
        ssl_ctx = _build_server_ssl(args.cert, args.key)
    fake = FakeUpstream(answer=args.answer, chunk_delay=args.chunk_delay, n_chunks=args.n_chunks,
                        log_path=args.log_path, prompt_cache=args.prompt_cache == "on", tokens=args.tokens,
                        first_token_delay=args.first_token_delay)
    await fake.start(host=args.host, port=args.port, ssl_context=ssl_ctx)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    if args.port_file:
        pf = pathlib.Path(args.port_file)
        tmp = pf.with_name(pf.name + f".tmp{os.getpid()}")
        tmp.write_text(str(fake.port))
        os.replace(tmp, pf)
    print(f"listening {fake.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await fake.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Clutch fake LLM upstream (OpenRouter/OpenAI/Anthropic/Gemini)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", help="PEM certificate (enables TLS)")
    p.add_argument("--key", help="PEM private key")
    p.add_argument("--log-path", help="append one JSON line per finished request")
    p.add_argument("--port-file", help="write the bound port here (atomically)")
    p.add_argument("--answer", default="pong from the fake upstream")
    p.add_argument("--chunk-delay", type=float, default=0.0)
    p.add_argument("--n-chunks", type=int, default=4)
    p.add_argument("--prompt-cache", choices=["on", "off"], default="off",
                   help="cache prefixes at cache_control breakpoints, as Anthropic does")
    p.add_argument("--tokens", type=int, default=0,
                   help="stream a normal answer as N word-sized tokens, one event each (0: --n-chunks)")
    p.add_argument("--first-token-delay", type=float, default=0.0,
                   help="seconds before the first token, unless the model names first-token-<MS>")
    args = p.parse_args(argv)
    try:
        return asyncio.run(_amain(args))
    except KeyboardInterrupt:  # pragma: no cover
        return 0


if __name__ == "__main__":
    sys.exit(main())
