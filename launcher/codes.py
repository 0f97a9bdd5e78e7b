"""`xx` launch codes: `xx <agent><mode><route>[<tier>]`, e.g. `xx cip`, `xx xnb`, `xx hcpd`, `xx cip3`.

Pure parsing, nothing is started. The letters are those of addons.wire.identity (AGENT_LETTERS, MODES,
ROUTES, TIERS), which is what the gateway decodes from the proxy user name (`xx-cip`), so the launcher
and Clutch cannot disagree. A wrong code is refused with the letters table and the nearest valid code
(a suggestion only: nothing is started from it); a word that is a typo of an `xx` subcommand is
told so instead (`mistyped_command`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping

from addons.config.rules import LAUNCH_TIER_LETTERS
from addons.wire.identity import AGENT_LETTERS, MODES, ROUTES, TIERS

MODE_NAMES = {
    "i": "init: a new session",
    "c": "continue the last session",
    "n": "non-interactive: run one prompt",
    "s": "session: resume the one given with -s ID",
    "r": "resume: the agent's session picker",
}
ROUTE_NAMES = {
    "p": "proxy: through Clutch, the rules choose the model",
    "b": "bypass: through Clutch, the model is never changed",
    "d": "direct: no Clutch, every proxy/CA variable removed",
}
TIER_NAMES = {
    "d": "DeepSeek V4 Flash",
    "n": "Nemotron 3 Super 120B (free)",
    "k": "Kimi K2.6",
    "q": "Qwen3 Next 80B",
    "m": "the best-ranked model (model scan)",
    "f": "the best working free model (model scan)",
}
# Display order (sets have none); must cover exactly the letters identity.py accepts.
MODE_ORDER = "icnsr"
ROUTE_ORDER = "pbd"
TIER_ORDER = "".join(LAUNCH_TIER_LETTERS) + "0123456789"
assert set(MODE_ORDER) == MODES and set(ROUTE_ORDER) == ROUTES and set(TIER_ORDER) == TIERS
assert set(TIER_NAMES) == set(LAUNCH_TIER_LETTERS)


class CodeError(ValueError):
    """A launch code that does not parse; the message holds the reason, the nearest code and the table."""

    def __init__(self, reason: str, text: str, nearest: str | None) -> None:
        self.reason, self.text, self.nearest = reason, text, nearest
        hint = f"; did you mean `xx {nearest}`?" if nearest else ""
        super().__init__(f"xx {text!r}: {reason}{hint}\n\n{code_table()}")


@dataclasses.dataclass(frozen=True)
class LaunchCode:
    agent: str  # the agent name (claude, codex, ...), not the letter
    mode: str  # one of MODE_ORDER
    route: str  # one of ROUTE_ORDER
    tier: str | None  # one of TIER_ORDER, or None
    text: str  # the code as parsed, e.g. "cip3" (what goes into the proxy user name `xx-cip3`)


def code_table(width: int | None = None, launch_tiers: Mapping[str, str] | None = None,
               source: str | None = None) -> str:
    """The letters of a launch code (for error messages and `xx codes`), within `width` columns (default:
    the terminal's): a label, then its letters and their meaning, the agents packed as many to a line
    as fit. Given the rules in force (`xx codes`), each tier letter shows the model those rules give it."""
    from launcher.terminal import fit_text, label_grid, terminal_width

    width = width or terminal_width()
    pairs: list[tuple[str, str]] = []
    agents = [f"{letter} {name}" for letter, name in AGENT_LETTERS.items()]
    lines = [""]
    for agent in agents:  # a letter never parts from its agent
        if lines[-1] and len(lines[-1]) + 2 + len(agent) > width - 9:
            lines.append("")
        lines[-1] += ("  " if lines[-1] else "") + agent
    pairs += [("agent" if i == 0 else "", line) for i, line in enumerate(lines)]
    for label, names, order in (("mode", MODE_NAMES, MODE_ORDER), ("route", ROUTE_NAMES, ROUTE_ORDER)):
        pairs += [(label if i == 0 else "", f"{letter} {names[letter]}") for i, letter in enumerate(order)]
    if launch_tiers is None:
        pairs.append(("tier", "optional; the models are the rules' launch_tiers (defaults named here):"))
        pairs += [("", f"{letter} {name}") for letter, name in TIER_NAMES.items()]
    else:
        pairs.append(("tier", f"optional; the models of the rules' launch_tiers in force, from {source}:"))
        for letter, name in TIER_NAMES.items():
            model = launch_tiers.get(letter) or (name if letter in "mf" else "none: the gateway routes as usual")
            pairs.append(("", f"{letter} {model}"))
    pairs.append(("", "0-9 a profile: the xx config's profiles and/or the rules' profiles"))
    usage = fit_text("xx <agent><mode><route>[<tier>]    e.g. xx cip, xx xnb, xx hcpd, xx cip3", width)
    return usage + "\n" + label_grid(pairs, width)


def all_codes() -> list[str]:
    """Every valid code, in a stable order (agent letters as in AGENT_LETTERS, then i c n s r, p b d, tiers)."""
    found = []
    for agent, mode, route in itertools.product(AGENT_LETTERS, MODE_ORDER, ROUTE_ORDER):
        found.append(agent + mode + route)
        found.extend(agent + mode + route + tier for tier in TIER_ORDER)
    return found


def parse_code(text: str) -> LaunchCode:
    """`cip` (or `xx cip`) -> LaunchCode; anything else raises CodeError."""
    code = text.strip()
    if code.startswith("xx ") or code.startswith("xx\t"):
        code = code[2:].strip()
    reason = _problem(code)
    if reason:
        raise CodeError(reason, code, nearest(code))
    return LaunchCode(agent=AGENT_LETTERS[code[0]], mode=code[1], route=code[2],
                      tier=code[3] if len(code) == 4 else None, text=code)


def _problem(code: str) -> str | None:
    if not code:
        return "no launch code"
    if code[0] not in AGENT_LETTERS:
        return f"unknown agent {code[0]!r}"
    if len(code) < 2:
        return "missing mode and route"
    if code[1] not in MODES:
        return f"unknown mode {code[1]!r}"
    if len(code) < 3:
        return "missing route"
    if code[2] not in ROUTES:
        return f"unknown route {code[2]!r}"
    if len(code) > 4:
        return f"too long ({len(code)} letters; at most 4)"
    if len(code) == 4 and code[3] not in TIERS:
        return f"unknown tier {code[3]!r}"
    return None


def nearest(code: str) -> str | None:
    """The valid code closest to `code` (edit distance with transpositions), preferring its agent letter."""
    if not code:
        return None
    lowered = code.lower()
    best = min(enumerate(all_codes()),
               key=lambda item: (_distance(lowered, item[1]), item[1][0] != lowered[0], item[0]))
    return best[1]


def mistyped_command(word: str, commands: Iterable[str]) -> str | None:
    """The subcommand `word` is a typo of (`doctr` -> `doctor`), or None: for a subcommand, a valid
    launch code, or a word as close to a launch code as to any subcommand (that one keeps the launch
    code's error, which names the nearest code). One edit is allowed for subcommands of up to four
    letters (`stpo`), two for longer ones (`dcotr`): a valid code is never a typo, whatever the
    threshold, since it is tried first."""
    if word in commands or _problem(word) is None:
        return None
    lowered = word.lower()
    distance, command = min((_distance(lowered, command), command) for command in commands)
    if distance > (1 if len(command) <= 4 else 2):
        return None
    if distance >= min(_distance(lowered, code) for code in all_codes()):
        return None
    return command


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]
