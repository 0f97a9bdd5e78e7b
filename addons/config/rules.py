"""The rules file: which providers exist and how requests to them are routed (tiers, aliases, task
routes, profiles, cascades and fallback, quotas, budgets, compression).

Pure logic, no mitmproxy. Rules are YAML validated by pydantic; every error names the file,
the line and the field, because a user editing a rules file needs exactly those three things.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from addons.config.yaml_lines import line_of, read_yaml
from addons.wire.dialects import Dialect
from addons.wire.identity import AGENT_NAMES

DEFAULT_RULES_PATH = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class RulesError(Exception):
    """A rules file that cannot be used; the message names file, line and field."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file, self.line, self.field, self.message = file, line, field, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def read_config_text(path: Path, limit: int, what: str) -> str:
    """A user's config file (`what`: "rules file", "keys file") as text, read at most `limit` bytes,
    or RulesError naming the file: unreadable, larger than the limit, or not UTF-8."""
    try:
        with open(path, "rb") as file:
            raw = file.read(limit + 1)
    except OSError as e:
        raise RulesError(str(path), None, None, f"cannot read the {what}: {e.strerror or e}") from e
    if len(raw) > limit:
        raise RulesError(str(path), None, None, f"larger than {limit // 1024} KB: not a {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RulesError(str(path), None, None, f"not UTF-8 text (byte {e.start})") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_VARIABLE = r"[A-Za-z_][A-Za-z0-9_]*"


class Provider(_Strict):
    base_url: str
    dialects: list[Dialect] = Field(min_length=1, description="API dialects this endpoint speaks")
    hosts: list[str] = Field(default_factory=list, description="hosts intercepted as this provider")
    key_env: str | None = Field(default=None, description="environment variable holding the key")
    api_key: str | None = Field(default=None, description="the key as ${VARIABLE}: the variable's name, never "
                                                          "the key itself (the spelling of LiteLLM and CCR users)")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not _HOSTNAME.match(host):
                raise ValueError(f"{host!r} is not a host name (no scheme, port or path)")
        return value

    @field_validator("key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_VARIABLE, value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("api_key")
    @classmethod
    def _key_reference(cls, value: str | None) -> str | None:
        # a rules file is shared, copied and shown (`clutch rules check` prints it): a key written into
        # it would leak, so only a reference is accepted, and the refusal never repeats the value
        if value is not None and not re.fullmatch(r"\$\{" + _VARIABLE + r"\}", value.strip()):
            raise ValueError("write ${VARIABLE}, the name of the variable holding the key (set in the "
                             "environment or in the keys file), never the key itself")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_key(self) -> Provider:
        if self.api_key and self.key_env and self.api_key != f"${{{self.key_env}}}":
            raise ValueError(f"api_key {self.api_key} and key_env {self.key_env} name two variables; keep one")
        return self

    @property
    def key_variable(self) -> str | None:
        """The variable holding this provider's key: key_env, or the name in api_key's ${...}."""
        if self.key_env:
            return self.key_env
        return self.api_key[2:-1] if self.api_key else None

    @property
    def base_host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def base_port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def endpoints(self) -> list[tuple[str, int]]:
        """(host, port) pairs whose traffic is this provider's: the listed hosts on 443, and the base URL's."""
        found = [(host, 443) for host in self.hosts]
        if (self.base_host, self.base_port) not in found:
            found.append((self.base_host, self.base_port))
        return found


Target = Annotated[str, Field(description="provider:model")]

# The tier letters of `xx` launch codes whose model the rules choose (`xx hcf` = Hermes on tier f).
LAUNCH_TIER_LETTERS = ("d", "n", "k", "q", "m", "f")


@dataclasses.dataclass(frozen=True)
class ModelTarget:
    """A routing target: a provider from the rules and a model name as that provider spells it."""

    provider: str
    model: str

    @classmethod
    def parse(cls, text: str, separators: str = ":") -> ModelTarget | None:
        """`provider:model` (or, with separators=":,", also claude-code-router's `provider,model`)."""
        text = text.strip()
        cut = min((i for i in (text.find(sep) for sep in separators) if i > 0), default=-1)
        if cut <= 0 or cut == len(text) - 1:
            return None
        return cls(text[:cut], text[cut + 1:])

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


class Tiers(_Strict):
    big: Target | None = None
    middle: Target | None = None
    small: Target | None = None


class Routes(_Strict):
    default: Target | None = None
    background: Target | None = None
    think: Target | None = None
    long_context: Target | None = None
    long_context_threshold: int = Field(default=60000, gt=0)
    web_search: Target | None = None
    image: Target | None = None
    toolcall: Target | None = None
    custom: str | None = Field(default=None, description="Python file exposing route(request, context)")


class Quota(_Strict):
    rpm: int | None = Field(default=None, gt=0)
    rpd: int | None = Field(default=None, gt=0)
    cooldown_after_429_s: int = Field(default=60, ge=0)


class Fallback(_Strict):
    method: Literal["cascade", "openrouter_native", "both"] = "both"
    sort: Literal["throughput", "price", "latency"] = "throughput"
    models: list[Target] = Field(default_factory=list, description="fallbacks after every cascade")
    partition: Literal["model", "none"] | None = Field(
        default=None, description="OpenRouter provider.sort partition; 'none' lets the listed models compete")


# YAML 1.1 reads a bare `off` as false; `mode: off` means the mode named off.
CompressionMode = Annotated[Literal["off", "cache_safe", "max"],
                            BeforeValidator(lambda value: "off" if value is False else value)]


Breakpoints = Annotated[Literal["auto", "off"], BeforeValidator(lambda value: "off" if value is False else value),
                        Field(description="prompt-cache breakpoints added where the target needs them and the "
                                          "agent set none (docs/caching.md): auto or off")]


class Compression(_Strict):
    mode: CompressionMode = "cache_safe"
    rewrites: Literal["always", "when_cold", "when_worth_it"] = Field(
        default="when_worth_it", description="max mode: when an already-sent output may be replaced (a cache miss); "
                                      "when_cold waits until the session's prompt cache has expired, "
                                      "when_worth_it also replaces when that saves more than the miss costs")
    cold_after_s: int = Field(default=300, gt=0, description="idle time after which a session's cache is cold")
    log_tokens: int = Field(default=600, gt=0, description="test, build and install logs longer than this are reduced")
    output_tokens: int = Field(default=4000, gt=0, description="any other tool output longer than this is reduced")
    breakpoints: Breakpoints = "auto"


class Limit(_Strict):
    tokens_per_day: int | None = Field(default=None, gt=0, description="input + output tokens per UTC day")
    usd_per_day: float | None = Field(default=None, gt=0, description="dollars per UTC day")


class Budgets(_Strict):
    agents: dict[str, Limit] = Field(default_factory=dict)
    providers: dict[str, Limit] = Field(default_factory=dict)
    over: Literal["refuse", "free"] = Field(
        default="refuse", description="over a budget: refuse with a 429, or send the request to a free model")
    free_model: Target | None = Field(
        default=None, description="the free model for over: free (default launch_tiers.f, then the model scan's)")


class Profile(_Strict):
    tiers: Tiers = Field(default_factory=Tiers)
    routes: Routes = Field(default_factory=Routes)
    aliases: dict[str, Target] = Field(default_factory=dict)
    compression: CompressionMode | None = None
    breakpoints: Breakpoints | None = None


class Rules(_Strict):
    version: Literal[1] = 1
    providers: dict[str, Provider] = Field(min_length=1)
    tiers: Tiers = Field(default_factory=Tiers)
    aliases: dict[str, Target] = Field(default_factory=dict)
    routes: Routes = Field(default_factory=Routes)
    cascades: dict[Target, list[Target]] = Field(default_factory=dict)
    quotas: dict[str, Quota] = Field(default_factory=dict)
    fallback: Fallback = Field(default_factory=Fallback)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    compression: Compression = Field(default_factory=Compression)
    launch_tiers: dict[Literal["d", "n", "k", "q", "m", "f"], Target] = Field(default_factory=dict)
    budgets: Budgets = Field(default_factory=Budgets)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    def custom_router_path(self, custom: str | None) -> Path | None:
        """A custom router file named in the rules; relative paths start at the rules file's folder."""
        if not custom:
            return None
        return (self._base_dir / os.path.expanduser(custom)).resolve()

    def provider_of(self, target: ModelTarget) -> Provider | None:
        return self.providers.get(target.provider)

    def problems(self) -> list[tuple[tuple, str]]:
        """Cross-field mistakes pydantic cannot see field by field, each with its location."""
        return [*self._name_problems(), *self._endpoint_problems(), *self._target_problems(),
                *self._budget_problems(), *self._custom_router_problems()]

    def _name_problems(self) -> list[tuple[tuple, str]]:
        found: list[tuple[tuple, str]] = []
        for name in self.providers:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                found.append((("providers", name), f"provider name {name!r}: use lower-case letters, digits, "
                                                   "'-' and '_'"))
        for agent in self.profiles:
            if agent not in AGENT_NAMES and not re.fullmatch(r"[0-9]", agent):
                found.append((("profiles", agent), f"profile {agent!r}: name an agent ({', '.join(AGENT_NAMES)}) "
                                                   "or a digit 0-9"))
        return found

    def _endpoint_problems(self) -> list[tuple[tuple, str]]:
        """Two providers at the same host and port: a request there could not be told apart."""
        found: list[tuple[tuple, str]] = []
        owner: dict[tuple[str, int], str] = {}
        for name, entry in self.providers.items():
            for endpoint in entry.endpoints():
                if endpoint in owner:
                    found.append((("providers", name),
                                  f"{endpoint[0]}:{endpoint[1]} belongs to both {owner[endpoint]!r} and {name!r}; "
                                  f"keep one (`{owner[endpoint]}: null` removes a provider of the defaults)"))
                owner[endpoint] = name
        return found

    def _target_problems(self) -> list[tuple[tuple, str]]:
        found: list[tuple[tuple, str]] = []
        for loc, target in self.targets():
            provider, sep, model = target.partition(":")
            if not sep or not provider or not model:
                found.append((loc, f"{target!r} is not a target; write provider:model, "
                                   "e.g. openrouter:qwen/qwen3-coder"))
            elif provider not in self.providers:
                found.append((loc, f"target {target!r} names provider {provider!r}, which is not in providers"))
        return found

    def _budget_problems(self) -> list[tuple[tuple, str]]:
        found: list[tuple[tuple, str]] = []
        for agent in self.budgets.agents:
            if agent not in AGENT_NAMES:
                found.append((("budgets", "agents", agent), f"budget for {agent!r}: name an agent "
                                                            f"({', '.join(AGENT_NAMES)})"))
        for provider in self.budgets.providers:
            if provider not in self.providers:
                found.append((("budgets", "providers", provider), f"budget for provider {provider!r}, "
                                                                  "which is not in providers"))
        return found

    def _custom_router_problems(self) -> list[tuple[tuple, str]]:
        found: list[tuple[tuple, str]] = []
        routes: list[tuple[tuple[str, ...], Routes]] = [(("routes",), self.routes)]
        routes += [(("profiles", agent, "routes"), p.routes) for agent, p in self.profiles.items()]
        for loc, section in routes:
            path = self.custom_router_path(section.custom)
            if path is not None and not path.is_file():
                found.append(((*loc, "custom"), f"custom router file {str(path)!r} does not exist"))
        return found

    def targets(self) -> list[tuple[tuple, str]]:
        """Every provider:model named anywhere, with its location in the file."""
        found: list[tuple[tuple, str]] = []

        def section(prefix: tuple, model: BaseModel) -> None:
            for key, value in model.model_dump().items():
                if isinstance(value, str) and key != "custom":
                    found.append(((*prefix, key), value))

        section(("tiers",), self.tiers)
        section(("routes",), self.routes)
        found += [(("aliases", name), t) for name, t in self.aliases.items()]
        found += [(("launch_tiers", letter), t) for letter, t in self.launch_tiers.items()]
        found += [(("fallback", "models", i), t) for i, t in enumerate(self.fallback.models)]
        if self.budgets.free_model:
            found.append((("budgets", "free_model"), self.budgets.free_model))
        for agent, profile in self.profiles.items():
            section(("profiles", agent, "tiers"), profile.tiers)
            section(("profiles", agent, "routes"), profile.routes)
            found += [(("profiles", agent, "aliases", name), t) for name, t in profile.aliases.items()]
        for primary, fallbacks in self.cascades.items():
            found.append((("cascades", primary), primary))
            found += [(("cascades", primary, i), t) for i, t in enumerate(fallbacks)]
        return found

    def provider_at(self, host: str, port: int) -> tuple[str, Provider] | None:
        endpoint = (host.lower().rstrip("."), port)
        for name, provider in self.providers.items():
            if endpoint in provider.endpoints():
                return name, provider
        return None


def load_rules(path: str | Path) -> Rules:
    """Read and validate a rules file; raise RulesError naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(str(path), None, None, f"cannot read the rules file: {e.strerror or e}") from e
    return parse_rules(text, str(path))


def parse_rules(text: str, filename: str) -> Rules:
    """One rules document on its own (the embedded defaults, the example); a user's file is layered
    over the defaults by addons.config.layering."""
    root, data = read_yaml(text, filename, RulesError)
    if not isinstance(data, dict):
        raise RulesError(filename, 1, None, "the rules file must be a mapping (providers:, tiers:, ...)")
    return validate_rules(data, Path(filename).resolve().parent,
                          lambda loc, message: _located(filename, root, loc, message))


def validate_rules(data: dict, base_dir: Path, locate: Callable[[tuple, str], RulesError]) -> Rules:
    """Rules from a document's data; the first mistake is raised as `locate(field path, message)`,
    which knows the file (or files) the data came from."""
    try:
        rules = Rules.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field (check the spelling against docs/rules.md, the rules reference)"
        raise locate(tuple(first["loc"]), message) from None
    rules._base_dir = base_dir
    for loc, message in rules.problems()[:1]:
        raise locate(loc, message)
    return rules


def _located(filename: str, root: Any, loc: tuple, message: str) -> RulesError:
    field = ".".join(str(p) for p in loc) or "(top level)"
    return RulesError(filename, line_of(root, loc), field, message)
