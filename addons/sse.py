"""Incremental Server-Sent Events parsing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Pure logic, no mitmproxy. Fed raw chunks as they arrive, it returns the complete events and keeps
only the unfinished tail, so a stream is never buffered.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" when the stream names no type (OpenAI, OpenRouter, Gemini)
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._tail + chunk
        # CRLF, LF and lone CR all end lines; a trailing CR waits, its LF may open the next chunk
        pending_cr = buffer.endswith(b"\r")
        if pending_cr:
            buffer = buffer[:-1]
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, tail = buffer.split(b"\n\n")
        self._tail = tail + b"\r" if pending_cr else tail
        return [event for block in blocks if (event := _parse_block(block)) is not None]


def _parse_block(block: bytes) -> SSEEvent | None:
    event_type = "message"
    data: list[str] = []
    for raw in block.split(b"\n"):
        if not raw or raw.startswith(b":"):
            continue
        line = raw.decode("utf-8", "replace")
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
    if not data:
        return None
    return SSEEvent(event_type, "\n".join(data))
