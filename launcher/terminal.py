"""What fits the terminal: its width, a rich Console of that width, model names that stay readable in a
narrow column, and tables that keep their most useful columns instead of cutting every cell to `ope…`.

Every table `xx` and `./clutch` print goes through here (tables.py, usage_report.py, scan/report.py).

* The width is `COLUMNS` when it is a number, else the terminal's when stdout is one, else 80 (a pipe
  or a file: the width a reader's terminal most likely has); never below 40.
* A table gives its key column (the model, the agent, ...) its full width, up to half the terminal and
  as far as the columns it cannot do without leave room; then adds the other columns in order of
  importance while they fit, names those it left out under the table, and gives what is left to the
  columns it narrowed. A heading wraps at its spaces; a value never does.
* A model id that does not fit is shortened the documented way (docs/xx.md, "Narrow terminals"):
  `provider:vendor/model` loses `provider:`, then `vendor/`, then its middle, which becomes `…`
  (`shorten_model`); in a table, where a row may take two lines, it wraps after the `:` and the `/`
  instead, so nothing of it is lost (`wrap_model`).
* Rich markup is off everywhere: model names and errors come from agents and providers, and a name
  such as `[/bold]` must print as itself, not stop the command with a MarkupError.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod, RenderableType
    from rich.table import Table

DEFAULT_WIDTH = 80  # not a terminal, no COLUMNS
NARROWEST = 40  # below this no table is readable anyway
ELLIPSIS = "…"


def terminal_width(environ: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> int:
    """The width output should fit: COLUMNS, else the terminal's (stdout a terminal), else 80."""
    environ = os.environ if environ is None else environ
    columns = (environ.get("COLUMNS") or "").strip()
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), NARROWEST)
    stream = sys.stdout if stream is None else stream
    try:
        if stream.isatty():
            return max(os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH, NARROWEST)
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (tests' captures)
        pass
    return DEFAULT_WIDTH


def make_console(width: int | None = None, file: IO[str] | None = None) -> Console:
    """A rich Console of `width` columns (default: terminal_width()) with markup, emoji codes and
    highlighting off, so what agents and providers named is printed exactly."""
    from rich.console import Console

    return Console(width=width or terminal_width(), file=file, markup=False, emoji=False,
                   highlight=False, soft_wrap=False)


class _Buffer(io.StringIO):
    """Text for stdout: rich reads `encoding` to draw ASCII rules where stdout cannot take box characters."""

    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower()


def render_text(renderable: RenderableType, width: int) -> str:
    """What `renderable` prints at `width` columns, as plain text (no colours; trailing spaces removed),
    in characters stdout can encode (a `…` becomes `?` on a Latin-1 terminal rather than an error)."""
    buffer = _Buffer()
    make_console(width, file=buffer).print(renderable)
    text = "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())
    return text.encode(_Buffer.encoding, "replace").decode(_Buffer.encoding)


def fit_text(text: str, width: int, indent: int = 4) -> str:
    """A line of prose within `width` columns: wrapped at spaces, the next lines indented by `indent`."""
    if len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width, subsequent_indent=" " * indent, break_long_words=True,
                                   break_on_hyphens=False, replace_whitespace=False, drop_whitespace=True))


