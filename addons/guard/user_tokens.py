"""A team gateway's user tokens (`clutch users add`): what one looks like, how it is kept, and where an
agent's request carries it. Pure logic.

A token is `clutch_` and 43 characters of `secrets.token_urlsafe(32)`: 256 random bits, so it cannot be
guessed and a fast hash is the right one to keep: the database holds its SHA-256 only, as GitHub and
LiteLLM keep API keys. It travels as the proxy password of the agent's proxy URL
(`http://xx-claude.s-1:TOKEN@gateway:8780`), so HTTPS_PROXY is all an agent needs.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from addons.wire.identity import basic_auth

PREFIX = "clutch_"
_TOKEN = re.compile(r"^clutch_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def new_user_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(text: str | None) -> bool:
    return bool(text) and _TOKEN.match(text or "") is not None


def check_name(name: str) -> str:
    """The user's name as usage rows, budgets and metrics show it; ValueError says what is allowed."""
    if not _NAME.match(name):
        raise ValueError(f"{name!r} cannot be a user name: lower-case letters, digits, '.', '_' and '-', "
                         f"at most 63, starting with a letter or digit")
    return name


def proxy_password(header_value: str | None) -> str | None:
    """The password of a `Proxy-Authorization: Basic ...` value, or None when there is none to read."""
    if header_value and len(header_value.strip().partition(" ")[2]) > 1024:  # a token's is under 100
        return None
    found = basic_auth(header_value)
    return found[1] if found is not None else None
