"""Which parts of an agent's request are credentials, and how a saved flow shows them.

Pure logic, no mitmproxy. mitmproxy keeps every flow it saves (`mitmdump -w`, mitmweb's save) as it
was, headers included: without this, a flow file holds every API key an agent sent. After Clutch (or
mitmproxy) has sent a request upstream, the flow's own copy of each credential is replaced by its
last 4 characters (`sk-...abcd`), enough to tell two keys apart and not enough to use one.
"""

from __future__ import annotations

from collections.abc import Iterable

# Request headers that carry a credential: the providers' API keys (OpenAI and OpenRouter's Bearer,
# Anthropic's x-api-key, Azure OpenAI's api-key, Gemini's x-goog-api-key), a proxy's own credentials,
# and cookies (a session is as good as a key where a provider accepts one).
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization",
                            "cookie"})
# Query parameters that carry one: Gemini's `?key=AIza...`.
SECRET_PARAMS = frozenset({"key"})
MARK = "..."
_KEPT = 4  # characters kept at the end
_PREFIX = 3  # and at the start of a long value (`sk-`, `AIz`): which kind of key, nothing of the secret
_SCHEMES = ("bearer ", "basic ")


def masked(value: str) -> str:
    """`value` with all but its last 4 characters hidden (and its first 3 when it is long enough that
    they give nothing away); a short value is hidden whole. A masked value stays as it is."""
    if MARK in value:
        return value
    if len(value) < 12:
        return MARK
    prefix = value[:_PREFIX] if len(value) >= 24 else ""
    return f"{prefix}{MARK}{value[-_KEPT:]}"


def masked_header(name: str, value: str) -> str:
    """A credential header's value as a saved flow may keep it: an auth scheme word stays
    (`Bearer sk-...abcd`), each cookie keeps its name (`session=...abcd`)."""
    if name.lower() == "cookie":
        return "; ".join(_masked_cookie(part.strip()) for part in value.split(";") if part.strip())
    lower = value.lower()
    for scheme in _SCHEMES:
        if lower.startswith(scheme):
            return value[:len(scheme)] + masked(value[len(scheme):].strip())
    return masked(value)


def _masked_cookie(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}={masked(value)}" if sep else masked(name)


def secret_headers(names: Iterable[str]) -> list[str]:
    """The names among `names` that carry a credential (each once, as spelled)."""
    return list(dict.fromkeys(n for n in names if n.lower() in SECRET_HEADERS))


def secret_params(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n.lower() in SECRET_PARAMS))


def masked_url(url: str) -> str:
    """`url` with its key parameters masked, for what Clutch records and logs (attempts, routes,
    errors): always, whatever a saved flow may keep."""
    if "key=" not in url.lower():
        return url
    base, sep, query = url.partition("?")
    if not sep:
        return url
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        parts.append(f"{name}={masked(value)}" if eq and name.lower() in SECRET_PARAMS else part)
    return f"{base}?{'&'.join(parts)}{fragment}"