def label_grid(pairs: Sequence[tuple[str, str]], width: int) -> str:
    """Lines of a label and its value (`xx status`): the values aligned after the longest label, wrapped
    at their spaces within `width`, a path longer than a line folded."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in pairs:
        grid.add_row(Text(label), Text(value))
    return render_text(grid, width)


# ------------------------------------------------------------------ model names

def shorten_model(name: str, width: int) -> str:
    """`name` in at most `width` characters, on one line: whole; without `provider:`; without `vendor/`;
    then its head and tail around `…` (the tail keeps a `:free`)."""
    if len(name) <= width:
        return name
    shorter = name.split(":", 1)[1] if _has_provider(name) else name
    if len(shorter) <= width:
        return shorter
    shorter = shorter.split("/", 1)[1] if "/" in shorter.rstrip("/") else shorter
    if len(shorter) <= width:
        return shorter
    if width <= 1:
        return ELLIPSIS[:width]
    tail = (width - 1) // 2
    return shorter[:width - 1 - tail] + ELLIPSIS + (shorter[-tail:] if tail else "")


def wrap_model(name: str, width: int) -> str:
    """`name` on as many lines of at most `width` characters as it needs, broken after the provider's `:`
    and the vendor's `/` first, inside a part only when that part alone is too long."""
    if len(name) <= width or width < 1:
        return name
    lines = [""]
    for part in _model_parts(name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
        while len(lines[-1]) > width:
            lines[-1], spill = lines[-1][:width], lines[-1][width:]
            lines.append(spill)
    return "\n".join(lines)


def _model_parts(name: str) -> list[str]:
    """`openrouter:deepseek/deepseek-chat-v3.1:free` -> `openrouter:`, `deepseek/`, `deepseek-chat-v3.1:free`."""
    parts: list[str] = []
    rest = name
    if _has_provider(rest):
        head, rest = rest.split(":", 1)
        parts.append(head + ":")
    if "/" in rest.rstrip("/"):
        head, rest = rest.split("/", 1)
        parts.append(head + "/")
    return [*parts, rest]


def _longest_part(name: str) -> int:
    """The longest piece wrap_model keeps whole: `provider:`, `vendor/` or the model."""
    return max(len(part) for part in _model_parts(name))


def _has_provider(name: str) -> bool:
    """`openrouter:x/y` names a provider; `x/y:free` does not (its colon comes after the slash)."""
    colon, slash = name.find(":"), name.find("/")
    return colon > 0 and (slash < 0 or colon < slash)


# ------------------------------------------------------------------ tables that fit

@dataclasses.dataclass(frozen=True)
class TableColumn:
    """A column of a fitted table. `priority` 0: always shown; otherwise lower numbers are kept first.
    `kind` "key": the column the table is about (model names: wrapped by wrap_model, never cut);
    "text": prose that wraps at its words, at least `min_width` wide, taking what the others leave;
    "value": as wide as its longest value, never wrapped."""

    heading: str
    justify: JustifyMethod = "left"
    priority: int = 0
    kind: Literal["key", "text", "value"] = "value"
    min_width: int = 8


@dataclasses.dataclass
class FittedTable:
    table: Table
    left_out: list[str]  # the headings of the columns that did not fit

    def note(self, width: int) -> str | None:
        """The line under the table naming what it left out, or None."""
        if not self.left_out:
            return None
        return f"(not shown at {width} columns: {', '.join(self.left_out)}; a wider terminal shows them)"


def fit_table(columns: Sequence[TableColumn], rows: Sequence[Sequence[str]], width: int, *,
              sections: Sequence[int] = (), bold_rows: Sequence[int] = ()) -> FittedTable:
    """A borderless rich Table of `rows` (text) within `width` columns (module docstring). `sections`:
    row indexes a rule is drawn above; `bold_rows`: rows printed bold (a total)."""
    from rich.table import Table
    from rich.text import Text

    widths = _fit(columns, rows, width)
    table = Table(box=_box(), show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    kept = [i for i, w in enumerate(widths) if w]
    for i in kept:
        column = columns[i]
        table.add_column(column.heading, justify=column.justify, width=widths[i],
                         overflow="fold")  # a value is never wider than its column; a heading wraps
    for index, row in enumerate(rows):
        if index in sections:
            table.add_section()
        cells = [Text(wrap_model(row[i], widths[i]) if columns[i].kind == "key" else row[i]) for i in kept]
        table.add_row(*cells, style="bold" if index in bold_rows else None)
    return FittedTable(table, [columns[i].heading for i, w in enumerate(widths) if not w])


def _box():
    """No column lines, a rule under the headings: rich's SIMPLE_HEAD, or the same in ASCII where stdout
    cannot take box characters (rich's own ASCII substitute would add column lines)."""
    from rich import box

    if _Buffer.encoding.replace("-", "").startswith("utf"):
        return box.SIMPLE_HEAD
    return box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


GAP = 2  # spaces between two columns of fit_table's tables (a right padding and the box's blank separator)


def _natural(column: TableColumn, cells: list[str]) -> int:
    """The width a column needs: its longest value line, and its heading's longest word."""
    longest = max((len(line) for cell in cells for line in cell.splitlines() or [""]), default=0)
    heading = max((len(word) for word in column.heading.split()), default=0)
    return max(longest, heading, 1)


def _fit(columns: Sequence[TableColumn], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Each column's width (0: left out), by the rules of the module docstring."""
    natural = [_natural(c, [row[i] for row in rows]) for i, c in enumerate(columns)]
    narrow = [n if c.kind == "value" else min(n, c.min_width) for n, c in zip(natural, columns, strict=True)]
    for i, column in enumerate(columns):  # a key narrower than its longest part would break inside a name
        if column.kind == "key":
            narrow[i] = min(natural[i], max(narrow[i], *(_longest_part(row[i]) for row in rows)))
    widths = [narrow[i] if c.priority == 0 else 0 for i, c in enumerate(columns)]
    keys = [i for i, c in enumerate(columns) if c.kind == "key" and widths[i]]
    share = max(width // 2 // max(len(keys), 1), 1)
    for i in keys:  # the key columns first: whole, up to half the width between them
        widths[i] += _room(widths, width, min(natural[i], max(share, narrow[i])) - widths[i])
    for i in sorted((i for i, c in enumerate(columns) if c.priority), key=lambda i: columns[i].priority):
        if _used(widths) + GAP + narrow[i] <= width:
            widths[i] = narrow[i]
    for i in range(len(columns)):  # what is left goes to the columns that were narrowed, in order
        if widths[i]:
            widths[i] += _room(widths, width, natural[i] - widths[i])
    return widths


def _used(widths: list[int]) -> int:
    shown = [w for w in widths if w]
    return sum(shown) + GAP * max(len(shown) - 1, 0)


def _room(widths: list[int], width: int, wanted: int) -> int:
    """How much of `wanted` more columns the table has room for."""
    return max(min(wanted, width - _used(widths)), 0)
