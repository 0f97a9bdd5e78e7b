"""The front door: what `GET /` answers on the listen port, and the lines the gateway logs once it listens.

Both say the same things, so whoever sees either knows where the rest is: where the proxy listens (and
its base-URL entries), the CA certificate agents trust and the trust bundle, the dashboard and the other
endpoints, the documentation, and the one line that routes a shell through Clutch. The page comes as
HTML for a browser, JSON for a program and plain text for curl (by `Accept`), every line of the text
and of the banner within 80 columns (a path longer than a line stays whole, on a line of its own).

Pure logic, no mitmproxy: Endpoints (addons/endpoints.py) gathers the facts from the running proxy.
Nothing here is secret (no key, no proxy token, not the CA key); /health shows the same paths. The
documentation is served from a checkout's docs/ folder by name, never by a path the request makes up.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import shlex
from pathlib import Path

from addons.config.paths import ROOT, is_checkout, places

CLI_DEFAULT_PORT = 8780  # `clutch env`'s default --port (DEFAULT_PORT in launcher/gateway.py; a test ties them)
WIDTH = 80
# (path under the origin, what it is), in the order the page lists them
LINKS = (
    ("dashboard", "usage, cost, breakers and the model ranking, in charts and tables"),
    ("rules", "the rules in force, and a form per section that saves your rules file"),
    ("health", "version, rules, uptime, listen addresses and CA path (JSON)"),
    ("usage", "tokens and cost by agent (JSON; ?by=model&since=24h)"),
    ("metrics", "Prometheus metrics"),
    ("requests", "the recent LLM requests, as xx watch shows them (JSON)"),
    ("resilience", "breakers, quotas, sticky sessions and budgets (JSON)"),
    ("ca.pem", "the CA certificate agents trust (download)"),
    ("docs/", "the documentation (markdown)"),
)
DOCS = ROOT / "docs"  # a checkout's; an installed package has none
DOC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,60}\.md")
DOC_LIMIT = 1 << 20  # bytes: the longest document is a tenth of this
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
_MEDIA = {"text/html": HTML, "application/json": JSON, "text/plain": TEXT}
# the page runs no script and loads nothing: a browser may show it, nothing can be done with it
PAGE_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}


@dataclasses.dataclass(frozen=True)
class Doorway:
    """What the running gateway is reachable at, for the banner and the page."""

    version: str
    proxy: list[tuple[str, int]]  # the proxy entries, (host as a URL names it, port)
    reverse: list[tuple[str, str, int]]  # base-URL entries: (provider URL, host, port)
    ca_cert: Path | None
    ca_bundle: Path | None
    confdir: Path | None  # mitmproxy's confdir: `clutch env --confdir` when it is not the default one


def url_host(host: str) -> str:
    """A listen address as a URL names it: a wildcard (every interface) as 127.0.0.1, IPv6 in brackets."""
    host = host.removeprefix("::ffff:")  # an IPv4 client of a dual-stack socket
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def shell_words(doorway: Doorway, checkout: bool | None = None) -> list[str]:
    """`eval "$(./clutch env ...)"` in pieces that stay together on a line: what routes a shell through
    this gateway (its port and CA when they are not `clutch env`'s defaults)."""
    checkout = is_checkout() if checkout is None else checkout
    words = ['eval "$(' + ("./clutch" if checkout else "clutch") + " env"]
    port = doorway.proxy[0][1] if doorway.proxy else CLI_DEFAULT_PORT
    if port != CLI_DEFAULT_PORT:
        words.append(f"--port {port}")
    if doorway.confdir is not None and doorway.confdir.resolve() != places().ca.resolve():
        words.append(f"--confdir {shlex.quote(str(doorway.confdir))}")
    words[-1] += ')"'
    return words


def banner(doorway: Doorway, pid: int) -> str:
    """The lines the gateway logs once it listens (the log's time stamp goes before the first)."""
    rows = _fact_rows(doorway)
    if doorway.proxy:
        origin = _origin(doorway)
        more = "health, usage, docs, ..." if DOCS.is_dir() else "health, usage, metrics, ..."
        rows += [("dashboard", f"{origin}/dashboard"), ("more", f"{origin}/ ({more})")]
    return "\n".join([f"Clutch {doorway.version} is ready (pid {pid})", *_rows(rows), *_shell_lines(doorway)])


def media_for(accept: str | None) -> str:
    """The page's content type for an Accept header: the acceptable one of HTML, JSON and plain text
    with the highest q (the earlier on a tie); plain text for */* (curl, httpx) or none."""
    best, best_q = TEXT, 0.0
    for part in (accept or "").split(",")[:64]:
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        found = _MEDIA.get(media.strip().lower())
        if found is not None and q > best_q:
            best, best_q = found, q
    return best


def front_page(doorway: Doorway, media: str, origin: str, prefix: str) -> bytes:
    """The page at `/` in `media` (media_for). `origin`: the entry the request came in on
    (http://127.0.0.1:8780); `prefix`: "/__clutch" when the request used it, so links stay Clutch's."""
    links = [(path, what) for path, what in LINKS if path != "docs/" or DOCS.is_dir()]
    base = origin + prefix
    if media == JSON:
        return (json.dumps({"clutch": doorway.version, "proxy": [f"http://{h}:{p}" for h, p in doorway.proxy],
                            "reverse": {f"http://{h}:{p}": url for url, h, p in doorway.reverse},
                            "ca_cert": _path(doorway.ca_cert), "ca_bundle": _path(doorway.ca_bundle),
                            "shell": " ".join(shell_words(doorway)) if doorway.proxy else None,
                            "links": {path.rstrip("/"): f"{base}/{path}" for path, _ in links}},
                           indent=2) + "\n").encode()
    if media == HTML:
        return _html(doorway, links, prefix).encode()
    lines = [f"Clutch {doorway.version}: an intercepting gateway for AI coding agents", "",
             *_rows(_fact_rows(doorway)), *_shell_lines(doorway), ""]
    lines += ["Links:"] + _rows([(path.rstrip("/"), f"{base}/{path}") for path, _ in links])
    return ("\n".join(lines) + "\n").encode()


def document(name: str) -> bytes | None:
    """A document of docs/ by its file name (the index for ""), or None: no such name, or no docs/ here."""
    name = name or "README.md"
    if not DOC_NAME.fullmatch(name):
        return None
    path = DOCS / name
    if not path.is_file():
        return None
    with open(path, "rb") as file:
        return file.read(DOC_LIMIT)


def _fact_rows(doorway: Doorway) -> list[tuple[str, str]]:
    rows = [("proxy", f"http://{host}:{port}") for host, port in doorway.proxy]
    rows += [("base URL", f"http://{host}:{port} for {url}") for url, host, port in doorway.reverse]
    return rows + [("CA cert", _path(doorway.ca_cert) or "not prepared (see the log above)"),
                   ("trust bundle", _path(doorway.ca_bundle) or "not prepared")]


def _shell_lines(doorway: Doorway) -> list[str]:
    if not doorway.proxy:  # base-URL entries only: nothing to route a shell through
        return []
    return ["  route a shell through Clutch:", *_wrapped(shell_words(doorway), 4)]


def _rows(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    """`label  value` lines aligned on the longest label; a line past WIDTH puts its value on the next."""
    width = max((len(label) for label, _ in rows), default=0)
    lines = []
    for label, value in rows:
        line = " " * indent + f"{label:<{width}}  {value}"
        lines += [line] if len(line) <= WIDTH else [" " * indent + label, " " * (indent + 2) + value]
    return lines


def _wrapped(words: list[str], indent: int) -> list[str]:
    """A shell command over several lines when it must, each but the last ending in a backslash (the
    shell joins them again, inside "$(...)" too)."""
    lines, line = [], " " * indent + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) + 2 > WIDTH:
            lines.append(line + " \\")
            line = " " * (indent + 2) + word
        else:
            line += " " + word
    return [*lines, line]


def _origin(doorway: Doorway) -> str:
    host, port = doorway.proxy[0]
    return f"http://{host}:{port}"


def _path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _html(doorway: Doorway, links: list[tuple[str, str]], prefix: str) -> str:
    esc = html.escape
    facts = [("proxy", f"http://{h}:{p}") for h, p in doorway.proxy]
    facts += [("base URL", f"http://{h}:{p} for {url}") for url, h, p in doorway.reverse]
    facts += [("CA certificate", _path(doorway.ca_cert) or "not prepared"),
              ("trust bundle", _path(doorway.ca_bundle) or "not prepared")]
    rows = "".join(f'<tr><th>{esc(k)}</th><td><code>{esc(v)}</code></td></tr>' for k, v in facts)
    items = "".join(f'<li><a data-link="{esc(path.rstrip("/"))}" href="{esc(prefix)}/{esc(path)}">'
                    f'{esc(path.rstrip("/"))}</a> <span>{esc(what)}</span></li>' for path, what in links)
    shell = (f'<h2>Route a shell through Clutch</h2><pre id="shell">{esc(" ".join(shell_words(doorway)))}</pre>'
             if doorway.proxy else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Clutch {esc(doorway.version)}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 52em; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; margin-bottom: 0; }} h2 {{ font-size: 1.1em; margin-top: 1.5em; }}
th {{ text-align: left; padding-right: 1.5em; font-weight: 600; }} code, pre {{ font-size: 13px; }}
pre {{ background: #f4f4f4; padding: .6em .8em; overflow-x: auto; }} li span {{ color: #666; }}
</style></head>
<body>
<h1>Clutch <span id="version">{esc(doorway.version)}</span></h1>
<p>An intercepting gateway for AI coding agents.</p>
<table id="facts">{rows}</table>
{shell}
<h2>Links</h2>
<ul id="links">{items}</ul>
</body></html>
"""
