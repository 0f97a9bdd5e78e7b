"""The tokens of one upstream answer, as the relay books them on its attempt: what the provider reported,
and what it did not report estimated (flagged).

No mitmproxy here. A whole answer's usage block is read once it is parsed; a stream's is read on the way
past by the stream watch (usage_blocks.StreamUsage). Estimates count with tiktoken in a worker thread,
except for a stream the agent left, which is counted without leaving the event loop (the relay is being
cancelled): tiktoken for a short output, four characters a token past ROUGH_COUNT_CHARS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

from addons.wire import usage_blocks
from addons.wire.dialects import Dialect

ROUGH_COUNT_CHARS = 20_000  # an aborted stream's output above this is estimated at 4 characters a token


def as_dict(usage: usage_blocks.TokenUsage | None) -> dict[str, Any] | None:
    return dataclasses.asdict(usage) if usage is not None else None


async def of_whole(dialect: Dialect, answer: Any) -> dict[str, Any] | None:
    """A whole JSON answer's usage block; counted from its text when the provider said nothing."""
    if not isinstance(answer, dict):
        return None
    usage = usage_blocks.usage_of_answer(dialect, answer)
    if usage is None:
        text = usage_blocks.answer_text(dialect, answer)
        usage = await asyncio.to_thread(usage_blocks.estimated_usage, None, text)
    return as_dict(usage)


async def of_stream(usage: usage_blocks.StreamUsage) -> dict[str, Any] | None:
    """A finished stream's reported usage; what it lacks is counted with tiktoken in a thread."""
    reported = usage.result()
    if reported is not None and reported.input_tokens is not None and reported.output_tokens is not None:
        return as_dict(reported)
    return as_dict(await asyncio.to_thread(usage.usage_or_estimate, None))


def reported(usage: usage_blocks.StreamUsage) -> dict[str, Any] | None:
    """A failed stream's usage as the provider reported it (an empty answer can be billed), no estimate."""
    return as_dict(usage.result())


def of_abandoned(usage: usage_blocks.StreamUsage) -> dict[str, Any] | None:
    """The usage of a stream the agent left, counted on the spot (module docstring)."""
    if usage.output_chars <= ROUGH_COUNT_CHARS:
        return as_dict(usage.usage_or_estimate(None))
    found = usage.result()
    if found is not None and found.output_tokens is not None:
        return as_dict(found)
    guess = math.ceil(usage.output_chars / 4)
    if found is None:
        return as_dict(usage_blocks.TokenUsage(None, guess, None, None, None, None, estimated=True))
    return as_dict(dataclasses.replace(found, output_tokens=guess, estimated=True))
