"""Plan one `xx` launch: the argv and the full environment to run it with, plus a dry-run rendering.

Pure: nothing is started. Routes p and b get the recipe of launcher.recipe.agent_environment (one
environment that routes and trusts the gateway for every agent, each checked by running it) with the
launch's identity in the proxy user name (`xx-cip.s-<id>`, addons.wire.identity.username_for: every
agent sends it on every request). Route d removes every proxy and CA variable, so the agent
talks to its provider directly. Everything else in the user's environment is kept as it is.

Decisions: on p and b the proxy/CA variables the user already had are removed before the recipe is
applied (a stale ALL_PROXY or a lower-case variant would otherwise send part of the traffic elsewhere).
`-m` means one of two things, told apart by `split_model`: a Clutch target (`provider:model` of a
provider in the rules) pins every request of the launch to it at the gateway (the proxy identity's
`.m-`; the agent keeps its own model name, Clutch rewrites it), which needs route p; anything else is
the agent's own model name and goes to its model flag. A launch profile (digit 0-9, launcher.config)
adds its model pin, environment and arguments; the user's own -m and `-- args` win over it.
A session id that cannot travel in the proxy user name (only letters, digits, '-' and '_') is still
passed to the agent, but left out of the identity, with a note. On every route the agent's
self-updater is switched off (launcher.updaters), unless the user's environment or arguments set
that switch themselves.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Iterable
from urllib.parse import urlsplit

from addons.certs import CAFiles
from addons.wire.identity import Identity
from launcher import agents, updaters
from launcher.codes import LaunchCode
from launcher.config import LaunchProfile
from launcher.recipe import agent_environment, proxy_url

# Compared upper-cased, so every case variant (https_proxy, No_Proxy, ...) is caught.
PROXY_AND_CA = frozenset({
    "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "CODEX_CA_CERTIFICATE", "NODE_USE_ENV_PROXY",
})
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
MASK = "****"
_IDENTITY_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # what addons.wire.identity accepts in a user name


@dataclasses.dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]  # the full environment to run with
    changes: dict[str, str | None]  # variable -> new value, or None when removed
    notes: list[str]
    token: str | None = None  # the proxy password, for masking only
    updates: str = ""  # what the launch does about the agent's self-updater (launcher.updaters)
    pin: str | None = None  # the provider:model every request goes to (-m or the profile's model)


def is_proxy_or_ca(name: str) -> bool:
    return name.upper() in PROXY_AND_CA


def split_model(model: str | None, providers: Iterable[str]) -> tuple[str | None, str | None]:
    """-m MODEL -> (the agent's own model flag, a Clutch pin). `openrouter:moonshotai/kimi-k2.6` is a pin
    when `openrouter` is a provider of the rules; `ollama/qwen3:4b`, `sonnet`, `gpt-6.1-sol` are the
    agent's own names (a ':' after a '/' or after a non-provider word is part of a model name)."""
    if not model:
        return None, None
    provider, sep, rest = model.partition(":")
    if sep and rest and "/" not in provider and provider in set(providers):
        return None, model
    return model, None


def plan_launch(code: LaunchCode, *, session: str | None = None, model: str | None = None,
                pin: str | None = None, prompt: str | None = None, extra: tuple[str, ...] | list[str] = (),
                environ: dict[str, str], gateway: str, ca: CAFiles, token: str, is_root: bool,
                yolo: bool = True, profile: LaunchProfile | None = None) -> Launch:
    """`model` is the agent's own model name (its flag), `pin` a Clutch target for the gateway."""
    notes: list[str] = []
    arguments = [*(profile.args_for(code.agent) if profile else []), *extra]
    pin = _pin(code, pin, profile, notes)
    argv = agents.command_line(code.agent, code.mode, session=session, model=model, prompt=prompt,
                               extra=tuple(arguments), yolo=yolo)
    env = {name: value for name, value in environ.items() if not is_proxy_or_ca(name)}
    if profile is not None:
        env.update(profile.env)
    switches, updates = updaters.env_for(code.agent, env, arguments)
    env.update(switches)
    notes.extend(agents.notes(code.agent, code.mode, env))
    if code.route in ("p", "b"):
        env.update(_gateway_env(code, session, pin, gateway, ca, token, notes))
    elif code.tier and profile is None:
        notes.append(f"route d does not pass through Clutch: tier {code.tier!r} has no effect")
    env.update(agents.yolo_env(code.agent, is_root=is_root, yolo=yolo))
    changes: dict[str, str | None] = {name: None for name in environ if name not in env}
    changes.update({name: value for name, value in env.items() if environ.get(name) != value})
    return Launch(argv=argv, env=env, changes=dict(sorted(changes.items())), notes=notes,
                  token=token if code.route in ("p", "b") else None, updates=updates, pin=pin)


def _pin(code: LaunchCode, pin: str | None, profile: LaunchProfile | None, notes: list[str]) -> str | None:
    """The model pin: the user's -m, else the profile's model (not on route d, which never reaches Clutch)."""
    if profile is not None and profile.model and not pin:
        if code.route == "d":
            notes.append(f"route d does not pass through Clutch: profile {code.tier}'s model {profile.model} is "
                         f"not used (its env and args are)")
        else:
            pin = profile.model
            notes.append(f"profile {code.tier} ({profile.name or 'unnamed'}) pins every request to {pin}")
    if pin and code.route == "d":
        raise agents.LaunchError(f"-m {pin} pins the model at the gateway, but route d does not pass through "
                                 f"Clutch: use route p (xx {code.text[:2]}p{code.text[3:]})")
    return pin


def _gateway_env(code: LaunchCode, session: str | None, pin: str | None, gateway: str, ca: CAFiles, token: str,
                 notes: list[str]) -> dict[str, str]:
    """Routes p and b: the recipe's proxy and CA variables, the launch's identity in the proxy user name."""
    host, port = _split_gateway(gateway)
    identity_session = session
    if session and not _IDENTITY_VALUE.match(session):
        identity_session = None
        notes.append(f"session {session!r} cannot travel in the proxy user name; Clutch sees no session id")
    identity = Identity(agent=code.agent, session=identity_session, route=code.route, tier=code.tier,
                        launch_code=code.text, model=pin)
    if code.route == "b" and (code.tier or pin):
        notes.append("route b never changes the model: the tier and the model pin are ignored by Clutch "
                     "(the agent's own -m still reaches its flag)")
    return agent_environment(proxy_url(host, port, identity, token), ca)


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


def describe_launch(launch: Launch) -> str:
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
    if launch.updates:
        lines.append(f"updates  {launch.updates}")
    for note in launch.notes:
        lines.append(f"note {note}")
    return "\n".join(lines)
