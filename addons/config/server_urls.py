"""The URLs of the servers a team gateway uses (Redis: clutch_state, PostgreSQL: clutch_usage_db) as the
log, errors and /health may show them: without user, password or query, which can carry a password too
(redis-py and libpq both take `?password=`). Pure logic."""

from __future__ import annotations

import urllib.parse


def without_secrets(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return f"unix://{parts.path}"
    if not parts.scheme or not parts.netloc:
        return "(not a URL)"
    host = parts.hostname or ""
    netloc = ("***@" if "@" in parts.netloc else "") + (f"[{host}]" if ":" in host else host)
    try:
        port = parts.port
    except ValueError:
        port = None
    return urllib.parse.urlunsplit((parts.scheme, netloc + (f":{port}" if port else ""), parts.path, "", ""))
