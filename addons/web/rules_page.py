"""The rules page (`/rules`): the rules in force shown section by section, and the user's edits saved
to the user's rules file with the loader the gateway itself uses.

Pure logic, no mitmproxy; Endpoints serves it. What it decides:

* **What the page shows** (`page_state`): each editable section as the defaults have it, as the user's
  file has it, and merged (layering.merge, the gateway's own merge), so the page marks what the
  user's file sets; the providers and their key *variables*, and whether each is set (environment or
  keys file), never a key's value; the file saves go to, and a hash of it as the page read it.
* **What a save writes.** A form saves one section: the user's layer of that section becomes what
  differs from the defaults (`user_layer`: an entry equal to the default's is left out, a default
  entry the form dropped becomes `null`), so the file keeps saying only what differs. The YAML editor
  saves the file's text as typed. Either way the text is checked by `layering.load_layered` on a
  temporary file beside the real one (the gateway's loader, one code path: same messages, same
  relative paths) and only then renamed over it, the previous version kept as `<name>.bak`.
* **Comments.** A form save rewrites the file from its data (PyYAML keeps no comments): the file then
  starts with a note saying so, and the `.bak` beside it holds the version with the user's comments.
  The YAML editor keeps every comment, as it saves the text as typed.
* **Who may save**: browser_guard.write_refusal (the checks of every write, Clutch's own page allowed)
  and the per-start token in the X-Clutch-Token header, compared in constant time.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from addons.config.keyfile import ProviderKeys
from addons.config.layering import ENTRY_TABLES, MAX_RULES_BYTES, RulesSource, load_layered, merge
from addons.config.rules import DEFAULT_RULES_PATH, Rules, RulesError
from addons.guard import browser_guard

PAGE = Path(__file__).with_name("rules.html")
TOKEN_HEADER = "x-clutch-token"
MAX_BODY_BYTES = 256 * 1024  # a rules file is a few kilobytes; a save is the file or one section of it
BACKUP_SUFFIX = ".bak"
FORM_NOTE = ("# Written by Clutch's rules page (/rules), which keeps no comments; the version before this\n"
             "# save is {backup} beside this file. docs/rules.md documents every field.\n")

_TARGET, _TEXT, _INT, _NUMBER, _LIST = "target", "text", "int", "number", "list"
_LIMIT = {"table": {"fields": {"tokens_per_day": _INT, "usd_per_day": _NUMBER}}}
# How the page draws each editable section: a type name, a list of choices ("" = not set), a group of
# named fields, or a table of named entries. tests/web/test_rules_page.py checks it against the schema.
FORMS: dict[str, Any] = {
    "tiers": {"fields": {"big": _TARGET, "middle": _TARGET, "small": _TARGET}},
    "aliases": {"table": _TARGET},
    "routes": {"fields": {"default": _TARGET, "background": _TARGET, "think": _TARGET, "long_context": _TARGET,
                          "long_context_threshold": _INT, "web_search": _TARGET, "image": _TARGET,
                          "toolcall": _TARGET, "custom": _TEXT}},
    "cascades": {"table": _LIST},
    "fallback": {"fields": {"method": ["", "cascade", "openrouter_native", "both"],
                            "sort": ["", "throughput", "price", "latency"], "partition": ["", "model", "none"],
                            "models": _LIST}},
    "quotas": {"table": {"fields": {"rpm": _INT, "rpd": _INT, "cooldown_after_429_s": _INT}}},
    "budgets": {"fields": {"agents": _LIMIT, "providers": _LIMIT, "over": ["", "refuse", "free"],
                           "free_model": _TARGET}},
    "launch_tiers": {"table": _TARGET},
}
SHOWN = ("providers", "profiles", "compression")  # shown, edited in the YAML editor only


class SaveRefused(Exception):
    """A save that writes nothing: (HTTP status, why, the field it concerns or None)."""

    def __init__(self, status: int, message: str, field: str | None = None, line: int | None = None):
        self.status, self.message, self.field, self.line = status, message, field, line
        super().__init__(message)

    def answer(self) -> dict:
        return {"error": self.message, "field": self.field, "line": self.line}


@dataclasses.dataclass(frozen=True)
class Save:
    """One save the page asks for: a section's form, or the whole file's text."""

    base: str  # the hash of the user's file the page edited ("" when there was none)
    section: str | None = None
    value: Any = None
    text: str | None = None


def new_token() -> str:
    """The per-start write token: random, handed to the page by GET /rules/state, never logged."""
    return secrets.token_urlsafe(32)


def save_refusal(method: str, host_header: str | None, headers: Mapping[str, str], client_is_loopback: bool,
                 token: str) -> tuple[int, str] | None:
    """(status, why) when a save must be refused: the checks of every write (Clutch's own page may
    send it), then the token. The refusal never repeats what was sent."""
    refused = browser_guard.write_refusal(method, host_header, headers, client_is_loopback, own_page=True)
    if refused is not None:
        return refused
    sent = headers.get(TOKEN_HEADER)
    if not sent:
        return 403, f"no {TOKEN_HEADER} header: the rules page sends the token GET /rules/state gives"
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), token.encode()):
        return 403, f"wrong {TOKEN_HEADER} (the gateway restarted since the page loaded? reload it)"
    return None


def parse_save(raw: bytes) -> Save:
    """The save a POST body asks for: {"base": hash, "section": name, "value": {...}} or
    {"base": hash, "yaml": text}. SaveRefused (400, 413) says what is wrong."""
    if len(raw) > MAX_BODY_BYTES:
        raise SaveRefused(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KB")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise SaveRefused(400, "the body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("base"), str):
        raise SaveRefused(400, 'the body must be {"base": ..., "section": ..., "value": ...} or '
                               '{"base": ..., "yaml": ...}')
    if set(body) == {"base", "yaml"} and isinstance(body["yaml"], str):
        return Save(body["base"], text=body["yaml"])
    if set(body) == {"base", "section", "value"} and body["section"] in FORMS:
        if not isinstance(body["value"], dict):
            raise SaveRefused(400, f"{body['section']} must be a mapping", str(body["section"]))
        return Save(body["base"], section=body["section"], value=body["value"])
    raise SaveRefused(400, f"a form saves one of {', '.join(FORMS)} (section and value), or the file (yaml)")


def save_target(source: RulesSource) -> Path | None:
    """The file a save writes: the gateway's user file (--rules / clutch_rules, else
    $XDG_CONFIG_HOME/clutch/rules.yaml); None when the gateway was told to run on the defaults alone."""
    return source.user


def read_text(path: Path | None) -> str:
    """The user's file as text ("" when there is none)."""
    if path is None or not path.is_file():
        return ""
    with open(path, "rb") as file:
        raw = file.read(MAX_RULES_BYTES + 1)
    return raw.decode("utf-8", "replace")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def page_state(target: Path | None, rules: Rules, keys: ProviderKeys, keys_path: Path,
               last_error: str | None, overrides: Mapping[str, str]) -> dict:
    """What GET /rules/state answers (without the token, which Endpoints adds): no key's value."""
    text = read_text(target)
    defaults = _data(DEFAULT_RULES_PATH.read_text())
    try:
        yours, file_error = _data(text), None
    except (yaml.YAMLError, ValueError) as e:
        yours, file_error = {}, f"{target}: {str(e).splitlines()[0]}"
    merged = merge(defaults, yours)
    sections = {name: {"value": merged.get(name), "yours": yours.get(name), "defaults": defaults.get(name)}
                for name in (*FORMS, *SHOWN)}
    return {
        "path": str(target) if target else None,
        "exists": bool(target and target.is_file()),
        "backup": str(target) + BACKUP_SUFFIX if target else None,
        "base": digest(text) if text else "",
        "yaml": text,
        "file_error": file_error,
        "last_reload_error": last_error,
        "overrides": dict(overrides),
        "forms": FORMS,
        "sections": sections,
        "keys_file": str(keys_path),
        "providers": [_provider(name, provider, keys) for name, provider in rules.providers.items()],
    }


