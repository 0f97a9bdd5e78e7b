"""Plan one `xx` launch: the argv and the full environment to run it with, plus a dry-run rendering.

Pure: nothing is started. Routes p and b get the recipe of launcher.recipe.agent_environment (the
shared environment research verified for every agent, agent-clis.md §1 and §3) with the launch's
identity in the proxy user name (`xx-cip.s-<id>`, addons.identity.username_for; agent-clis.md §1.2 and
§8: every agent sends it on every request). Route d removes every proxy and CA variable, so the agent
talks to its provider directly. Everything else in the user's environment is kept as it is.

Decisions: on p and b the proxy/CA variables the user already had are removed before the recipe is
applied (a stale ALL_PROXY or a lower-case variant would otherwise send part of the traffic elsewhere).
A model given with -m goes to the agent's own flag and, on p and b, into the proxy identity (`.m-`).
A session id that cannot travel in the proxy user name (only letters, digits, '-' and '_') is still
passed to the agent, but left out of the identity, with a note.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from urllib.parse import urlsplit

from addons.certs import CAFiles
from addons.identity import Identity
from launcher import agents
from launcher.codes import LaunchCode
from launcher.recipe import agent_environment, proxy_url

# Compared upper-cased, so every case variant (https_proxy, No_Proxy, ...) is caught.
PROXY_AND_CA = frozenset({
    "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "CODEX_CA_CERTIFICATE", "NODE_USE_ENV_PROXY",
})
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MASK = "****"
_IDENTITY_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # what addons.identity accepts in a user name


@dataclasses.dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]  # the full environment to run with
    changes: dict[str, str | None]  # variable -> new value, or None when removed
    notes: list[str]
    token: str | None = None  # the proxy password, for masking only


def is_proxy_or_ca(name: str) -> bool:
    return name.upper() in PROXY_AND_CA


def plan_launch(code: LaunchCode, *, session: str | None = None, model: str | None = None,
                prompt: str | None = None, extra: tuple[str, ...] | list[str] = (),
                environ: dict[str, str], gateway: str, ca: CAFiles, token: str, is_root: bool) -> Launch:
    argv = agents.command_line(code.agent, code.mode, session=session, model=model, prompt=prompt,
                               extra=tuple(extra))
    notes = agents.notes(code.agent, code.mode)
    env = {name: value for name, value in environ.items() if not is_proxy_or_ca(name)}
    if code.route in ("p", "b"):
        host, port = _split_gateway(gateway)
        identity_session = session
        if session and not _IDENTITY_VALUE.match(session):
            identity_session = None
            notes.append(f"session {session!r} cannot travel in the proxy user name; Clutch sees no session id")
        identity = Identity(agent=code.agent, session=identity_session, route=code.route, tier=code.tier,
                            launch_code=code.text, model=model)
        env.update(agent_environment(proxy_url(host, port, identity, token), ca))
        if code.route == "b" and (code.tier or model):
            notes.append("route b never changes the model: the tier letter and the proxy identity's model are "
                         "ignored by Clutch (a -m model still reaches the agent's own flag)")
    elif code.tier:
        notes.append(f"route d does not pass through Clutch: tier {code.tier!r} has no effect")
    env.update(agents.yolo_env(code.agent, is_root=is_root))
    changes: dict[str, str | None] = {name: None for name in environ if name not in env}
    changes.update({name: value for name, value in env.items() if environ.get(name) != value})
    return Launch(argv=argv, env=env, changes=dict(sorted(changes.items())), notes=notes,
                  token=token if code.route in ("p", "b") else None)


def _split_gateway(gateway: str) -> tuple[str, int]:
    host, sep, port = gateway.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise agents.LaunchError(f"gateway must be host:port, not {gateway!r}")
    return host, int(port)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def mask_value(name: str, value: str, token: str | None = None) -> str:
    """The value as the dry run may show it: secrets replaced by ****."""
    if is_secret_name(name):
        return MASK
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and parts.password is not None:
        userinfo = f"{parts.username}:{MASK}" if parts.username else MASK
        host = parts.netloc.rpartition("@")[2]
        value = parts._replace(netloc=f"{userinfo}@{host}").geturl()
    if token:
        value = value.replace(token, MASK)
    return value


def describe(launch: Launch) -> str:
    """The dry run: the exact argv (shell-quoted) and the environment changes, secrets masked."""
    argv = shlex.join(launch.argv)
    if launch.token:
        argv = argv.replace(launch.token, MASK)
    lines = [f"run  {argv}"]
    if launch.changes:
        lines.append("env")
        width = max(len(name) for name in launch.changes)
        for name, value in launch.changes.items():
            if value is None:
                lines.append(f"  unset {name}")
            else:
                shown = mask_value(name, value, launch.token)
                lines.append(f"  set   {name:<{width}} = {shown if shown == MASK else shlex.quote(shown)}")
    for note in launch.notes:
        lines.append(f"note {note}")
    return "\n".join(lines)
