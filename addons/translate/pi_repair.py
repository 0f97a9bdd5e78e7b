"""Pi's requests after a failed or aborted turn, made acceptable to providers that demand alternating
roles: two user turns in a row become one.

Pure logic, no mitmproxy. What Pi 0.73.1 does (run through Clutch against tests/fake_upstream.py; the
investigation and the commands are in tests/translate/test_pi_repair.py):

* A turn that fails (a provider error, after Pi's own retries) or that the user aborts (Escape) stays
  in Pi's session as an assistant message with stopReason "error" / "aborted", and Pi leaves every such
  message out of its requests (pi-ai transformMessages: "errored/aborted assistant messages ... shouldn't
  be replayed"). A turn whose process was killed before its answer has no assistant message at all.
* So Pi's next request carries the unanswered prompt followed by the new one: two user turns in a row,
  in every dialect Pi speaks (OpenRouter chat, Anthropic, OpenAI Responses, Gemini), in the same process
  and after `pi --continue` / `pi --session ID` alike.
* OpenRouter, OpenAI, Anthropic (which combines consecutive turns itself) and Gemini take that; models
  whose chat template demands alternation (Gemma and Mistral templates on vLLM and others: 400
  "Conversation roles must alternate user/assistant/...") and Anthropic-compatible endpoints that do not
  combine turns refuse it, and Pi shows that 400 on every later turn of the session.
* Pi never sends a request that ends with an assistant message: a prompt always ends with the user's
  message, and its only continue-without-a-prompt (auto-retry, overflow recovery) refuses an assistant
  tail itself ("Cannot continue from message role: assistant"). Nothing here is needed for that.

Merging keeps every part of both turns, in order, in one turn (what Anthropic does on its side), so
no content is lost and nothing is invented. The merge is deterministic, so every later request of the
session carries the same merged history and the provider's prompt cache still matches its prefix.
Gemini bodies are left alone: Gemini accepts them, and a Gemini user turn also carries function
responses, which should not be mixed with the next prompt's text.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeGuard

from addons.wire.dialects import Dialect

# Where each dialect keeps its turns, and what a text part looks like there.
_TURNS = {Dialect.OPENAI_CHAT: "messages", Dialect.ANTHROPIC: "messages", Dialect.OPENAI_RESPONSES: "input"}
_TEXT_PART = {Dialect.OPENAI_CHAT: "text", Dialect.ANTHROPIC: "text", Dialect.OPENAI_RESPONSES: "input_text"}


@dataclasses.dataclass(frozen=True)
class Repair:
    body: dict[str, Any]  # a new body; the agent's is never changed
    merged: int  # user turns folded into the user turn before them

    @property
    def note(self) -> str:
        turns = "turn" if self.merged == 1 else "turns"
        return (f"merged {self.merged} user {turns} into the unanswered one before (Pi leaves failed and aborted "
                f"answers out of its requests)")


def repair_pi_request(dialect: Dialect, body: dict[str, Any]) -> Repair | None:
    """The body with each run of consecutive user turns merged into one, or None when it has none
    (or is a dialect left alone). Applying it to its own result gives None."""
    field = _TURNS.get(dialect)
    if field is None:
        return None
    turns = body.get(field)
    if not isinstance(turns, list):
        return None  # Responses `input` may be a plain string: a single turn
    merged_turns: list[Any] = []
    merged = 0
    for turn in turns:
        previous = merged_turns[-1] if merged_turns else None
        if _is_user_turn(turn) and _is_user_turn(previous) and _same_apart_from_content(previous, turn):
            merged_turns[-1] = {**previous, "content": _joined(previous["content"], turn["content"],
                                                               _TEXT_PART[dialect])}
            merged += 1
        else:
            merged_turns.append(turn)
    if not merged:
        return None
    return Repair({**body, field: merged_turns}, merged)


def _is_user_turn(turn: Any) -> TypeGuard[dict[str, Any]]:
    # Responses input items without a role (function_call_output, ...) are not user turns
    return isinstance(turn, dict) and turn.get("role") == "user" and isinstance(turn.get("content"), (str, list))


def _same_apart_from_content(first: dict[str, Any], second: dict[str, Any]) -> bool:
    # a `name` or another field that differs would be lost in the merge: keep such turns apart
    return {k: v for k, v in first.items() if k != "content"} == {k: v for k, v in second.items() if k != "content"}


def _joined(first: str | list, second: str | list, text_type: str) -> str | list:
    """Both contents in order: two strings stay one string (a blank line between, as two typed
    messages read); otherwise a list of parts, a string becoming one text part."""
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}" if first and second else first + second
    return _parts(first, text_type) + _parts(second, text_type)


def _parts(content: str | list, text_type: str) -> list:
    if isinstance(content, list):
        return list(content)
    return [{"type": text_type, "text": content}] if content else []
