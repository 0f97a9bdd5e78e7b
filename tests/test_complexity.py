"""No function of `addons/` or `launcher/` above radon's grade C: cyclomatic complexity 20
(CONTRIBUTING.md, "Layout").

ruff's C901 (max-complexity 20 in pyproject.toml) counts branches and loops; radon also counts each
boolean operator and each `if` of a comprehension, so a function C901 passes can still be grade D
(`a if x and y or z else b` is one branch to C901 and three to radon). Measured here with radon's
own API on the source: nothing is imported. Methods, nested functions (`outer.inner`) and the
methods of nested classes are measured too.

A function above the limit is split into named steps. Where splitting would make it worse (say, a
flat dispatch table of cases), it goes into ALLOWED with the reason; an entry whose function no
longer exists, or is no longer above the limit, fails too, so the list never goes stale.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("addons", "launcher")
LIMIT = 20  # radon's grade C ends here

# "package.module.Class.function" -> why it stays as it is. Empty: every function is split.
ALLOWED: dict[str, str] = {}


def _named(blocks: Iterable[Function | Class], prefix: str) -> Iterator[tuple[str, int, int]]:
    for block in blocks:
        if isinstance(block, Class):
            yield from _named([*block.methods, *block.inner_classes], f"{prefix}{block.name}.")
        else:
            name = f"{prefix}{block.name}"
            yield name, block.complexity, block.lineno
            yield from _named(block.closures, f"{name}.")


def measured(source: str, module: str) -> Iterator[tuple[str, int, int]]:
    """(qualified name, complexity, line) of every function, method and nested function of a module,
    in the order of their lines."""
    # cc_visit lists each class's methods after the class as well: start from the top level only
    top = [b for b in cc_visit(source) if isinstance(b, Class) or not b.is_method]
    yield from sorted(_named(top, f"{module}."), key=lambda found: found[2])


def problems(root: Path, packages: Iterable[str], allowed: dict[str, str]) -> list[str]:
    """Every function above LIMIT that `allowed` does not name, and every entry of `allowed` that
    names no function above it; one line each."""
    found: list[str] = []
    seen: dict[str, int] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for name, complexity, line in measured(path.read_text(encoding="utf-8"), module):
                seen[name] = max(complexity, seen.get(name, 0))
                if complexity > LIMIT and name not in allowed:
                    found.append(f"{path.relative_to(root)}:{line}: {name} has complexity {complexity} "
                                 f"(radon grade {_grade(complexity)}; the limit is {LIMIT}): split it into named "
                                 f"steps, or name it in ALLOWED with the reason")
    for name in allowed:
        if name not in seen:
            found.append(f"ALLOWED names {name}, which is no function of {', '.join(packages)}")
        elif seen[name] <= LIMIT:
            found.append(f"ALLOWED names {name}, whose complexity is {seen[name]} now: take it out")
    return found


def _grade(complexity: int) -> str:
    return "D" if complexity <= 30 else "E" if complexity <= 40 else "F"


def test_no_function_above_grade_c():
    found = problems(ROOT, PACKAGES, ALLOWED)
    assert not found, "\n".join(found)


def test_every_allowed_function_says_why():
    assert all(reason.strip() for reason in ALLOWED.values())


def _branches(count: int) -> str:
    """A function body with `count` decisions: complexity count + 1."""
    return "".join(f"    if x == {n}:\n        return {n}\n" for n in range(count))


def test_the_checker_finds_functions_above_the_limit(tmp_path):
    """A synthetic package: a function, a method and a nested function above the limit are named, one
    at the limit is not, and boolean operators count (ruff's C901 would pass `chained`)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text(
        "def at_limit(x):\n" + _branches(LIMIT - 1)
        + "def above(x):\n" + _branches(LIMIT)
        + "def chained(a, b):\n    return " + " and ".join(["a", "b"] * 11) + "\n"
        + "class Outer:\n    class Inner:\n        def method(self, x):\n"
        + textwrap.indent(_branches(LIMIT), "        ")
        + "def outer():\n    def inner(x):\n" + textwrap.indent(_branches(LIMIT), "    ") + "    return inner\n")
    found = problems(tmp_path, ["pkg"], {})
    assert [line.split(": ")[1].split()[0] for line in found] == [
        "pkg.sub.mod.above", "pkg.sub.mod.chained", "pkg.sub.mod.Outer.Inner.method", "pkg.sub.mod.outer.inner"]
    assert found[0].startswith("pkg/sub/mod.py:") and "complexity 21 (radon grade D" in found[0]

    allowed = {"pkg.sub.mod.above": "a flat table", "pkg.sub.mod.at_limit": "stale", "pkg.gone": "stale"}
    found = problems(tmp_path, ["pkg"], allowed)
    assert not any("pkg.sub.mod.above has" in line for line in found)
    assert "ALLOWED names pkg.sub.mod.at_limit, whose complexity is 20 now: take it out" in found
    assert "ALLOWED names pkg.gone, which is no function of pkg" in found
