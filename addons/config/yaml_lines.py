"""YAML documents read with their line numbers, so that an error in a rules or config file can name
the line the user has to edit. Pure logic, no mitmproxy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml


def read_yaml(text: str, filename: str, error: Callable[[str, int | None, None, str], Exception]) \
        -> tuple[Any, Any]:
    """The document's node tree (for line numbers: line_of) and its data; a syntax error raises
    `error` naming file and line. JSON is YAML, so JSON files get the same errors."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise error(filename, line, None, f"YAML syntax: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise error(filename, None, None, f"YAML: {e}") from e


def line_of(node: Any, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (closest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # an unknown key is reported at the key itself, a bad value at the value
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
