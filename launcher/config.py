"""`xx`'s user settings: `~/.xx/config.json` or `~/.xx/config.yaml` (or the file `$XX_CONFIG` names).

Pure: reading and validating, nothing is started. JSON is read as YAML (a subset), so both forms
get the same errors, each naming the file, the line and the field, like the rules file
(addons.config.rules). A missing file means the defaults; a broken one stops `xx` with that message
rather than launching an agent on settings the user did not write.

Profiles 0-9: the digit of a launch code (`xx cip3`) picks `profiles."3"` here (a model pin, extra
environment and extra agent arguments, applied by the launcher) and the same digit travels to the
gateway in the proxy user name, where the rules' `profiles."3"` (tiers, routes, aliases) applies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from addons.config.rules import ModelTarget, RulesError
from addons.config.yaml_lines import line_of, read_yaml
from addons.guard.user_tokens import is_token
from addons.wire.identity import AGENT_NAMES

CONFIG_NAMES = ("config.json", "config.yaml", "config.yml")
DEFAULT_GATEWAY = "127.0.0.1:8780"
ProfileDigit = Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


class ConfigError(RulesError):
    """A config file that cannot be used; the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LaunchProfile(_Strict):
    name: str = ""  # shown by `xx codes` and the dry run
    model: str | None = Field(default=None, description="provider:model every request of the launch goes to")
    env: dict[str, str] = Field(default_factory=dict)
    # agent name (or "all") -> extra arguments, put before the user's own `-- ...` arguments
    args: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is not None and ModelTarget.parse(value) is None:
            raise ValueError(f"{value!r} is not provider:model (e.g. openrouter:moonshotai/kimi-k2.6)")
        return value

    @field_validator("args")
    @classmethod
    def _agents(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for agent in value:
            if agent != "all" and agent not in AGENT_NAMES:
                raise ValueError(f"{agent!r} is not an agent (one of all, {', '.join(AGENT_NAMES[:-1])})")
        return value

    def args_for(self, agent: str) -> list[str]:
        return [*self.args.get("all", []), *self.args.get(agent, [])]


class XXConfig(_Strict):
    gateway: Annotated[str, Field(description="host:port of the Clutch gateway")] = DEFAULT_GATEWAY
    auto_start: bool = True  # start the gateway when a p/b launch finds it down
    rules: str | None = None  # rules file for a gateway xx starts; None: the embedded default
    confdir: str | None = None  # the gateway's CA folder for a gateway xx starts; None: Clutch's own (`clutch paths`)
    gateway_args: list[str] = Field(default_factory=list)  # extra mitmdump options for a gateway xx starts
    # a team gateway's user token (clutch users add): the agents' proxy password; else a random one per launch
    token: str | None = None
    yolo: bool = True  # pass each agent's permission-bypass flag
    tmux: bool = False  # run interactive launches in a named tmux session (the crash guard)
    profiles: dict[ProfileDigit, LaunchProfile] = Field(default_factory=dict)

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and not is_token(value):
            raise ValueError("is not a Clutch user token (clutch_ and 43 letters, digits, - or _: clutch users "
                             "add prints it)")
        return value

    @field_validator("gateway")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (e.g. {DEFAULT_GATEWAY})")
        return value

    @property
    def host(self) -> str:
        return self.gateway.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.gateway.rpartition(":")[2])

    def profile(self, digit: str | None) -> LaunchProfile | None:
        return next((profile for key, profile in self.profiles.items() if key == digit), None)


def xx_home(environ: Mapping[str, str] | None = None) -> Path:
    """`~/.xx`: the config file and the background gateway's pid and log files."""
    env = os.environ if environ is None else environ
    if env.get("XX_HOME"):
        return Path(env["XX_HOME"]).expanduser()
    return Path(env.get("HOME") or Path.home()).expanduser() / ".xx"


def config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file in use: $XX_CONFIG, else the first of ~/.xx/config.{json,yaml,yml} that exists."""
    env = os.environ if environ is None else environ
    if env.get("XX_CONFIG"):
        return Path(env["XX_CONFIG"]).expanduser()
    for name in CONFIG_NAMES:
        candidate = xx_home(env) / name
        if candidate.exists():
            return candidate
    return None


def load_config(environ: dict[str, str] | None = None) -> tuple[XXConfig, Path | None]:
    path = config_path(environ)
    if path is None:
        return XXConfig(), None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(path), None, None, f"cannot read the config file: {e.strerror or e}") from e
    return parse_config(text, str(path)), path


def parse_config(text: str, filename: str) -> XXConfig:
    root, data = read_yaml(text, filename, ConfigError)
    if data is None:
        return XXConfig()
    if not isinstance(data, dict):
        raise ConfigError(filename, 1, None, "the config must be a mapping (gateway, auto_start, profiles, ...)")
    try:
        return XXConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(part for part in first["loc"] if part != "[key]")
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (see the README's xx config example)"
        elif first["type"] == "literal_error" and loc[:1] == ("profiles",):
            message = "profiles are named by one digit, 0-9"
        field = ".".join(str(p) for p in loc) or "(top level)"
        raise ConfigError(filename, line_of(root, loc), field, message) from None


def gateway_option(config: XXConfig, name: str) -> str | None:
    """The value of `--set name=value` among the config's gateway_args (the last one wins)."""
    found, args = None, list(config.gateway_args)
    for i, arg in enumerate(args):
        text = args[i + 1] if arg == "--set" and i + 1 < len(args) else arg.removeprefix("--set=")
        if text.startswith(f"{name}="):
            found = text.split("=", 1)[1]
    return found
