"""The in-flight record: which LLM requests a gateway is serving, on disk, so that the next start can
tell how many a `kill -9` (or a crash, or the OOM killer) cut off without a word or a usage row.

Pure logic, no mitmproxy. Each gateway appends to a file of its own in the state folder,
`inflight-<pid>.jsonl`: a line when a request starts (`{"+": id, "agent", "model", "ts"}`) and one
when it ends (`{"-": id}`). A line is one `write` on an O_APPEND descriptor, never fsynced: the
kernel keeps it when the process is killed (a power cut may lose the last ones), and the hot path
pays a few microseconds per request. The file is truncated whenever nothing is in flight, and
rewritten with only what is in flight when it grows past MAX_BYTES, so it stays small. A clean stop
deletes it.

At start, `claim_leftovers` takes the files of gateways that are no longer running (renamed first,
so two gateways starting together never both count one), and returns the requests started and never
ended: those were lost in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "inflight-"
SUFFIX = ".jsonl"
MAX_BYTES = 1 << 20  # rewritten past this (a long run under load never drops to zero in flight)
MAX_READ = 8 << 20  # a leftover file read at start, at most (a foreign or damaged file is not read whole)
_FIELD = 200  # longest agent or model name kept (both come from the agent's request)


@dataclasses.dataclass(frozen=True)
class Lost:
    """A request that was in flight when its gateway died."""

    request_id: str
    agent: str
    model: str
    started: float  # epoch seconds
    pid: int  # the gateway that served it


class InFlightRecord:
    def __init__(self, folder: Path, pid: int | None = None):
        self.pid = pid if pid is not None else os.getpid()
        self.path = Path(folder) / f"{PREFIX}{self.pid}{SUFFIX}"
        self._now: dict[str, str] = {}  # request id -> its start line
        self._fd: int | None = None
        self._size = 0

    def open(self) -> None:
        """Start writing (the folder is created 0700 if missing). Raises OSError."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = 0
        self._write("".join(self._now.values()))

    def started(self, request_id: str, agent: str, model: str) -> None:
        line = json.dumps({"+": request_id, "agent": agent[:_FIELD], "model": model[:_FIELD],
                           "ts": round(time.time(), 3)}, ensure_ascii=True) + "\n"
        self._now[request_id] = line
        self._write(line)

    def ended(self, request_id: str) -> None:
        if self._now.pop(request_id, None) is None:
            return
        if not self._now:
            self._truncate()
        elif self._size > MAX_BYTES:
            self._rewrite()
        else:
            self._write(json.dumps({"-": request_id}) + "\n")

    def __len__(self) -> int:
        return len(self._now)

    def close(self, clean: bool) -> None:
        """Stop writing; `clean`: every request was accounted for, so the file goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if clean:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _write(self, text: str) -> None:
        if self._fd is None or not text:
            return
        data = text.encode()
        try:
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as e:  # a full disk costs the record, never a request
            logger.warning("cannot write the in-flight record %s (%s); it is off", self.path, e.strerror or e)
            self.close(clean=False)

    def _truncate(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            self._size = 0
        except OSError as e:
            logger.warning("cannot truncate the in-flight record %s (%s); it is off", self.path, e.strerror or e)
            self.close(clean=False)

    def _rewrite(self) -> None:
        """Only what is in flight now: truncated and written again in one go (a crash between the two
        loses those few lines, which a crash at that moment could not have been told apart from)."""
        self._truncate()
        self._write("".join(self._now.values()))


def claim_leftovers(folder: Path, alive=None) -> list[Lost]:
    """The requests that dead gateways' records show in flight; their files are removed. A record of a
    gateway still running (`alive(pid)`) is left alone."""
    alive = alive or _alive
    lost: list[Lost] = []
    try:
        names = [p for p in Path(folder).iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX)]
    except OSError:
        return lost
    for path in names:
        try:
            pid = int(path.name[len(PREFIX):-len(SUFFIX)])
        except ValueError:
            continue
        # a file named after this very process is a killed predecessor's (a restart in a container gets
        # the same PID): this gateway has not opened its own record yet
        if pid != os.getpid() and alive(pid):
            continue
        claimed = path.with_name(f".{path.name}.{os.getpid()}.claimed")
        try:
            os.rename(path, claimed)  # only one gateway gets it
        except OSError:
            continue
        try:
            with open(claimed, "rb") as file:
                text = file.read(MAX_READ).decode("utf-8", "replace")
        except OSError:
            text = ""
        lost += _unended(text, pid)
        with contextlib.suppress(OSError):
            claimed.unlink()
    return sorted(lost, key=lambda entry: entry.started)


def _unended(text: str, pid: int) -> list[Lost]:
    open_: dict[str, Lost] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the last line of a process killed mid-write
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("-"), str):
            open_.pop(entry["-"], None)
        elif isinstance(entry.get("+"), str):
            started = entry.get("ts")
            open_[entry["+"]] = Lost(entry["+"], str(entry.get("agent") or "unknown")[:_FIELD],
                                     str(entry.get("model") or "")[:_FIELD],
                                     float(started) if isinstance(started, (int, float)) else 0.0, pid)
    return list(open_.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that number
    return True
