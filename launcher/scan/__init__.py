"""`xx scan`: read OpenRouter's model catalog, keep the models a coding agent can use, rank them, and
(only with `--probe`) measure the best of them with a tiny streamed request.

    xx scan [--probe [N]] [--refresh] [--free | --paid] [--json] [--limit 15] [--rules FILE] [--db FILE]

* The catalog comes from `<base_url>/models` of the rules' `openrouter` provider (`--provider` names
  another), the rules being the running gateway's, else the xx config's, else the embedded default.
  It needs no key. It is cached in `<state_dir>/catalog.json` for 6 hours (`--ttl`); `--refresh`
  fetches it anyway, and a failed fetch falls back to the cache, however old, saying so (fetch.py).
* Fit for coding (addons/models/catalog.py): tool calling and at least 32k tokens of context
  (`--min-context`); the rest is counted by reason.
* Ranked (addons/models/ranking.py) with the usage store's probes and real use of the last 7 days, and
  stored there: the gateway's `m` and `f` tiers read it within 30 s (addons/models/rankings_book.py;
  here: rankings.py).
* `--probe [N]` (default 5) sends each of the N best candidates shown one streamed chat request
  (64 output tokens at most) with the provider's key ($OPENROUTER_API_KEY): whether it answers, the
  time to its first token and its tokens per second, stored as probes and ranked again (probing.py).
  Probing is never done otherwise: it spends the key's quota (OpenRouter's free variants share 50 or
  1000 requests a day per account). `--free` probes free models only.
* The scan talks to the provider directly, never through a proxy from the environment: through
  Clutch it would be routed, and measure whatever model the rules chose. `SSL_CERT_FILE` is honoured
  (`client`, below).

The usage store is the running gateway's (its /health `usage_db`, else `clutch_usage_db` or
`clutch_state_dir` in the xx config's gateway_args, else `~/.local/state/clutch/usage.db`); `--db`
names another (places.py). The command itself is command.py, its table report.py.

This package imports little at load time: `xx` imports it on every launch. Here is what its modules
share: the error that stops a scan, the HTTP client, and how an age is said.
"""

from __future__ import annotations

import os
import ssl

PROBE_TITLE = "Clutch model scan"


class ScanError(RuntimeError):
    """The scan cannot go on; the message says why and what to do."""


def _verify() -> ssl.SSLContext:
    """certifi's roots, or the bundle SSL_CERT_FILE names (httpx only reads it with trust_env, which
    would also send the scan through a proxy from the environment)."""
    import certifi

    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def client(timeout: float):
    """The HTTP client of the catalog fetch and the probes: straight to the provider (module docstring)."""
    import httpx

    return httpx.Client(verify=_verify(), trust_env=False, follow_redirects=True,
                        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                        headers={"user-agent": "clutch-scan", "x-title": PROBE_TITLE})


def ago(seconds: float) -> str:
    """An age as the model ranking says it ("3 days")."""
    from addons.models.ranking import _age

    return _age(seconds)
