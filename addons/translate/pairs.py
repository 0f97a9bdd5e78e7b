"""Which translation carries a request of one dialect to a provider of another, and its way back: the
request, the streamed answer and the whole answer, for every (client, upstream) pair Clutch translates.

Pure logic, no mitmproxy. The pairs:

* Anthropic Messages <-> OpenAI Chat: anthropic_to_chat.py, chat_to_anthropic.py, stream.py.
* OpenAI Responses <-> OpenAI Chat: responses*.py.
* OpenAI Responses <-> Anthropic Messages: composed through Chat (Responses -> Chat -> Anthropic and
  back), request, stream and whole answer alike. It composes cleanly because both halves exist and
  meet in the same Chat shapes: tools, call ids, reasoning effort, usage and errors survive both hops
  (a custom tool travels as the chat function that stands for it, and comes back as a custom tool
  call); the middle Chat request is the generic flavour, which says reasoning as reasoning_effort.
  What each hop cannot carry is named in the notes of that hop.
* Gemini: no translation; a Gemini request routed to a provider that does not speak Gemini is refused
  (plan.py), as is any other pair not listed here.

A direct pair is preferred to a composed one when a provider speaks several dialects.
"""

from __future__ import annotations

from typing import Any

from addons.translate import stream as translate_stream
from addons.translate.anthropic_to_chat import anthropic_to_chat_request, anthropic_to_chat_response
from addons.translate.chat_to_anthropic import chat_to_anthropic_request, chat_to_anthropic_response
from addons.translate.responses import responses_to_chat_request
from addons.translate.responses_answers import chat_to_responses_response, responses_to_chat_response
from addons.translate.responses_chat import ResponsesToChatStream, chat_to_responses_request
from addons.translate.responses_stream import ChatToResponsesStream
from addons.translate.responses_tools import ResponsesContext
from addons.translate.stream import StreamTranslator
from addons.translate.vocabulary import Flavour
from addons.wire.dialects import Dialect

A, C, R = Dialect.ANTHROPIC, Dialect.OPENAI_CHAT, Dialect.OPENAI_RESPONSES
DIRECT = {(A, C), (C, A), (R, C), (C, R)}
THROUGH_CHAT = {(R, A), (A, R)}
TRANSLATABLE = DIRECT | THROUGH_CHAT


def upstream_for(client: Dialect, dialects: list[Dialect]) -> Dialect | None:
    """The dialect to send a `client` request in, to a provider speaking `dialects`: its own, else one
    it translates to directly, else one it reaches through Chat; None when there is none."""
    if client in dialects:
        return client
    for pairs in (DIRECT, THROUGH_CHAT):
        for upstream in dialects:
            if (client, upstream) in pairs:
                return upstream
    return None


def translate_request(body: dict[str, Any], client: Dialect, upstream: Dialect, model: str, flavour: Flavour,
                      notes: list[str]) -> tuple[dict[str, Any], ResponsesContext | None]:
    """The request in the upstream's dialect, and what its way back needs (Responses clients only).
    Raises translate_responses_tools.Untranslatable for what the upstream cannot express."""
    if (client, upstream) == (A, C):
        return anthropic_to_chat_request(body, model, flavour, notes), None
    if (client, upstream) == (C, A):
        return chat_to_anthropic_request(body, model, notes), None
    if (client, upstream) == (R, C):
        return responses_to_chat_request(body, model, flavour, notes)
    if (client, upstream) == (C, R):
        return chat_to_responses_request(body, model, notes), None
    if (client, upstream) == (R, A):
        chat, context = responses_to_chat_request(body, model, Flavour.GENERIC, notes)
        return chat_to_anthropic_request(chat, model, notes), context
    if (client, upstream) == (A, R):
        chat = anthropic_to_chat_request(body, model, Flavour.GENERIC, notes)
        return chat_to_responses_request(chat, model, notes), None
    raise ValueError(f"no translation from {client} to {upstream}")


class Chained:
    """Two stream translators in a row (upstream -> Chat -> client)."""

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        self._first, self._second = first, second

    @property
    def first_content(self) -> bool:
        return self._second.first_content

    @property
    def error(self) -> dict[str, Any] | None:
        return self._first.error or self._second.error

    def feed(self, chunk: bytes) -> bytes:
        return self._second.feed(self._first.feed(chunk))

    def finish(self) -> bytes:
        return self._second.feed(self._first.finish()) + self._second.finish()


def stream_translator(client: Dialect, upstream: Dialect, model: str, include_usage: bool,
                      context: ResponsesContext | None) -> StreamTranslator:
    """Translates the upstream's SSE stream into the client's dialect, piece by piece."""
    context = context or ResponsesContext({}, {})
    if (client, upstream) == (A, C):
        return translate_stream.chat_stream_to_anthropic(model)
    if (client, upstream) == (C, A):
        return translate_stream.anthropic_stream_to_chat(model, include_usage)
    if (client, upstream) == (R, C):
        return ChatToResponsesStream(model, context)
    if (client, upstream) == (C, R):
        return ResponsesToChatStream(model, include_usage)
    if (client, upstream) == (R, A):
        return Chained(translate_stream.anthropic_stream_to_chat(model, True), ChatToResponsesStream(model, context))
    if (client, upstream) == (A, R):
        return Chained(ResponsesToChatStream(model, True), translate_stream.chat_stream_to_anthropic(model))
    raise ValueError(f"no translation from {upstream} to {client}")


def translate_whole(client: Dialect, upstream: Dialect, answer: dict[str, Any],
                    context: ResponsesContext | None) -> dict[str, Any]:
    """A whole successful answer of the upstream in the client's dialect."""
    context = context or ResponsesContext({}, {})
    if upstream is A and client is not A:
        answer, upstream = anthropic_to_chat_response(answer), C
    elif upstream is R and client is not R:
        answer, upstream = responses_to_chat_response(answer), C
    if (client, upstream) == (A, C):
        return chat_to_anthropic_response(answer)
    if (client, upstream) == (R, C):
        return chat_to_responses_response(answer, context)
    if (client, upstream) == (C, C):
        return answer
    raise ValueError(f"no translation from {upstream} to {client}")
