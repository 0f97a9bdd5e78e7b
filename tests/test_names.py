"""One name, one meaning: no public top-level class or function name is defined in two modules of
`addons/` and `launcher/`.

A name that means two things (the Usage addon and a provider answer's token counts; the engine's
transport exception and a provider's error body) makes every import and every grep ambiguous, so
the second meaning gets a name that says what it is. Checked on the source, with `ast`: nothing is
imported.

Not counted: names starting with `_` (private to their module), and typer command functions
(decorated `@app.command(...)`): typer names the command after its function, so such a name is the
command line's word (`clutch start` and `xx start` are two programs' commands); the code calls what
the command does, never the command function.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("addons", "launcher")


def _is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "callback"):
            return True
    return False


def public_names(source: str) -> list[tuple[str, int]]:
    """The public classes and functions a module defines at its top level: (name, line)."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_command(node):
            continue
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and not node.name.startswith("_"):
            found.append((node.name, node.lineno))
    return found


def shared_names(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """Each public name defined in more than one module under `root`'s packages, with where."""
    where: dict[str, list[str]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            for name, line in public_names(path.read_text(encoding="utf-8")):
                where.setdefault(name, []).append(f"{rel}:{line}")
    return [f"{name}: {', '.join(places)}" for name, places in sorted(where.items()) if len(places) > 1]


def test_no_public_name_is_defined_in_two_modules():
    shared = shared_names(ROOT)
    assert not shared, "defined in two modules (rename the one that is not the addon):\n" + "\n".join(shared)


def test_a_shared_name_is_found(tmp_path):
    (tmp_path / "addons" / "wire").mkdir(parents=True)
    (tmp_path / "launcher").mkdir()
    (tmp_path / "addons" / "usage.py").write_text("class Usage:\n    pass\n")
    (tmp_path / "addons" / "wire" / "blocks.py").write_text(
        "import dataclasses\n\n@dataclasses.dataclass\nclass Usage:\n    n: int\n\n\ndef _helper():\n    pass\n")
    (tmp_path / "launcher" / "a.py").write_text("def render():\n    pass\n\n\ndef _helper():\n    pass\n")
    (tmp_path / "launcher" / "b.py").write_text("async def render():\n    pass\n")
    assert shared_names(tmp_path) == ["Usage: addons/usage.py:1, addons/wire/blocks.py:4",
                                      "render: launcher/a.py:1, launcher/b.py:1"]


def test_typer_commands_are_named_by_their_command_line(tmp_path):
    (tmp_path / "addons").mkdir()
    (tmp_path / "launcher").mkdir()
    (tmp_path / "launcher" / "gateway.py").write_text(
        "import typer\napp = typer.Typer()\n\n\n@app.command(context_settings={})\ndef start():\n    pass\n")
    (tmp_path / "launcher" / "xx.py").write_text(
        "import typer\napp = typer.Typer()\n\n\n@app.command()\ndef start():\n    pass\n\n\n"
        "@app.callback\ndef main():\n    pass\n")
    (tmp_path / "launcher" / "lifecycle.py").write_text("def start():\n    pass\n\n\ndef main():\n    pass\n")
    assert shared_names(tmp_path) == []
