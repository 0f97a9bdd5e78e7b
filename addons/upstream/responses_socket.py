"""Codex's Responses API over a WebSocket, answered by Clutch: what a client message asks for, the full
request body of each turn, and the events Clutch itself sends on the socket.

Pure logic, no mitmproxy, no I/O (socket_session.py runs the socket). The protocol, from OpenAI's
WebSocket mode guide (https://platform.openai.com/docs/guides/websocket-mode) and Codex's client
(openai/codex, codex-rs/codex-api/src/endpoint/responses_websocket.rs), checked against the frames a
real Codex 0.169.0 sends:

* the client sends text messages `{"type": "response.create", ...the POST /v1/responses body...}`;
  with `generate: false` it only warms the socket up (Codex's first message on every socket, whose
  input is its instructions);
* the server answers each with the events of the Responses stream, one JSON text message per event,
  until `response.completed` (or `response.incomplete` / `response.failed`);
* a later turn names `previous_response_id`, a response of the same socket, and sends only the input
  items that came after that response's output (Codex's second message: its pre-warm's id, and the
  turn's three new messages);
* an error is `{"type": "error", "status": <HTTP status>, "error": {"type", "code", "message",
  "param"}, "headers": {...}}`. Codex reads it as an HTTP error of that status with the message as
  its body (`map_wrapped_websocket_error_event`); an error event without a status it does not read as
  an error at all, so every error Clutch sends has one.

Decisions:

* Every turn becomes a whole request (routed providers hold no state of this socket): the previous
  response's input, its output items as the client received them (`response.output_item.done`), then
  the new input. A `previous_response_id` Clutch did not answer on this socket is refused with
  OpenAI's own `previous_response_not_found` (a client then sends the full context again).
* Remembered inputs and outputs are kept as JSON text, not parsed objects, and spliced into the next
  body (a long session's history is megabytes; its objects would be several times that). A socket
  remembers at most `Limits.responses` responses and `Limits.state_bytes` of them, oldest dropped
  first.
* `response.processed`, which newer Codex versions send to acknowledge a response, asks for nothing
  and gets nothing back; any other message type is refused with an error event.
* Codex sends per turn in `client_metadata` what its HTTPS requests carry as headers
  (`x-codex-turn-metadata` with the turn's id, `x-codex-window-id`); such an entry replaces the
  upgrade's header of the same name on that turn's request (`Turn.headers`), never adds another.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import secrets
from typing import Any

from addons.wire.jsontext import as_object, get_typed
from addons.wire.jsontext import dumps as _dumps

# The events that end a turn: what the client waits for.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
_ACKNOWLEDGEMENTS = frozenset({"response.processed"})
_NOT_SENT = ("type", "generate", "previous_response_id", "input")  # rebuilt for the request of a turn
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_exceeded"}
# Headers of an error answer that tell the client something: when to retry, what Clutch saw.
_ERROR_HEADERS = ("retry-after", "x-clutch-error", "x-clutch-attempts", "x-request-id")
MAX_ERROR_MESSAGE = 4000  # characters of a non-JSON error body quoted in an error event
MAX_HEADER = 8192  # a client_metadata value that may stand in for a header of the upgrade
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")  # a header name (RFC 9110 token)


@dataclasses.dataclass(frozen=True)
class Limits:
    message_bytes: int = 32 << 20  # one client message
    responses: int = 4  # responses a socket remembers for previous_response_id
    state_bytes: int = 64 << 20  # their remembered input and output, together


class Refused(Exception):
    """A client message Clutch answers with an error event instead of a turn."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def event(self) -> dict[str, Any]:
        return error_event(self.status, self.message, code=self.code, param=self.param)


