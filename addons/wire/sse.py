"""Incremental Server-Sent Events parsing (https://html.spec.whatwg.org/multipage/server-sent-events.html).

Pure logic, no mitmproxy. Fed raw chunks as they arrive, it returns the complete events and keeps
only the unfinished tail, so a stream is never buffered; the tail itself is bounded.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" when the stream names no type (OpenAI, OpenRouter, Gemini)
    data: str


MAX_EVENT_BYTES = 8 << 20  # one event, unfinished: past this much the stream is not SSE Clutch can read


class SSEParser:
    """Each byte is looked at a bounded number of times: the unfinished tail grows in a bytearray and
    only its new end is searched for the blank line, so a long event costs linear time; a tail past
    `max_event` bytes is dropped and `overflowed` set (the caller fails the stream)."""

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._tail = bytearray()
        self._pending_cr = False
        self.max_event = max_event
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return [event for block in self.blocks(chunk) if (event := parse_block(block)) is not None]

    def blocks(self, chunk: bytes) -> list[bytes]:
        """The complete blocks (events and comments, unparsed, line ends as LF) `chunk` finishes: a caller
        that needs only some events can look at their bytes before paying for `parse_block`."""
        if self.overflowed or not chunk:
            return []
        # CRLF, LF and lone CR all end lines; a trailing CR waits, its LF may open the next chunk
        if self._pending_cr:
            chunk = b"\r" + chunk
        self._pending_cr = chunk.endswith(b"\r")
        if self._pending_cr:
            chunk = chunk[:-1]
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = max(0, len(self._tail) - 1)  # a blank line may straddle the old end
        self._tail += chunk
        end = self._tail.rfind(b"\n\n", start)
        if end < 0:
            if len(self._tail) > self.max_event:
                self._tail.clear()
                self.overflowed = True
            return []
        blocks = bytes(self._tail[:end]).split(b"\n\n")
        del self._tail[:end + 2]
        return blocks


def parse_block(block: bytes) -> SSEEvent | None:
    """One block of `SSEParser.blocks` as its event; None for a comment or a block without data."""
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
