"""Provider keys: the gateway's environment, then the keys file, and which providers lack one.

A provider's key is named in the rules by its variable (`key_env: OPENROUTER_API_KEY`, or
`api_key: ${OPENROUTER_API_KEY}`), never written there. The value comes from the gateway's
environment or, for a variable the environment does not set, from the keys file
(`$XDG_CONFIG_HOME/clutch/keys.env`, addons.config.paths): `NAME=value` lines, as a `.env` file has
them. The environment wins, so a key exported for one run overrides the file without editing it; a
variable set to an empty string counts as unset.

The keys file is refused when its group or others may read it, as ssh refuses such a private key:
a key others can read is no longer secret, and a warning would be read too late. Nothing here logs or
returns a key's value in a message; errors name the file, the line and what is wrong with it.

Pure logic, no mitmproxy.
"""

from __future__ import annotations

import dataclasses
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from addons.config.rules import ModelTarget, Rules, RulesError, read_config_text

MAX_KEYS_BYTES = 64 * 1024  # a few dozen keys; past this it is not a keys file
_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")


def read_keys_file(path: Path) -> dict[str, str]:
    """The file's NAME -> value pairs; {} when there is no file. Raise RulesError (file, line) for a file
    group or others can read, one that is not text, too large, or has a line that is not NAME=value."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RulesError(str(path), None, None, f"cannot read the keys file: {e.strerror or e}") from e
    if mode & 0o077:
        raise RulesError(str(path), None, None, f"group or others may read the keys file (mode {mode:04o}); "
                                                f"Clutch does not use it until `chmod 600 {path}`")
    return parse_keys(read_config_text(path, MAX_KEYS_BYTES, "keys file"), str(path))


def parse_keys(text: str, filename: str) -> dict[str, str]:
    """`NAME=value` per line (`export NAME=value` too), `# comments`, blank lines; a value may be in
    single quotes (taken as written) or double quotes (\\" \\\\ \\n unescaped); an unquoted value ends
    at ` #`. The last line naming a variable wins, as in a shell."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        matched = _LINE.fullmatch(line)
        value = _value(matched.group(2)) if matched else None
        if matched is None or value is None:
            # the line is not repeated: it may hold a key
            raise RulesError(filename, number, None, "not a NAME=value line (a key, a # comment or nothing)")
        found[matched.group(1)] = value
    return found


def _value(text: str) -> str | None:
    """The value of one line, or None when its quotes do not close (or text follows them)."""
    if text[:1] in ("'", '"'):
        quote, body = text[0], text[1:]
        end = _closing(body, quote)
        if end is None or body[end + 1:].strip()[:1] not in ("", "#"):
            return None
        value = body[:end]
        if quote == '"':
            value = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)
        return value
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def _closing(body: str, quote: str) -> int | None:
    escaped = False
    for index, char in enumerate(body):
        if char == quote and not escaped:
            return index
        escaped = quote == '"' and char == "\\" and not escaped
    return None


class ProviderKeys(Mapping[str, str]):
    """Where the gateway reads a provider's key: the environment first (a blank variable counts as
    unset), then the keys file. Reads the environment as it is at each lookup."""

    def __init__(self, from_file: Mapping[str, str], path: Path | None, environ: Mapping[str, str]):
        self._file, self._environ, self.path = dict(from_file), environ, path

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name, "")
        if value.strip():
            return value
        if name in self._file:
            return self._file[name]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        yield from {*self._environ, *self._file}

    def __len__(self) -> int:
        return len({*self._environ, *self._file})

    def source_of(self, name: str) -> str | None:
        """Where `name` is set: "environment", the keys file's path, or None."""
        if self._environ.get(name, "").strip():
            return "environment"
        if self._file.get(name, "").strip():
            return str(self.path)
        return None


@dataclasses.dataclass(frozen=True)
class MissingKey:
    provider: str
    variable: str
    used_by: list[str]  # where the rules send requests to the provider (tiers.big, launch_tiers.d, ...)

    def describe(self, keys_file: Path | None) -> str:
        shown = ", ".join(self.used_by[:3]) + (f" and {len(self.used_by) - 3} more" if len(self.used_by) > 3 else "")
        where = f"set neither in the environment nor in {keys_file}" if keys_file else "not set in the environment"
        return (f"provider {self.provider} has no key: {self.variable} is {where}; what the rules send there "
                f"({shown}) fails with 502 missing_key")


def targets_by_provider(rules: Rules) -> dict[str, list[str]]:
    """provider -> where the rules send requests to it (tiers.big, launch_tiers.d, ...)."""
    found: dict[str, list[str]] = {}
    for loc, target in rules.targets():
        parsed = ModelTarget.parse(target)
        if parsed is not None:
            where = ".".join(str(part) for part in loc)
            if where not in found.setdefault(parsed.provider, []):
                found[parsed.provider].append(where)
    return found


def missing_keys(rules: Rules, keys: Mapping[str, str]) -> list[MissingKey]:
    """Each provider the rules can route to whose key variable has no value: a request routed there
    would get 502 missing_key. (A request that stays on the provider the agent called carries the
    agent's own key, so a provider no rule targets needs none.)"""
    found = []
    for name, used in sorted(targets_by_provider(rules).items()):
        provider = rules.providers.get(name)
        variable = provider.key_variable if provider else None
        if variable and not keys.get(variable, "").strip():
            found.append(MissingKey(name, variable, used))
    return found