def error_event(status: int, message: str, *, code: str | None = None, kind: str | None = None,
                param: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    error_type = kind or _ERROR_TYPES.get(status, "server_error")
    event: dict[str, Any] = {"type": "error", "status": status,
                             "error": {"type": error_type, "code": code or error_type, "message": message,
                                       "param": param}}
    if headers:
        event["headers"] = headers
    return event


@dataclasses.dataclass
class Create:
    """A `response.create` message: the create body without the socket's own fields."""

    body: dict[str, Any]
    generate: bool
    previous: str | None
    input: Any

    def headers(self) -> dict[str, str]:
        """`client_metadata` entries that can be header values, by lower-case name."""
        metadata = self.body.get("client_metadata")
        if not isinstance(metadata, dict):
            return {}
        return {name.lower(): value for name, value in metadata.items()
                if isinstance(value, str) and len(value) <= MAX_HEADER and value.isascii() and value.isprintable()
                and _TOKEN.fullmatch(name)}


def read_message(text: str) -> Create | None:
    """A client's text message; None for an acknowledgement that asks for nothing. Raises Refused."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as e:  # a nesting too deep to parse is no message either
        raise Refused(400, f"Clutch: a Responses WebSocket message must be JSON ({e})", "invalid_json") from None
    if not isinstance(message, dict):
        raise Refused(400, "Clutch: a Responses WebSocket message must be a JSON object", "invalid_json")
    kind = message.get("type")
    if kind in _ACKNOWLEDGEMENTS:
        return None
    if kind != "response.create":
        raise Refused(400, f"Clutch: unsupported Responses WebSocket message type {str(kind)[:100]!r}; "
                           "only response.create is", "unsupported_message_type", "type")
    previous = message.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise Refused(400, "Clutch: previous_response_id must be a string", "invalid_value", "previous_response_id")
    value = message.get("input")
    if value is not None and not isinstance(value, (str, list)):
        raise Refused(400, "Clutch: input must be a string or a list of items", "invalid_value", "input")
    body = {k: v for k, v in message.items() if k not in _NOT_SENT}
    return Create(body, message.get("generate") is not False, previous or None, value)


@dataclasses.dataclass
class Turn:
    """What one create becomes: the request body sent for it and the whole input it carries."""

    body: bytes  # the POST /v1/responses body, streamed, input expanded
    input_json: str  # the turn's whole input as a JSON array
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # Create.headers


@dataclasses.dataclass
class _Remembered:
    input_json: str
    output_json: str

    @property
    def size(self) -> int:
        return len(self.input_json) + len(self.output_json)


def _utf8(text: str) -> bytes:
    """A body as UTF-8; JSON text that holds a lone surrogate (valid JSON, `"\\ud800"`, but no UTF-8)
    is written again with every non-ASCII character escaped."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(json.loads(text), separators=(",", ":")).encode()


def _items_json(value: Any) -> str:
    """The input of a create as a JSON array: a string is one user message (the API's shorthand)."""
    if value is None:
        return "[]"
    if isinstance(value, str):
        return _dumps([{"type": "message", "role": "user", "content": value}])
    return _dumps(value)


def _concat(*arrays: str) -> str:
    """JSON arrays (as this module writes them: `[...]`, `[]` when empty) joined into one."""
    inner = [a[1:-1] for a in arrays if a != "[]"]
    return "[" + ",".join(inner) + "]"


class Memory:
    """The responses a socket answered, for the `previous_response_id` of later turns."""

    def __init__(self, limits: Limits):
        self._limits = limits
        self._kept: collections.OrderedDict[str, _Remembered] = collections.OrderedDict()
        self._size = 0

    def __contains__(self, response_id: str) -> bool:
        return response_id in self._kept

    def turn(self, create: Create) -> Turn:
        """The whole request of a create; Refused when it continues a response Clutch does not know."""
        new = _items_json(create.input)
        if create.previous is None:
            sent = {**create.body, "stream": True}
            if create.input is not None:
                sent["input"] = create.input
            return Turn(_utf8(_dumps(sent)), new, create.headers())
        before = self._kept.get(create.previous)
        if before is None:
            raise Refused(400, f"Previous response with id '{create.previous[:200]}' not found: Clutch answers "
                               "this WebSocket and knows only the responses it gave on it; send the whole input "
                               "without previous_response_id", "previous_response_not_found", "previous_response_id")
        whole = _concat(before.input_json, before.output_json, new)
        head = _dumps({**create.body, "stream": True})  # never empty: it ends with "stream":true}
        text = head[:-1] + ',"input":' + whole + "}"
        return Turn(_utf8(text), whole, create.headers())

    def remember(self, response_id: str, input_json: str, output_json: str) -> None:
        kept = _Remembered(input_json, output_json)
        old = self._kept.pop(response_id, None)
        if old is not None:
            self._size -= old.size
        if kept.size > self._limits.state_bytes:
            return  # too large to keep: a continuation of it is refused, and the client sends it whole
        self._kept[response_id] = kept
        self._size += kept.size
        while len(self._kept) > self._limits.responses or self._size > self._limits.state_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._size -= dropped.size

    @property
    def size(self) -> int:
        return self._size


def local_id() -> str:
    return "resp_clutch_" + secrets.token_hex(12)


def prewarm_events(create: Create, response_id: str, now: float) -> list[dict[str, Any]]:
    """The answer to `generate: false`: a response that generated nothing, asked of no provider."""
    response: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": int(now), "status": "in_progress",
        "model": create.body.get("model"), "output": [], "usage": None, "error": None, "incomplete_details": None}
    return [{"type": "response.created", "sequence_number": 0, "response": response},
            {"type": "response.completed", "sequence_number": 1, "response": {**response, "status": "completed"}}]


