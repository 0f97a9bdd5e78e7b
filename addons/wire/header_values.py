"""Header values Clutch writes: never a line break or another control character.

Pure logic, no mitmproxy. Many of them carry what an agent sent (a model name, a subagent tag, a
model from the proxy user name) or a provider answered; mitmproxy writes header values as they are
(`Response.make` and its HTTP/1 assembly check nothing), and the engine's loopback server hands its
head to mitmproxy's parser, so a CR/LF in a model name would add headers to the agent's response.
Model names with control characters are refused at the boundary (dialects.read_call); `encode`
covers every other value on its way out.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    """Any character below 0x20 (tab, CR and LF included) or DEL."""
    return _CONTROL.search(text) is not None


def encode(value: str | bytes) -> bytes:
    """The value for one header line: control characters percent-encoded (CR -> %0D), the rest kept."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return _CONTROL_BYTES.sub(lambda m: b"%%%02X" % m.group()[0], raw)


def text(value: str) -> str:
    """`encode` for header values given as text (mitmproxy's Headers)."""
    return _CONTROL.sub(lambda m: f"%{ord(m.group()):02X}", value)
