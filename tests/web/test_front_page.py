"""The front door's pure parts: the banner's lines (80 columns, the shell line for a checkout and for an
installed Clutch, wrapped so bash still reads it), the page's three forms, Accept, and which documents
it serves. Through a real gateway: tests/gateway/test_endpoints.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from addons.config.paths import places
from addons.web import front_page
from addons.web.front_page import Doorway, banner, document, media_for, shell_words
from launcher import gateway as cli

CERTS = Path("/home/someone/src/clutch/certs")


def doorway(port: int = 8780, confdir: Path | None = None, reverse=(), proxy=True) -> Doorway:
    confdir = places().ca if confdir is None else confdir
    return Doorway("9.9.9", [("127.0.0.1", port)] if proxy else [], list(reverse), confdir / "mitmproxy-ca-cert.pem",
                   confdir / "clutch-ca-bundle.pem", confdir)


def test_the_shell_line_names_only_what_differs_from_clutch_envs_defaults():
    assert front_page.CLI_DEFAULT_PORT == cli.DEFAULT_PORT
    assert " ".join(shell_words(doorway(), checkout=True)) == 'eval "$(./clutch env)"'
    assert " ".join(shell_words(doorway(), checkout=False)) == 'eval "$(clutch env)"'
    assert " ".join(shell_words(doorway(9000, CERTS), checkout=True)) == \
        f'eval "$(./clutch env --port 9000 --confdir {CERTS})"'
    odd = Path("/tmp/it's here")
    assert shell_words(doorway(confdir=odd), checkout=False)[-1] == """--confdir '/tmp/it'"'"'s here')\""""


def test_the_banner_fits_80_columns_and_its_shell_line_still_runs(tmp_path):
    deep = Path("/home/someone/projects/clutch-gateway/certs")
    for door in (doorway(), doorway(41234, deep, [("https://openrouter.ai", "127.0.0.1", 8790)])):
        lines = banner(door, 4242).splitlines()
        assert lines[0] == "Clutch 9.9.9 is ready (pid 4242)"
        assert len(lines[0]) <= 80 - len("[08:14:02.123] ")  # mitmdump's time stamp goes before it
        assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
        assert "  CA cert       " + str(door.ca_cert) in lines or str(door.ca_cert) in lines[lines.index("  CA cert") + 1]
    lines = banner(doorway(41234, deep), 1).splitlines()
    shell = lines[lines.index("  route a shell through Clutch:") + 1:]
    assert len(shell) == 2 and shell[0].endswith(" \\")  # too long for one line: continued
    # bash reads the two lines as the one command (a stand-in `clutch` echoes its arguments)
    (tmp_path / "clutch").write_text('#!/bin/sh\necho "echo $*"\n')
    (tmp_path / "clutch").chmod(0o755)
    ran = subprocess.run(["bash", "-c", "\n".join(shell)], cwd=tmp_path, capture_output=True, text=True, timeout=10)
    assert ran.stdout == f"env --port 41234 --confdir {deep}\n"


def test_a_path_longer_than_a_line_stays_whole_on_its_own_line():
    long = Path("/" + "p" * 90)
    lines = banner(doorway(confdir=long), 1).splitlines()
    assert f"    {long}/mitmproxy-ca-cert.pem" in lines and "  CA cert" in lines


def test_an_installed_clutch_without_docs_links_none(monkeypatch, tmp_path):
    monkeypatch.setattr(front_page, "DOCS", tmp_path / "docs")  # an installed package ships no docs/
    text = front_page.front_page(doorway(), front_page.TEXT, "http://127.0.0.1:8780", "").decode()
    assert "/docs" not in text and "docs" not in banner(doorway(), 1) and document("") is None


def test_base_url_entries_alone_have_no_shell_line():
    text = banner(doorway(proxy=False, reverse=[("https://openrouter.ai", "127.0.0.1", 8790)]), 1)
    assert "base URL      http://127.0.0.1:8790 for https://openrouter.ai" in text
    assert "route a shell" not in text and "dashboard" not in text


@pytest.mark.parametrize("accept, media", [
    (None, front_page.TEXT), ("*/*", front_page.TEXT), ("text/plain", front_page.TEXT),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", front_page.HTML),
    ("application/json", front_page.JSON), ("application/json;q=0.5, text/html;q=0.4", front_page.JSON),
    ("text/html;q=0", front_page.TEXT), ("text/html;q=abc", front_page.TEXT), ("TEXT/HTML", front_page.HTML),
    (",,;;==", front_page.TEXT), ("text/html;q=0.1," * 500, front_page.HTML),
])
def test_accept_picks_the_pages_form(accept, media):
    assert media_for(accept) == media


def test_the_page_in_its_three_forms_links_every_endpoint():
    door = doorway(8780, CERTS)
    text = front_page.front_page(door, front_page.TEXT, "http://127.0.0.1:8780", "").decode()
    page = front_page.front_page(door, front_page.HTML, "http://127.0.0.1:8780", "/__clutch").decode()
    data = json.loads(front_page.front_page(door, front_page.JSON, "http://127.0.0.1:8780", ""))
    for path, _ in front_page.LINKS:
        assert f"  {path.rstrip('/'):<10}  http://127.0.0.1:8780/{path}" in text
        assert f'href="/__clutch/{path}"' in page
        assert data["links"][path.rstrip("/")] == f"http://127.0.0.1:8780/{path}"
    assert all(len(line) <= 80 for line in text.splitlines())
    assert data["shell"] == f'eval "$(./clutch env --confdir {CERTS})"' and data["ca_cert"] == str(door.ca_cert)
    assert "<script" not in page and "&lt;" not in page


def test_the_page_escapes_what_it_shows():
    door = Doorway("<b>", [("127.0.0.1", 8780)], [("https://x.example/<i>", "127.0.0.1", 1)], Path("/a<b>"),
                   Path("/c&d"), Path("/a"))
    page = front_page.front_page(door, front_page.HTML, "http://127.0.0.1:8780", "").decode()
    assert "<b>" not in page and "<i>" not in page and "&lt;b&gt;" in page and "/c&amp;d" in page


def test_only_documents_of_docs_by_plain_name():
    assert document("") == (front_page.DOCS / "README.md").read_bytes()
    assert document("usage.md") == (front_page.DOCS / "usage.md").read_bytes()
    for name in ("../README.md", "/etc/passwd", "usage", ".md", "usage.md/", "a/b.md", "..md", "nope.md",
                 "%2e%2e.md", "usage.md\x00"):
        assert document(name) is None, name


def test_a_url_names_every_listen_address():
    hosts = ("", "0.0.0.0", "::", "::1", "127.0.0.1", "fe80::1", "::ffff:127.0.0.1")
    assert [front_page.url_host(h) for h in hosts] == \
        ["127.0.0.1", "127.0.0.1", "127.0.0.1", "[::1]", "127.0.0.1", "[fe80::1]", "127.0.0.1"]
