"""Whole answers between the Responses API and Chat Completions: a chat provider's answer as the Response
object a Responses agent gets when its request was translated to Chat (responses.py), and a
Response object as the chat.completion a Chat agent gets from a Responses-only provider
(responses_chat.py). The ids, usage and status mappings here are shared with the stream
translators.

Pure logic, no mitmproxy. Shapes: https://platform.openai.com/docs/api-reference/responses/object
(id, created_at, status, incomplete_details, output items, usage with input_tokens_details.cached_tokens
and output_tokens_details.reasoning_tokens), https://platform.openai.com/docs/api-reference/chat/object.

Decisions:

* Ids are derived from the chat completion's id (chatcmpl-abc -> resp_abc, and items msg_abc_0,
  rs_abc_0, fc_abc_1, ...: prefix, stem, output index),
  so logs of both sides can be matched up; a chat tool call's id is the Responses `call_id` unchanged,
  so the agent's `function_call_output` pairs with it when it goes back.
* Chat reasoning (OpenRouter's `reasoning`, DeepSeek's `reasoning_content`) becomes a reasoning item
  whose summary is that text; it has no `encrypted_content` (a chat provider has none), and goes no
  further than the agent (responses.py drops reasoning on the way to a chat provider).
* finish_reason "length" is status "incomplete" with reason max_output_tokens, "content_filter" status
  "incomplete" with reason content_filter, and back; a chat error object inside a 200, or a failed
  Response, is no answer (plan.py).
* Towards a Chat agent, Responses reasoning (summary or reasoning text) becomes OpenRouter's
  `message.reasoning`, and a custom tool call a chat custom tool call ({"type": "custom", "custom":
  {"name", "input"}}).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from addons.translate.responses_tools import ITEM_PREFIX, ResponsesContext, call_item, dicts
from addons.translate.vocabulary import chat_completion_id
from addons.wire.jsontext import as_object, get_typed

_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FINISH = {reason: finish for finish, reason in INCOMPLETE.items()}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def id_stem(chat_id: Any) -> str:
    """chatcmpl-abc -> abc (OpenRouter's gen-... kept whole); a fresh one when the chat answer has none."""
    if not isinstance(chat_id, str) or not chat_id:
        return uuid.uuid4().hex[:24]
    return _UNSAFE_ID.sub("_", chat_id.removeprefix("chatcmpl-"))


def responses_usage(chat_usage: Any) -> dict[str, Any] | None:
    """Chat usage as Responses usage (both count cached tokens inside the input, reasoning inside the
    output); None when the chat provider reported none."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = chat_usage.get("prompt_tokens_details")
    completion = chat_usage.get("completion_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = completion if isinstance(completion, dict) else {}
    cached = _int(prompt.get("cached_tokens")) or _int(chat_usage.get("prompt_cache_hit_tokens"))  # DeepSeek
    # cache writes: OpenRouter reports them when the provider does
    details = {"cached_tokens": cached, "cache_write_tokens": _int(prompt.get("cache_write_tokens"))}
    inputs, outputs = _int(chat_usage.get("prompt_tokens")), _int(chat_usage.get("completion_tokens"))
    return {"input_tokens": inputs, "input_tokens_details": details, "output_tokens": outputs,
            "output_tokens_details": {"reasoning_tokens": _int(completion.get("reasoning_tokens"))},
            "total_tokens": _int(chat_usage.get("total_tokens")) or inputs + outputs}


def response_object(context: ResponsesContext, stem: str, created: int, model: str, status: str,
                    output: list[dict[str, Any]], usage: dict[str, Any] | None, *,
                    incomplete: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response object: the answer's own fields, then the request fields it repeats."""
    return {"id": f"resp_{stem}", "object": "response", "created_at": created, "status": status,
            "background": False, "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": model, "output": output, "previous_response_id": None, "usage": usage, **context.echo}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def item_id(context: ResponsesContext | None, kind: str, stem: str, index: int, chat_name: Any = None) -> str:
    """An output item's id: its kind's prefix (msg, rs, fc, ctc, ...), the answer's stem and its index."""
    prefix = {"message": "msg", "reasoning": "rs"}.get(kind) or \
        ITEM_PREFIX.get(context.ref(chat_name).kind if context else "function", "fc")
    return f"{prefix}_{stem}_{index}"


def message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": ident, "status": status, "role": "assistant",
            "content": [text_part(text)] if status == "completed" else []}