def _provider(name: str, provider, keys: ProviderKeys) -> dict:
    """A provider as the page shows it: its key's variable and where it is set, never its value."""
    variable = provider.key_variable
    source = keys.source_of(variable) if variable else None
    return {"name": name, "base_url": provider.base_url, "dialects": [str(d) for d in provider.dialects],
            "hosts": list(provider.hosts), "key_variable": variable,
            "key_set": source is not None, "key_in": "environment" if source == "environment" else
            ("keys file" if source else None)}


def _data(text: str) -> dict:
    data = yaml.safe_load(text) if text.strip() else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("the rules file must be a mapping (providers:, tiers:, ...)")
    return data


_SAME = object()


def user_layer(default: Any, edited: Any, at: tuple[str, ...] = ()) -> Any:
    """What the user's file must say so that layered over `default` (layering.merge) it gives
    `edited`: fields and entries equal to the default's left out, a default one `edited` drops as
    null (the layers' own "remove"), an entry of a named table that differs written whole (it
    replaces the default's entry whole)."""
    if not isinstance(default, dict) or not isinstance(edited, dict):
        return _SAME if edited == default else edited
    table = at in ENTRY_TABLES
    layer: dict = {}
    for key, value in edited.items():
        if value is None:
            continue
        if table:
            differs = _SAME if default.get(key) == value else value
        else:
            differs = user_layer(default.get(key), value, (*at, str(key)))
        if differs is not _SAME:
            layer[key] = differs
    for key, value in default.items():
        if value is not None and edited.get(key) is None:
            layer[key] = None
    return layer if layer else _SAME


