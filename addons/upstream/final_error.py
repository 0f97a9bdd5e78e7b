"""The error the agent gets when the relay gives up on a request: every candidate failed, or one failed
for good (the request's own fault).

No mitmproxy and no I/O here: the relay (relay.py) sends what this module composes.

* With one failure (or one for good), the agent gets the provider's own error body, as its SDK knows it,
  translated into its dialect when the provider spoke another.
* With more, one error of Clutch's that names each candidate's failure, with the status of the most
  informative one (`policy.most_informative`). The names come first (agents cut long messages), and a
  Responses client gets a 502 for a 500 (Codex hides a 500's body).
* A 404 is a configuration mistake of that target (its model name or URL): the error names the target
  and its URL (masked: never with a ?key=).
* A Retry-After whenever Clutch knows when a candidate frees up; past AGENT_RETRY_MAX_WAIT_S the agent
  is told not to retry on its own.
"""

from __future__ import annotations

import dataclasses
import math

from addons.config.rules import ModelTarget
from addons.fallback.policy import Failure, most_informative
from addons.guard.key_mask import masked_url
from addons.translate import errors as translate_errors
from addons.wire import dialects
from addons.wire.dialects import Dialect

# Past this wait, the agent is told not to retry on its own (`x-should-retry: false`, which the Anthropic
# and OpenAI SDKs honour: Claude Code, Pi, Qwen Code, OpenClaw, Hermes): Clutch knows no candidate frees
# up sooner, and an agent that waits it out silently (Claude Code retries 10 times, up to ~35 s apart)
# leaves its user looking at nothing for minutes; with it the user reads the message at once.
AGENT_RETRY_MAX_WAIT_S = 30.0


@dataclasses.dataclass
class Failed:
    """One candidate that did not serve: where its request went and what came back."""

    target: str
    failure: Failure
    dialect: Dialect  # the dialect of the failure's body (the upstream's)
    url: str = ""
    routed: bool = False  # the rules changed the request (a 404 is then the rules' mistake, not the agent's)

    def __post_init__(self) -> None:
        self.url = masked_url(self.url)  # named in the agent's error and the log: never with its ?key=

    def describe(self) -> str:
        message = self.failure.message
        if self.failure.misconfigured:
            message = (f"answered 404 at {self.url} ({message}): a configuration error, check the model name "
                       f"and the provider's base_url in the rules")
        wait = self.failure.retry_after_s
        if wait is not None and self.failure.status == 429:
            message += f" (free again in {max(1, math.ceil(wait))} s)"
        return f"{self.target}: {message}"


def final_error(client: Dialect, failed: list[Failed], skipped: list[tuple[ModelTarget, str]],
                alone: bool = False) -> tuple[int, Failure, bytes]:
    """The status, the failure it stands for (`x-clutch-error` names its kind) and the body in the
    `client` dialect: the provider's own error with one failure (or `alone`), Clutch's naming each with
    more (`skipped`: the candidates left out, and why)."""
    worst = most_informative([f.failure for f in failed])
    chosen = next(f for f in failed if f.failure is worst)
    status = worst.status or (504 if worst.kind.startswith("timeout") else 502)
    if not 400 <= status < 600:  # an error event, an empty or stalled answer inside a 200
        status = 502
    targets = {f.target for f in failed}  # a retried target is one candidate
    named = not alone and (len(targets) + len(skipped) > 1 or (worst.misconfigured and chosen.routed))
    if not named and worst.body and worst.status:  # the provider's own error, as its SDK knows it
        body = worst.body if chosen.dialect is client else \
            translate_errors.translate_error(worst.body, status, client)
        return status, worst, body
    if status == 500 and client is Dialect.OPENAI_RESPONSES:
        # Clutch's own message must reach the user: Codex prints an error's body for every status
        # but 429 and 500; a 500's it replaces with "We're currently experiencing high demand"
        # (codex-rs core/src/api_bridge.rs, map_api_error). Codex and the openai SDK retry a 502
        # as they retry a 500.
        status = 502
    message = every_failure(failed, skipped) if named else f"Clutch: {chosen.describe()}"
    return status, worst, dialects.error_body(client, status, message)


def every_failure(failed: list[Failed], skipped: list[tuple[ModelTarget, str]]) -> str:
    """Every candidate's name first, then each one's failure: agents that cut a long error message
    (Hermes prints its first 300 characters) still show which models were tried."""
    tried = list(dict.fromkeys(f.target for f in failed))
    parts: list[str] = []
    for index, entry in enumerate(failed):
        if index and entry.target == failed[index - 1].target:  # a retry: its last failure is the one named
            parts[-1] = entry.describe() + " (retried)"
        else:
            parts.append(entry.describe())
    parts += [f"{target}: not tried ({why})" for target, why in skipped]
    names = f"{len(tried)} candidate{'s' if len(tried) != 1 else ''} tried: {', '.join(tried)}"
    if skipped:
        names += "; not tried: " + ", ".join(str(target) for target, _ in skipped)
    return f"Clutch: no model could answer ({names}): " + "; ".join(parts)


def retry_headers(wait: float | None) -> list[tuple[bytes, bytes]]:
    """Retry-After for a known wait (whole seconds, at least 1), and x-should-retry: false past
    AGENT_RETRY_MAX_WAIT_S."""
    if wait is None:
        return []
    headers = [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
    if wait > AGENT_RETRY_MAX_WAIT_S:
        headers.append((b"x-should-retry", b"false"))
    return headers
