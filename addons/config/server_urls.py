"""The URLs of the servers a team gateway uses (Redis: clutch_state, PostgreSQL: clutch_usage_db) as the
log, errors and /health may show them: without user, password or query, which can carry a password too
(redis-py and libpq both take `?password=`). Pure logic."""

from __future__ import annotations

import re
import urllib.parse

_PLAIN_PATH = re.compile(r"/?[\w.\-/]*")


def without_secrets(url: str) -> str:
    """`url` with its user and password shown as ***, and no query or fragment. Several hosts
    (PostgreSQL's `h1:5432,h2:5432`) stay as written; a URL with no host (a Unix socket named in the
    query) keeps its path only."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return f"unix://{parts.path}"
    if not parts.scheme or not parts.netloc and not (parts.path and _PLAIN_PATH.fullmatch(parts.path)):
        return "(not a URL)"
    hosts = parts.netloc.rpartition("@")[2]
    netloc = ("***@" if "@" in parts.netloc else "") + hosts
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) if netloc else \
        f"{parts.scheme}://{parts.path if parts.path.startswith('/') else '/' + parts.path}"