def form_text(current: str, section: str, value: dict, backup: str = "rules.yaml" + BACKUP_SUFFIX) -> str:
    """The user's file after a form saved `section`: its data with that section's layer replaced,
    dumped as YAML under FORM_NOTE (the comments are in the backup)."""
    try:
        data = _data(current)
    except (yaml.YAMLError, ValueError):
        raise SaveRefused(409, "your rules file does not parse, so a form cannot merge into it: fix it in "
                               "the YAML editor") from None
    defaults = _data(DEFAULT_RULES_PATH.read_text())
    layer = user_layer(defaults.get(section), _clean(value), (section,))
    if layer is _SAME or layer == {}:
        data.pop(section, None)
    else:
        data[section] = layer
    data.setdefault("version", 1)
    data = {"version": data.pop("version"), **data}
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    return FORM_NOTE.format(backup=backup) + body


def _clean(value: Any) -> Any:
    """A form's value with its empty fields ("" and [] and {} left blank) taken as not set."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items() if not _blank(v)}
    if isinstance(value, list):
        return [_clean(v) for v in value if not _blank(v)]
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def save(target: Path, request: Save) -> Rules:
    """Check the new text with the gateway's loader and put it in place: written beside the target,
    validated there, the current file copied to `<name>.bak`, then renamed over the target (a reader
    sees the old file or the new one, never half of one). The folder is created 0700 if absent.
    SaveRefused (409 the file changed since the page read it, 422 invalid) writes nothing."""
    current = read_text(target)
    if request.base != (digest(current) if current else ""):
        raise SaveRefused(409, f"{target} changed since the page read it: reload the page (your edit is "
                               "still in the form)")
    text = request.text if request.text is not None else \
        form_text(current, str(request.section), request.value, target.name + BACKUP_SUFFIX)
    if len(text.encode()) > MAX_RULES_BYTES:
        raise SaveRefused(413, f"larger than {MAX_RULES_BYTES // 1024} KB: not a rules file")
    created = not target.parent.exists()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = _write_beside(target, text)
    try:
        rules = load_layered(RulesSource(temporary, True))
        if target.exists():
            _write_beside(target, current, target.with_name(target.name + BACKUP_SUFFIX))
        os.replace(temporary, target)
    except RulesError as e:
        temporary.unlink(missing_ok=True)
        if created:
            target.parent.rmdir()  # an invalid first save leaves nothing behind, not even the folder
        raise SaveRefused(422, _named(e, temporary, target), e.field, e.line) from None
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(target.parent)
    return rules


def _named(error: RulesError, temporary: Path, target: Path) -> str:
    """The loader's message, naming the user's file rather than the temporary one it read."""
    return str(error).replace(str(temporary), str(target))


def _write_beside(target: Path, text: str, final: Path | None = None) -> Path:
    """`text` in a new file in target's folder, flushed to disk, with the target's mode (0600 for a new
    one); renamed to `final` when given, else left for the caller to rename (its path returned)."""
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(name, mode)
        if final is not None:
            os.replace(name, final)
            return final
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the page

CONTENT_TYPE = "text/html; charset=utf-8"
_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


@functools.cache
def rules_html() -> bytes:
    """The page's bytes, read once per process (it ships with the code)."""
    return PAGE.read_bytes()


@functools.cache
def headers() -> dict[str, str]:
    """No caching, no framing, nothing loaded from anywhere: the page's one inline script runs by its
    hash, so an injected script would not."""
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
                      for m in _SCRIPT.findall(rules_html()))
    return {"content-type": CONTENT_TYPE, "cache-control": "no-store", "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "content-security-policy": f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
                                       "connect-src 'self'; img-src 'self' data:; form-action 'none'; "
                                       "frame-ancestors 'none'; base-uri 'none'"}
