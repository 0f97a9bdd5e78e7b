"""What a shell command reads and writes: a wrong "read" only keeps an output whole, a wrong "write"
would make a stale-read marker lie, so the cases that must not count are as important as the others."""

from __future__ import annotations

import pytest

from addons.compression.shell import read_path, written_paths


@pytest.mark.parametrize("command, path", [
    ("cat src/app.py", "src/app.py"),
    ("nl -ba lib/matplotlib/offsetbox.py | sed -n '1500,1600p'", "lib/matplotlib/offsetbox.py"),
    ("sed -n '10,80p' pkg/mod.py", "pkg/mod.py"),
    ("head -n 50 README.md", "README.md"),
    ("tail -30 /tmp/task.output", "/tmp/task.output"),
    ("cd /testbed && cat setup.cfg", "/testbed/setup.cfg"),
    ("open src/marshmallow/fields.py 1474", "src/marshmallow/fields.py"),
    ("str_replace_editor view /repo/a.py", "/repo/a.py"),
])
def test_reads(command, path):
    assert read_path(command) == path


@pytest.mark.parametrize("command", [
    "cat a.py b.py",                       # two files: no single read to keep fresh
    "cat <<'EOF' > repro.py\nprint(1)\nEOF",  # a write
    "cat x.py > y.py",
    "grep -n def src/app.py",
    "cat src/app.py | grep def | wc -l",
    "sed -i 's/a/b/' src/app.py",
    "sed 's/a/b/' src/app.py",
    "python -c 'print(1)'",
    "cat 'unbalanced",
    "",
])
def test_not_reads(command):
    assert read_path(command) is None


@pytest.mark.parametrize("command, open_file, paths", [
    ("echo x > out.txt", None, ("out.txt",)),
    ("printf y >> log.txt", None, ("log.txt",)),
    ("sed -i 's/a/b/' src/a.py src/b.py", None, ("src/a.py", "src/b.py")),
    ("sed -i -e 's/a/b/' src/a.py", None, ("src/a.py",)),
    ("echo x | tee a.txt", None, ("a.txt",)),
    ("cp a.py b.py", None, ("b.py",)),
    ("mv a.py b.py", None, ("a.py", "b.py")),
    ("rm -f build/x.o", None, ("build/x.o",)),
    ("cat <<'EOF' > reproduce.py\nimport x > y\nEOF\npython reproduce.py", None, ("reproduce.py",)),
    ("cd pkg && echo 1 > v.txt", None, ("pkg/v.txt",)),
    ("edit 12:14\n    return 1\nend_of_edit", "/repo/f.py", ("/repo/f.py",)),
    ("create new.py", None, ("new.py",)),
    ("str_replace_editor str_replace /repo/a.py --old_str x --new_str y", None, ("/repo/a.py",)),
])
def test_writes(command, open_file, paths):
    assert written_paths(command, open_file) == paths


@pytest.mark.parametrize("command", [
    "pytest -q 2>&1 | tail -20",
    "make > /dev/null 2>&1",
    "git diff src/app.py",
    "python setup.py test",
    "edit 1:2\nx\nend_of_edit",  # SWE-agent's edit with no open file known
    "echo 'unbalanced > x",
])
def test_not_writes(command):
    assert written_paths(command) == ()


def test_a_long_command_is_parsed_every_time_and_not_remembered():
    """Agents write whole files through heredocs; remembering 8192 of those (the parses' LRU size) would
    keep hundreds of MB alive, so only commands up to 1 KB are remembered."""
    from addons.compression import shell
    heredoc = "cat <<'EOF' > big.py\n" + "print('x' * 80)\n" * 6000 + "EOF"
    short = "cat <<'EOF' > small.py\nprint(1)\nEOF"
    caches = [function.cached for function in (shell.read_path, shell.written_paths, shell.is_search)]
    for cache in caches:
        cache.cache_clear()
    assert (read_path(heredoc), written_paths(heredoc), shell.is_search(heredoc)) == (None, ("big.py",), False)
    assert [cache.cache_info().currsize for cache in caches] == [0, 0, 0]
    assert (read_path(short), written_paths(short), shell.is_search(short)) == (None, ("small.py",), False)
    assert [cache.cache_info().currsize for cache in caches] == [1, 1, 1]