def reasoning_item(ident: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"type": "reasoning", "id": ident, "summary": summary}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text") or "") for part in dicts(content) if part.get("type") == "text")


def chat_to_responses_response(body: dict[str, Any], context: ResponsesContext) -> dict[str, Any]:
    """A chat.completion as a Response object."""
    choice = (dicts(body.get("choices")) or [{}])[0]
    message = as_object(choice.get("message"))
    stem = id_stem(body.get("id"))
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(item_id(context, "reasoning", stem, len(output)), reasoning))
    if text := _text(message.get("content")) or (message.get("refusal") or ""):
        output.append(message_item(item_id(context, "message", stem, len(output)), text))
    calls = dicts(message.get("tool_calls"))
    for n, call in enumerate(calls):
        function = as_object(call.get("function"))
        name = function.get("name")
        arguments = get_typed(function, "arguments", str, "{}")
        call_id = get_typed(call, "id", str, "") or f"call_{stem}_{n}"
        output.append(call_item(context.ref(name), call_id, arguments,
                                item_id(context, "call", stem, len(output), name)))
    finish = choice.get("finish_reason")
    incomplete = INCOMPLETE.get(finish) if isinstance(finish, str) and not calls else None
    created = get_typed(body, "created", int, int(time.time()))
    model = get_typed(body, "model", str, "")
    return response_object(context, stem, created, model, "incomplete" if incomplete else
                           "completed", output, responses_usage(body.get("usage")), incomplete=incomplete)


def _output_parts(output: Any) -> tuple[list[str], list[str], list[str], list[dict[str, Any]]]:
    """A Response's output items as chat's pieces: texts, refusals, thoughts and tool calls."""
    texts: list[str] = []
    refusals: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in dicts(output):
        kind = item.get("type")
        if kind == "message":
            for part in dicts(item.get("content")):
                if part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "refusal":
                    refusals.append(str(part.get("refusal") or ""))
        elif kind == "reasoning":
            thoughts += [str(p.get("text") or "") for p in [*dicts(item.get("summary")), *dicts(item.get("content"))]]
        elif kind == "function_call":
            calls.append({"id": item.get("call_id", ""), "type": "function",
                          "function": {"name": item.get("name", ""), "arguments": item.get("arguments") or "{}"}})
        elif kind == "custom_tool_call":
            calls.append({"id": item.get("call_id", ""), "type": "custom",
                          "custom": {"name": item.get("name", ""), "input": item.get("input") or ""}})
    return texts, refusals, thoughts, calls


def responses_to_chat_response(body: dict[str, Any]) -> dict[str, Any]:
    """A Response object as a chat.completion (reasoning as OpenRouter's message.reasoning)."""
    texts, refusals, thoughts, calls = _output_parts(body.get("output"))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": "".join(refusals) or None}
    if thoughts:
        message["reasoning"] = "\n\n".join(t for t in thoughts if t)
    if calls:
        message["tool_calls"] = calls
    return {"id": chat_completion_id(str(body.get("id") or "").removeprefix("resp_")), "object": "chat.completion",
            "created": get_typed(body, "created_at", int, int(time.time())),
            "model": body.get("model") or "",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason_of(body, bool(calls))}],
            "usage": chat_usage_from_responses(body.get("usage"))}


def finish_reason_of(response: dict[str, Any], called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    details = as_object(response.get("incomplete_details"))
    reason = get_typed(details, "reason", str, "")
    return _FINISH.get(reason, "stop") if response.get("status") == "incomplete" else "stop"


def chat_usage_from_responses(usage: Any) -> dict[str, Any]:
    """Responses usage as chat usage (both count cached tokens in the input, reasoning in the output)."""
    def count(outer: dict[str, Any], key: str) -> int:
        value = outer.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0
    usage = usage if isinstance(usage, dict) else {}
    inputs, outputs = (usage.get(k) if isinstance(usage.get(k), dict) else {}
                       for k in ("input_tokens_details", "output_tokens_details"))
    prompt, completion = count(usage, "input_tokens"), count(usage, "output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": count(inputs, "cached_tokens")},
            "completion_tokens_details": {"reasoning_tokens": count(outputs, "reasoning_tokens")}}
