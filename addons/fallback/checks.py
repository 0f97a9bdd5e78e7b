"""Whether a 2xx answer is an answer: an error inside it, an empty answer, a missing forced tool call,
a token limit reached before any content; and, for an SSE stream, where its commit point is.

Pure logic, no mitmproxy. `from_answer` judges a complete non-streamed answer; `StreamWatch`
(stream_watch.py) judges a stream event by event with this module's per-dialect readers of an answer's
parts. The commit point is the first text, tool call or reasoning delta. Before it the cascade may
still move on; after it nothing is restarted (OpenRouter reports an error that comes after
generation began as an SSE error event inside a 200, so only the events tell).

Decisions:

* Soft failures (empty, no_tool_call, length_no_content) are retryable and count half. An answer with
  reasoning (text, blocks, items, or reasoning tokens in its usage) is not empty and not a length failure
  (claude-code-proxy's reasoning exemption), but it still misses a forced tool call. Whitespace is no content:
  a stream that opens with "\\n\\n" is not committed until something visible follows.
* An error inside the answer or stream is judged like an error status (policy.py, `in_band`).

References: https://docs.anthropic.com/en/docs/build-with-claude/streaming,
https://platform.openai.com/docs/api-reference/chat-streaming, https://openrouter.ai/docs/api-reference/streaming,
https://platform.openai.com/docs/api-reference/responses-streaming,
https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent
"""

from __future__ import annotations

import dataclasses
from typing import Any

from addons.fallback.policy import Failure, in_band
from addons.wire.dialects import Dialect
from addons.wire.jsontext import as_object

_LENGTH = {"length", "max_tokens", "max_output_tokens", "model_context_window_exceeded"}
_ANTHROPIC_TOOL_BLOCKS = {"tool_use", "server_tool_use", "mcp_tool_use"}


