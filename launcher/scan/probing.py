"""A probe: one tiny streamed chat request to one model (`xx scan --probe`), and what it showed: whether
the model answers, the time to its first token, its tokens per second. The result has the usage store's
probe shape (addons/accounting/store.py), which the ranking reads (addons/models/ranking.py).

A probe works when the answer is a 200 stream with text, reasoning or a tool call and no error event;
it spends the key's quota, so the scan probes only when asked to.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from addons.config.rules import Provider

DEFAULT_PROBES = 5
PROBE_MAX_TOKENS = 64
PROBE_PROMPT = "Count from 1 to 20, separated by spaces. Reply with the numbers only."
MIN_MEASURED_S = 0.05  # a stream shorter than this gives no meaningful tokens per second


def probe(client, provider: Provider, key: str, provider_name: str, model_id: str, *,
          timeout: float, max_tokens: int = PROBE_MAX_TOKENS, clock=time.perf_counter) -> dict[str, Any]:
    """One tiny streamed chat request: a probe dict of the usage store's shape. Works when the answer
    is a 200 stream with text, reasoning or a tool call and no error event."""
    import httpx

    started_at = time.time()
    result: dict[str, Any] = {"ts": started_at, "model": f"{provider_name}:{model_id}", "ok": False, "status": None,
                              "error": None, "ttft_ms": None, "tokens_per_s": None, "output_tokens": None}
    body = {"model": model_id, "messages": [{"role": "user", "content": PROBE_PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    seen = _Stream(start=clock())
    try:
        with client.stream("POST", provider.base_url + "/chat/completions", json=body,
                           headers={"authorization": f"Bearer {key}"}) as response:
            result["status"] = response.status_code
            if response.status_code != 200:
                response.read()
                result["error"] = f"HTTP {response.status_code}: {_error_text(response)}"
                return result
            for line in response.iter_lines():
                if clock() - seen.start > timeout:
                    seen.error = f"no end of stream within {timeout:.0f} s"
                    break
                if not seen.line(line, clock):
                    break
    except httpx.TimeoutException:
        seen.error = f"timed out after {timeout:.0f} s"
    except httpx.HTTPError as e:
        seen.error = f"{type(e).__name__}: {e}"
    return _measured(result, seen)


@dataclasses.dataclass
class _Stream:
    """What a probe's stream showed so far."""

    start: float  # the clock when the request went out
    first: float | None = None  # the first text, reasoning or tool call delta
    last: float | None = None  # the latest one
    pieces: int = 0  # deltas with content
    usage: dict | None = None  # the stream's usage chunk
    error: str | None = None

    def line(self, line: str, clock: Callable[[], float]) -> bool:
        """One line of the stream; False when reading stops there (its end, or an error)."""
        if not line.startswith("data:"):
            return True  # SSE comments (": OPENROUTER PROCESSING"), event names, blank lines
        data = line[5:].strip()
        if data == "[DONE]":
            return False
        try:
            chunk = json.loads(data)
        except ValueError:
            self.error = "a stream event that is not JSON"
            return False
        if not isinstance(chunk, dict):
            return True
        if chunk.get("error"):
            self.error = f"stream error: {_message(chunk['error'])}"
            return False
        for choice in chunk.get("choices") or []:
            delta = (choice or {}).get("delta") or {}
            if delta.get("content") or delta.get("reasoning") or delta.get("tool_calls"):
                now = clock()
                self.first = now if self.first is None else self.first
                self.last = now
                self.pieces += 1
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        return True


def _measured(result: dict[str, Any], seen: _Stream) -> dict[str, Any]:
    """The probe's verdict and numbers from what its stream showed."""
    error = seen.error
    if error is None and seen.first is None:
        error = "an empty answer (no text, reasoning or tool call)"
    result["error"] = error
    if seen.first is not None:
        result["ttft_ms"] = round((seen.first - seen.start) * 1000, 1)
    tokens = (seen.usage or {}).get("completion_tokens")
    result["output_tokens"] = tokens if isinstance(tokens, int) else (seen.pieces or None)
    if seen.first is not None and seen.last is not None and seen.last - seen.first >= MIN_MEASURED_S \
            and result["output_tokens"]:
        result["tokens_per_s"] = round(result["output_tokens"] / (seen.last - seen.first), 1)
    result["ok"] = error is None
    return result


def _error_text(response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    return _message(payload.get("error") if isinstance(payload, dict) else payload)[:200]


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or error)
    return str(error)
