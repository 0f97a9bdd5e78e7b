"""A fresh start for targets: which circuit breakers and 429 cooldowns a reset covers, which providers a
rules change redefined, and who may ask for a reset over HTTP.

Pure logic, no mitmproxy. Breakers and cooldowns are keyed "provider:model" (a cooldown or a free-model
daily cap may also name a bare provider). A reset names every target (None), a provider (every model
of it, and its own provider-wide entries), or one "provider:model".

Two things reset them: a rules change that redefines or removes a provider (its breakers opened on
the old definition: a wrong base URL or key the user has now fixed), and the user, by hand
(`xx breakers reset`, POST /breakers/reset). The endpoint changes state, so it must be out of reach
of web pages the user visits: a browser always sends `Origin` on a cross-origin POST and
`Sec-Fetch-Site` on every request, and cannot send `application/json` across origins without a CORS
preflight, which Clutch never grants; a page that rebinds its own DNS name to 127.0.0.1 still sends
its own name as Host. `reset_refusal` turns each of those away.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from addons.guard import browser_guard

# What a provider's breakers depend on: where its API is, how Clutch speaks to it, which hosts are
# it, and which key is sent.
DEFINITION = ("base_url", "dialects", "hosts", "key_env", "api_key")
MAX_BODY_BYTES = 4096
_PROVIDER = re.compile(r"[a-z0-9][a-z0-9_-]*")


def selector(target: str | None) -> Callable[[str], bool]:
    """Which keys a reset of `target` covers: all (None), a provider's ("openrouter": its models and
    its own entries), or one "provider:model" exactly."""
    if not target:
        return lambda key: True
    if ":" in target:
        return lambda key: key == target
    return lambda key: key == target or key.startswith(target + ":")


def check_target(target: object) -> str | None:
    """The target a reset request names (None: every target), or ValueError saying what is wrong."""
    if target is None:
        return None
    if not isinstance(target, str):
        raise ValueError("target must be a string: a provider, or provider:model")
    provider, colon, model = target.partition(":")
    if len(target) > 300 or not _PROVIDER.fullmatch(provider) or (colon and not model.strip()) \
            or any(c.isspace() or not c.isprintable() for c in target):
        raise ValueError(f"{target[:80]!r} is not a provider name or provider:model")
    return target


def definitions(providers: Mapping) -> dict[str, dict]:
    """Each provider's DEFINITION fields as plain JSON values (also what the state file keeps)."""
    return {name: provider.model_dump(mode="json", include=set(DEFINITION)) for name, provider in providers.items()}


def changed_providers(before: Mapping[str, dict], after: Mapping[str, dict]) -> dict[str, str]:
    """{provider: what changed} for providers of `before` that `after` removes or defines differently."""
    found = {}
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            found[name] = "removed"
            continue
        fields = [field for field in DEFINITION if old.get(field) != new.get(field)]
        if fields:
            found[name] = ", ".join(fields) + " changed"
    return found


def describe_reset(cleared: dict) -> str:
    """What a reset cleared, in one line for the log."""
    parts = [f"breaker {key} ({entry['state']})" for key, entry in cleared.get("breakers", {}).items()]
    parts += [f"429 cooldown {key}" for key in cleared.get("cooldowns", {})]
    parts += [f"free-model daily cap of {key}" for key in cleared.get("free_daily_cap", {})]
    return ", ".join(parts) or "nothing"


def reset_refusal(method: str, host_header: str | None, headers: Mapping[str, str],
            client_is_loopback: bool) -> tuple[int, str] | None:
    """(status, why) when a reset request must be refused; None when it may go ahead: the checks of
    every write (browser_guard.write_refusal), no page of any origin (no page posts a reset)."""
    return browser_guard.write_refusal(method, host_header, headers, client_is_loopback)


def parse_body(raw: bytes) -> str | None:
    """The target of a reset body `{"target": ...}` (empty body or no target: every target)."""
    if len(raw) > MAX_BODY_BYTES:
        raise ValueError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict) or set(body) - {"target"}:
        raise ValueError('the body must be {"target": "provider" | "provider:model"} or {} for every target')
    return check_target(body.get("target"))