def visible(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


@dataclasses.dataclass
class Output:
    """What an answer (or the stream so far) holds."""

    text: bool = False
    tool_call: bool = False
    reasoning: bool = False  # reasoning text, blocks or items
    hidden_reasoning: bool = False  # reasoning tokens in the usage without reasoning text (OpenAI o-series)
    stop: str | None = None  # finish_reason / stop_reason / incomplete reason / finishReason as sent
    blocked: str | None = None  # Gemini promptFeedback.blockReason

    @property
    def anything(self) -> bool:
        return self.text or self.tool_call or self.reasoning

    def verdict(self, dialect: Dialect, request: dict | None) -> Failure | None:
        truncated = (self.stop or "").lower() in _LENGTH
        if not (self.anything or self.hidden_reasoning):
            if truncated:
                return soft("length_no_content",
                             f"the answer reached its token limit ({self.stop}) before any content")
            why = f" (blocked: {self.blocked})" if self.blocked else f" (stop: {self.stop})" if self.stop else ""
            return soft("empty", f"empty answer: no text, tool call or reasoning{why}")
        if not self.tool_call and tool_required(dialect, request):
            return soft("no_tool_call", "the request forced a tool call (tool_choice) and the answer has none")
        return None

    def reasoning_tokens(self, usage: Any, *paths: tuple[str, str]) -> None:
        if not isinstance(usage, dict):
            return
        for outer, inner in paths:
            value = usage.get(outer)
            value = value.get(inner) if isinstance(value, dict) and inner else value
            if isinstance(value, (int, float)) and value > 0:
                self.hidden_reasoning = True


def soft(kind: str, message: str) -> Failure:
    return Failure(kind, 200, True, True, message)


def tool_required(dialect: Dialect, request: dict | None) -> bool:
    """Does the request force a tool call? Anthropic tool_choice any/tool, OpenAI "required" or a named
    function (and the legacy function_call), Responses "required" / a named or hosted tool / allowed_tools
    in required mode, Gemini functionCallingConfig.mode ANY."""
    if not isinstance(request, dict):
        return False
    dialect = Dialect(dialect)
    if dialect is Dialect.GEMINI:
        config = request.get("toolConfig") or request.get("tool_config")
        if not isinstance(config, dict):
            return False
        calling = config.get("functionCallingConfig") or config.get("function_calling_config")
        return isinstance(calling, dict) and str(calling.get("mode", "")).upper() == "ANY"
    choice = request.get("tool_choice")
    if dialect is Dialect.ANTHROPIC:
        return isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    if choice == "required":
        return True
    if dialect is Dialect.OPENAI_CHAT:
        legacy = request.get("function_call")
        return (isinstance(choice, dict) and choice.get("type") == "function") or \
            (isinstance(legacy, dict) and bool(legacy.get("name")))
    if isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            return choice.get("mode") == "required"
        return choice.get("type") not in (None, "auto", "none")
    return False


def anthropic_block(block: Any, out: Output) -> None:
    if not isinstance(block, dict):
        return
    kind = block.get("type")
    if kind == "text":
        out.text |= visible(block.get("text"))
    elif kind in _ANTHROPIC_TOOL_BLOCKS:
        out.tool_call = True
    elif kind == "thinking":
        out.reasoning |= visible(block.get("thinking"))
    elif kind == "redacted_thinking":
        out.reasoning = True
    elif kind:  # server tool results, documents, ...: content all the same
        out.text = True


def chat_message(message: Any, out: Output) -> None:
    """A chat completion's message, or one streamed delta: the same fields."""
    if not isinstance(message, dict):
        return
    content = message.get("content")
    if isinstance(content, list):  # content parts
        out.text |= any(isinstance(p, dict) and visible(p.get("text")) for p in content)
    else:
        out.text |= visible(content)
    out.text |= visible(message.get("refusal"))
    out.tool_call |= bool(message.get("tool_calls")) or bool(message.get("function_call"))
    out.reasoning |= visible(message.get("reasoning")) or visible(message.get("reasoning_content")) \
        or bool(message.get("reasoning_details"))


def responses_item(item: Any, out: Output) -> None:
    if not isinstance(item, dict):
        return
    kind = str(item.get("type") or "")
    if kind == "message":
        for part in item.get("content") or []:
            if isinstance(part, dict):
                out.text |= visible(part.get("text")) or visible(part.get("refusal"))
    elif kind.endswith("_call"):  # function_call, custom_tool_call, web_search_call, local_shell_call, ...
        out.tool_call = True
    elif kind == "reasoning":
        parts = [*(item.get("summary") or []), *(item.get("content") or [])]
        out.reasoning |= any(isinstance(p, dict) and visible(p.get("text")) for p in parts) \
            or bool(item.get("encrypted_content"))


def gemini_chunk(answer: dict[str, Any], out: Output) -> bool:
    """A GenerateContentResponse (whole or one streamed piece); True when it carries a finishReason."""
    finished = False
    for candidate in answer.get("candidates") or []:
        if not isinstance(candidate, dict):
            continue
        content = as_object(candidate.get("content"))
        for part in content.get("parts") or []:
            if not isinstance(part, dict):
                continue
            if "functionCall" in part or "function_call" in part:
                out.tool_call = True
            elif "text" in part:
                if part.get("thought"):
                    out.reasoning |= visible(part["text"])
                else:
                    out.text |= visible(part["text"])
            elif any(k in part for k in ("executableCode", "codeExecutionResult", "inlineData", "fileData")):
                out.text = True
        if candidate.get("finishReason"):
            out.stop, finished = candidate["finishReason"], True
    feedback = answer.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        out.blocked, finished = str(feedback["blockReason"]), True
    out.reasoning_tokens(answer.get("usageMetadata"), ("thoughtsTokenCount", ""))
    return finished


def responses_object(response: Any, out: Output) -> None:
    if not isinstance(response, dict):
        return
    for item in response.get("output") or []:
        responses_item(item, out)
    details = response.get("incomplete_details")
    if response.get("status") == "incomplete" and isinstance(details, dict):
        out.stop = details.get("reason") or "incomplete"
    out.reasoning_tokens(response.get("usage"), ("output_tokens_details", "reasoning_tokens"))


def answer_error(dialect: Dialect, answer: dict[str, Any]) -> dict[str, Any] | None:
    """The error a 2xx answer carries instead of an answer, as an error body of its dialect."""
    if answer.get("type") == "error":  # Anthropic
        return answer
    error = answer.get("error")
    if isinstance(error, dict) or visible(error):
        return {"error": error}
    if dialect is Dialect.OPENAI_RESPONSES and answer.get("status") == "failed":
        return {"error": {"message": "the response failed", "code": "server_error"}}
    for choice in answer.get("choices") or []:  # OpenRouter: an error as the choice's finish_reason
        if not isinstance(choice, dict):
            continue
        inner = as_object(choice.get("error"))
        if inner or choice.get("finish_reason") == "error":
            return {"error": {"message": "the provider ended the answer with an error", "code": "server_error",
                              **inner}}
    return None


def from_answer(dialect: Dialect, answer: dict, request: dict | None, *,
                key_from_rules: bool = False) -> Failure | None:
    """A complete non-streamed 2xx JSON answer: an error inside it, an empty answer, a missing forced tool
    call, or a token limit reached before any content; None when it is a usable answer."""
    dialect = Dialect(dialect)
    if (error := answer_error(dialect, answer)) is not None:
        return in_band("error_in_200", error, key_from_rules=key_from_rules)
    out = Output()
    if dialect is Dialect.ANTHROPIC:
        for block in answer.get("content") or []:
            anthropic_block(block, out)
        out.stop = answer.get("stop_reason")
    elif dialect is Dialect.OPENAI_CHAT:
        for choice in answer.get("choices") or []:
            if isinstance(choice, dict):
                chat_message(choice.get("message"), out)
                out.stop = choice.get("finish_reason") or out.stop
        out.reasoning_tokens(answer.get("usage"), ("completion_tokens_details", "reasoning_tokens"))
    elif dialect is Dialect.OPENAI_RESPONSES:
        responses_object(answer, out)
    else:
        gemini_chunk(answer, out)
    return out.verdict(dialect, request)


def answer_model(dialect: Dialect, payload: dict[str, Any]) -> str | None:
    """The model an answer (or one streamed event) says it came from: `model` of a chat completion, its
    chunks and an Anthropic message, Anthropic's `message_start`, a Responses object or its
    `response.*` events, Gemini's `modelVersion`."""
    if dialect is Dialect.GEMINI:
        found = payload.get("modelVersion")
    elif isinstance(payload.get("message"), dict):  # Anthropic message_start
        found = payload["message"].get("model")
    elif isinstance(payload.get("response"), dict):  # Responses response.created / .completed
        found = payload["response"].get("model")
    else:
        found = payload.get("model")
    return found if isinstance(found, str) and found else None
