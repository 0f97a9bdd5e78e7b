"""The documentation against the repository: README.md, CONTRIBUTING.md and docs/ stay true.

Other tests check their own tables: test_agents.py the command lines of docs/xx.md, test_rules.py the
rules example of docs/rules.md, test_e2e_xx.py the README's quick start and docs/xx.md's config
example. Here: docs/options.md against the options a real `mitmdump -s addons/clutch.py` registers,
every repository path and every link the documents name, and the index of docs/.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import yaml
from harness import MITMDUMP, ROOT

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# a path inside the repository as the documents write it in backticks: `addons/upstream/relay.py`
REPO_PATH = re.compile(r"(\.ci|addons|bench|certs|docs|launcher|rules|tests)/[\w.\-/]*"
                       r"|clutch|pyproject\.toml|requirements(-test)?\.lock")
TEST_FILE = re.compile(r"test_\w+\.py")  # a test file named alone: `test_route.py`, wherever it lives in tests/
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def option_table() -> dict[str, object]:
    """docs/options.md's table: option name -> its default, read as YAML (`''`, `1000`, `true`, `[]`)."""
    rows = {}
    for line in (ROOT / "docs" / "options.md").read_text().splitlines():
        match = re.match(r"\| `(clutch_\w+)` \| `([^`]*)` \|", line)
        if match:
            rows[match[1]] = yaml.safe_load(match[2])
    return rows


def test_the_option_table_is_every_option_the_gateway_registers(tmp_path):
    """mitmdump loads Clutch's script and prints every option with its default (`--options`)."""
    result = subprocess.run(
        [MITMDUMP, "-s", str(ROOT / "addons" / "clutch.py"), "--set", f"confdir={tmp_path / 'certs'}", "--options"],
        env={**os.environ, "HOME": str(tmp_path)}, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    registered = {name: default for name, default in yaml.safe_load(result.stdout).items()
                  if name.startswith("clutch_")}
    assert len(registered) > 20, result.stdout[-2000:]
    assert option_table() == registered


def ignored(path: str) -> bool:
    """Whether .gitignore keeps `path` out of the repository: a file Clutch creates (the CA, artifacts)."""
    for pattern in (ROOT / ".gitignore").read_text().splitlines():
        if not pattern or pattern.startswith(("#", "!")):
            continue
        pattern = pattern.lstrip("/").rstrip("/")
        if path == pattern or path.startswith(pattern + "/") or fnmatch.fnmatch(path, pattern):
            return True
    return False


def named_paths(text: str) -> set[str]:
    """The repository paths and test files a document names in backticks."""
    found = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        for word in re.split(r",\s*|\s+", span):
            if REPO_PATH.fullmatch(word) or TEST_FILE.fullmatch(word):
                found.add(word)
    return found


def test_every_path_the_documents_name_exists():
    tests = {path.name for path in (ROOT / "tests").rglob("test_*.py")}
    missing = []
    for doc in DOCS:
        for path in sorted(named_paths(doc.read_text())):
            if TEST_FILE.fullmatch(path):
                exists = path in tests
            else:
                exists = (ROOT / path).exists() or ignored(path.rstrip("/"))
            if not exists:
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert missing == []


def anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_link_between_the_documents_leads_somewhere():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https://..., mailto:
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_docs_index_names_every_document():
    index = (ROOT / "docs" / "README.md").read_text()
    listed = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    assert listed == {path.name for path in (ROOT / "docs").glob("*.md")} - {"README.md"}


def test_the_team_page_haproxy_configuration_is_the_one_the_tests_run():
    from haproxy_server import haproxy_config

    page = (ROOT / "docs" / "team.md").read_text()
    blocks = re.findall(r"```\n(global\n.*?)```", page, flags=re.S)
    assert blocks == [haproxy_config(8780, [8781, 8782])]
