"""A team gateway's user tokens (`clutch users add`): what one looks like, how it is kept, and where an
agent's request carries it. Pure logic.

A token is `clutch_` and 43 characters of `secrets.token_urlsafe(32)`: 256 random bits, so it cannot be
guessed and a fast hash is the right one to keep: the database holds its SHA-256 only, as GitHub and
LiteLLM keep API keys. It travels as the proxy password of the agent's proxy URL
(`http://xx-claude.s-1:TOKEN@gateway:8780`), so HTTPS_PROXY is all an agent needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets

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
    if not header_value:
        return None
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 1024:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return password if colon else None
