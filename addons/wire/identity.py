"""Who sent a request: the agent, its session and its launch options, from the proxy credentials.

Pure logic, no mitmproxy. Every verified agent sends the user:password of its HTTPS_PROXY URL on
every request, WebSocket included (checked with each installed agent: headers cannot tell them
apart, Hermes can even pose as Claude Code), so `xx` encodes the identity in the user name:

    xx-<agent>[.<key>-<value>]...        e.g.  xx-claude.s-4f1c2a.r-p.t-k
    xx-<launch code>[.<key>-<value>]...  e.g.  xx-cip.s-4f1c2a

Only unreserved URL characters are used (letters, digits, '-', '.', '_'), so no client has to
percent-encode anything. Keys: s = session id, r = route (p proxy, b bypass), t = tier letter or
profile digit, m = model override (base64url, because targets contain ':' and '/').
The password is a per-launch token; it is never stored or logged.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from urllib.parse import unquote

from addons.wire.header_values import has_control

# The agent letters of `xx` launch codes (`xx cip` = Claude Code, init, proxy route).
AGENT_LETTERS = {
    "c": "claude", "h": "hermes", "x": "codex", "q": "qwen", "p": "pi",
    "o": "opencode", "a": "ante", "g": "antigravity", "w": "openclaw",
}
MODES = frozenset("icnsr")
ROUTES = frozenset("pbd")
TIERS = frozenset("dnkqmf0123456789")

_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")

AGENT_NAMES = ("claude", "codex", "qwen", "opencode", "openclaw", "pi", "hermes", "ante", "antigravity", "unknown")
"""Every agent Clutch tells apart, by the name used in rules (profiles, budgets), usage rows and metrics."""


@dataclasses.dataclass(frozen=True)
class Identity:
    agent: str = "unknown"
    session: str | None = None
    route: str | None = None
    tier: str | None = None
    model: str | None = None
    launch_code: str | None = None
    from_credentials: bool = False
    user: str | None = None  # a team gateway's user, from the token in the proxy password (credentials.py)

    def describe(self) -> str:
        parts = [self.agent]
        if self.user:
            parts.append(f"user={self.user}")
        if self.launch_code:
            parts.append(f"launch={self.launch_code}")
        if self.session:
            parts.append(f"session={self.session}")
        for name in ("route", "tier", "model"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        return " ".join(parts)


UNKNOWN = Identity()


def basic_auth(header_value: str | None) -> tuple[str, str | None] | None:
    """The user name and password (None without a colon) of a `Basic ...` credentials value; None when
    there is nothing readable."""
    if not header_value:
        return None
    scheme, _, encoded = header_value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return user, (password if colon else None)


def identity_from_basic_auth(header_value: str | None) -> Identity:
    """Identity from a `Proxy-Authorization: Basic ...` value; anything unusable is `unknown`."""
    found = basic_auth(header_value)
    return identity_from_username(found[0]) if found is not None else UNKNOWN


def identity_from_username(username: str) -> Identity:
    username = unquote(username)
    if not username.startswith("xx-"):
        return UNKNOWN
    head, *pairs = username[3:].split(".")
    fields: dict[str, str | None] = {}
    if head in AGENT_NAMES:
        agent = head
    elif _is_launch_code(head):
        agent = AGENT_LETTERS[head[0]]
        fields["launch_code"] = head
        fields["route"] = head[2]
        fields["tier"] = head[3] if len(head) == 4 else None
    else:
        return dataclasses.replace(UNKNOWN, from_credentials=True)
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or not _VALUE.match(value):
            continue
        if key == "s":
            fields["session"] = value
        elif key == "r" and value in ROUTES:
            fields["route"] = value
        elif key == "t" and value in TIERS:
            fields["tier"] = value
        elif key == "m":
            fields["model"] = _decode_model(value)
    return Identity(agent, from_credentials=True, **fields)


# A base-URL (reverse) entry has no proxy credentials: the identity comes in the URL's first path segment
# (`http://127.0.0.1:8790/xx-claude.s-4f1c2a/api/v1/...`, taken out before the request goes on) or in
# this header (`x-clutch-agent: claude` or `xx-cip.s-4f1c2a`, never sent upstream).
AGENT_HEADER = "x-clutch-agent"
_NAMED_MAX = 512  # longer than any identity xx writes: the rest is not read


def identity_in_path(path: str) -> tuple[Identity, str] | None:
    """The identity a base-URL entry's path starts with, and the path without it; None when its first
    segment is not `xx-...`. A segment that names no agent is still taken out (the agent is `unknown`)."""
    if not path.startswith("/xx-"):
        return None
    end = min((i for i in (path.find("/", 1), path.find("?", 1)) if i > 0), default=len(path))
    rest = path[end:]
    return identity_from_username(path[1:end][:_NAMED_MAX]), (rest if rest.startswith("/") else "/" + rest)


def identity_from_agent_header(value: str) -> Identity:
    """The identity an `x-clutch-agent` header names: an agent (`claude`) or a proxy user name (`xx-cip.s-1`)."""
    value = value.strip()[:_NAMED_MAX]
    return identity_from_username(value if value.startswith("xx-") else f"xx-{value}")


def username_for(identity: Identity) -> str:
    """The proxy user name that encodes an identity (what `xx` puts in HTTPS_PROXY)."""
    parts = [f"xx-{identity.launch_code or identity.agent}"]
    if identity.session:
        parts.append(f"s-{identity.session}")
    if identity.route and not identity.launch_code:
        parts.append(f"r-{identity.route}")
    if identity.tier and not identity.launch_code:
        parts.append(f"t-{identity.tier}")
    if identity.model:
        parts.append("m-" + base64.urlsafe_b64encode(identity.model.encode()).decode().rstrip("="))
    return ".".join(parts)


def same_identity_username(identity: Identity) -> str | None:
    """A proxy user name that reads back as exactly `identity`, for requests Clutch sends through its own
    proxy on an agent's behalf; None for an agent that sent no credentials. Unlike `username_for`, it
    names a route and tier even where a launch code implies them (a `.t-` after a code overrides it)."""
    if not identity.from_credentials:
        return None
    parts = [f"xx-{identity.launch_code or identity.agent}"]
    for key, value in (("s", identity.session), ("r", identity.route), ("t", identity.tier)):
        if value:
            parts.append(f"{key}-{value}")
    if identity.model:
        parts.append("m-" + base64.urlsafe_b64encode(identity.model.encode()).decode().rstrip("="))
    return ".".join(parts)


def _is_launch_code(code: str) -> bool:
    return (
        len(code) in (3, 4)
        and code[0] in AGENT_LETTERS
        and code[1] in MODES
        and code[2] in ROUTES
        and (len(code) == 3 or code[3] in TIERS)
    )


def _decode_model(value: str) -> str | None:
    """The model of `.m-<base64url>`; None for one that is no usable model name (a line break in it
    would otherwise reach the response headers that name the model)."""
    try:
        model = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return model if model and not has_control(model) else None


def session_of(identity: Identity, headers) -> str | None:
    """The session a request belongs to: the launch's session, else the agent's own session header."""
    if identity.session:
        return identity.session
    for name in _SESSION_HEADERS:
        if headers.get(name):
            return headers[name]
    return None


def session_key(identity: Identity, headers) -> str | None:
    """One agent session, for what Clutch remembers per session (the sticky model after a fallback,
    compression's rewrites), kept apart per agent, and on a team gateway per user: one user's session
    id cannot reach another's."""
    session = session_of(identity, headers)
    if not session:
        return None
    return f"{identity.user}/{identity.agent}:{session}" if identity.user else f"{identity.agent}:{session}"


_SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "session_id", "x-session-affinity", "x-session-id")