def error_from_answer(status: int, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """An HTTP error answer of the gateway (the provider's error, or Clutch's own) as an error event."""
    kept = {name: headers[name] for name in _ERROR_HEADERS if name in headers}
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        event = error_event(status, error["message"], headers=kept or None)
        event["error"].update({k: v for k, v in error.items() if k in ("type", "code", "param") and v is not None})
        return event
    if isinstance(error, str):  # some servers send {"error": "text"}
        return error_event(status, error[:MAX_ERROR_MESSAGE], headers=kept or None)
    text = body.decode("utf-8", "replace").strip()[:MAX_ERROR_MESSAGE] or f"HTTP {status}"
    return error_event(status, text, headers=kept or None)


def with_status(event: dict[str, Any]) -> dict[str, Any]:
    """An error event of the Responses stream (`{"type": "error", "code", "message"}`, which ends an SSE
    stream) in the shape a WebSocket client reads as an error: with a status, the error in `error`."""
    if isinstance(event.get("status"), int) and isinstance(event.get("error"), dict):
        return event
    nested = as_object(event.get("error"))
    message = event.get("message") or nested.get("message") or "the provider's stream failed"
    code = event.get("code") or nested.get("code")
    return error_event(502, str(message)[:MAX_ERROR_MESSAGE], code=str(code) if code else "server_error",
                       kind="server_error")


def events_of_response(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole Response object (an answer that was not streamed) as the events of its stream."""
    output = [item for item in response.get("output") or [] if isinstance(item, dict)]
    status = get_typed(response, "status", str, "")  # a list there made the turn fail
    final = {"completed": "response.completed", "incomplete": "response.incomplete",
             "failed": "response.failed"}.get(status, "response.completed")
    events: list[dict[str, Any]] = [{"type": "response.created",
                                     "response": {**response, "status": "in_progress", "output": []}}]
    for index, item in enumerate(output):
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": final, "response": response})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


class Recorder:
    """Watches a turn's events for what a later turn continues from: the response's id and the output
    items the client received."""

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.items: list[str] = []  # each output item, as JSON text
        self.final: dict[str, Any] | None = None  # the terminal event

    def see(self, event: dict[str, Any]) -> bool:
        """True when `event` ends the turn."""
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            self.items.append(_dumps(event["item"]))
        if kind in TERMINAL:
            self.final = event
            return True
        return False

    def output_json(self) -> str:
        if self.items:
            return "[" + ",".join(self.items) + "]"
        response = (self.final or {}).get("response")
        output = response.get("output") if isinstance(response, dict) else None
        return _dumps(output) if isinstance(output, list) and output else "[]"

    @property
    def continuable(self) -> bool:
        """A later turn may continue this one: it completed (or stopped at its length)."""
        return self.response_id is not None and (self.final or {}).get("type") in (
            "response.completed", "response.incomplete")
