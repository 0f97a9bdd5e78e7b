"""The layout's rules, checked on the source (CONTRIBUTING.md, "Layout"):

* files directly in `addons/` are mitmproxy addon classes (and `clutch.py`, the entry); every decision
  they delegate lives in a sub-package;
* no module of a sub-package imports mitmproxy or a top-level addon module, anywhere in its text
  (a function-level or `TYPE_CHECKING` import counts too);
* sub-packages import only downward: each has a layer, and may import only packages of a lower layer;
* nothing in `addons/` imports the launcher.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADDONS = ROOT / "addons"

# Lower layers first. A package may import packages of a strictly lower layer only.
LAYERS: dict[str, int] = {
    "wire": 0,         # dialects, SSE, identity, tokens, a provider answer's usage
    "config": 1,       # rules schema, overrides, state files
    "guard": 1,        # body limits, request shapes, browser requests, key masks
    "translate": 1,    # one module per direction
    "team": 1,         # the link to a team gateway's shared Redis
    "models": 2,       # catalog and ranking
    "accounting": 2,   # usage store, rows, budgets, metrics
    "compression": 2,  # policy and transforms
    "web": 2,          # dashboard, breaker reset
    "routing": 3,      # decision, signals, custom router, upstream plan
    "fallback": 3,     # failure classification, cascade, breakers, quotas, sticky
    "upstream": 4,     # relay, attempts, client, loopback server
    "flows": 4,        # facts the addons share about a flow
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every module an import statement of `source` names (line, dotted name), at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(addons: Path) -> list[str]:
    """What breaks the layout's rules under an `addons/` folder, one line each."""
    problems = []
    top_modules = {p.stem for p in addons.glob("*.py")}
    packages = {p.name for p in addons.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    for package in sorted(packages - set(LAYERS)):
        problems.append(f"addons/{package}: a package with no layer in LAYERS")
    for path in sorted(addons.rglob("*.py")):
        rel = path.relative_to(addons.parent)
        inside = path.relative_to(addons).parts
        package = inside[0] if len(inside) > 1 else None
        for line, name in imported_modules(path.read_text(encoding="utf-8")):
            parts = name.split(".")
            if parts[0] == "launcher":
                problems.append(f"{rel}:{line}: imports the launcher")
            if package is None:
                continue
            if parts[0] == "mitmproxy":
                problems.append(f"{rel}:{line}: imports mitmproxy")
            if parts[0] != "addons" or len(parts) < 2:
                continue
            target = parts[1]
            if target in top_modules and target != "__init__":
                problems.append(f"{rel}:{line}: imports the addon module addons.{target}")
            elif target in packages and target != package:
                if LAYERS.get(target, 99) >= LAYERS.get(package, -1):
                    problems.append(f"{rel}:{line}: imports upward or sideways: {package} "
                                    f"(layer {LAYERS.get(package)}) -> {target} (layer {LAYERS.get(target)})")
    return list(dict.fromkeys(problems))  # `from a import b` names a and a.b: one line each


def test_the_layout_keeps_its_rules():
    assert violations(ADDONS) == []


def test_files_directly_in_addons_are_addon_classes():
    """Each module beside clutch.py defines a class clutch.py puts in its addon list."""
    entry = (ADDONS / "clutch.py").read_text(encoding="utf-8")
    for path in sorted(ADDONS.glob("*.py")):
        if path.stem in ("__init__", "clutch"):
            continue
        assert f"from addons.{path.stem} import " in entry, f"{path.name} is not one of clutch.py's addons"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    addons = tmp_path / "addons"
    for name, text in files.items():
        path = addons / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in {Path(n).parts[0] for n in files if "/" in n}:
        (addons / package / "__init__.py").touch()
    return addons


@pytest.mark.parametrize("text, complaint", [
    ("from mitmproxy import http\n", "imports mitmproxy"),
    ("import mitmproxy.http\n", "imports mitmproxy"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mitmproxy import http\n", "imports mitmproxy"),
    ("def f():\n    from mitmproxy import ctx\n", "imports mitmproxy"),
    ("from addons.engine import Engine\n", "imports the addon module addons.engine"),
    ("from addons import engine\n", "imports the addon module addons.engine"),
    ("from addons.upstream import relay\n", "imports upward or sideways: wire"),
    ("from addons.config.rules import Rules\n", "imports upward or sideways: wire"),
    ("import launcher.xx\n", "imports the launcher"),
])
def test_the_checker_finds_each_kind_of_breach(tmp_path, text, complaint):
    addons = _package(tmp_path, {"engine.py": "class Engine: ...\n", "clutch.py": "",
                                 "wire/bad.py": text, "config/rules.py": "", "upstream/relay.py": ""})
    problems = violations(addons)
    assert len(problems) == 1 and complaint in problems[0], problems


def test_the_checker_accepts_downward_imports(tmp_path):
    addons = _package(tmp_path, {"engine.py": "from mitmproxy import http\nfrom addons.upstream import relay\n",
                                 "upstream/relay.py": "from addons.wire import dialects\nimport json\n",
                                 "wire/dialects.py": "from addons.wire.sse import SSEParser\n",
                                 "wire/sse.py": ""})
    assert violations(addons) == []


def test_a_package_without_a_layer_is_named(tmp_path):
    addons = _package(tmp_path, {"newthing/x.py": ""})
    assert violations(addons) == ["addons/newthing: a package with no layer in LAYERS"]
