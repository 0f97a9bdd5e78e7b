"""JSON as Clutch writes and reads it in bodies and SSE events: compact, non-ASCII kept as it is, a
payload that must be an object read without raising, and a member read as the type Clutch needs (a body
from an agent or a provider can hold anything anywhere).

Pure logic, no mitmproxy. (A request body Clutch re-sends upstream is `plan.json_bytes`, which also
copes with a lone surrogate.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII characters as they are."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def as_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: a field of the wrong type reads as absent."""
    return value if isinstance(value, dict) else {}


def loads_object(text: str) -> dict[str, Any] | None:
    """`text` parsed, when it is a JSON object; None for anything else (not JSON, an array, a number)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def get_typed[T, D](obj: Mapping[str, Any], key: str, kind: type[T], default: D) -> T | D:
    """`obj[key]` when it is a `kind`, else `default` (missing, null, or another type)."""
    value = obj.get(key)
    return value if isinstance(value, kind) else default
