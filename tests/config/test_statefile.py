"""State files: atomic private writes; a missing or corrupt file gives None, never an exception."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from addons.config.statefile import load_json, save_json


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_round_trip_in_a_new_private_folder(tmp_path):
    path = tmp_path / "state" / "deeper" / "breakers.json"
    data = {"breakers": {"openrouter:a": {"state": "open", "until": 123.5}}, "unicode": "ünï ✓"}
    old_umask = os.umask(0o022)  # a usual umask would leave 0755 folders and 0644 files
    try:
        save_json(path, data)
    finally:
        os.umask(old_umask)
    assert load_json(path) == data
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["breakers.json"]  # no temporary file left


def test_overwrite_replaces_the_whole_file_and_keeps_it_private(tmp_path):
    path = tmp_path / "quotas.json"
    save_json(path, {"big": "x" * 10_000})
    os.chmod(path, 0o644)
    save_json(path, {"small": 1})
    assert json.loads(path.read_text()) == {"small": 1}
    assert _mode(path) == 0o600


def test_a_failed_write_keeps_the_previous_state(tmp_path):
    path = tmp_path / "breakers.json"
    save_json(path, {"version": 1})
    with pytest.raises(TypeError):
        save_json(path, {"version": 2, "bad": object()})
    with pytest.raises(ValueError):
        save_json(path, {"version": 3, "bad": float("nan")})  # would be unreadable JSON elsewhere
    assert load_json(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["breakers.json"]


def test_a_failed_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "breakers.json"

    def refuse(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        save_json(path, {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_none_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_json(tmp_path / "nothing.json") is None
    assert caplog.records == []


@pytest.mark.parametrize("content", [b'{"breakers": {', b"[1, 2, 3]", b'"text"', b"", b"\xff\xfe{}"],
                         ids=["truncated", "list", "string", "empty", "not-utf8"])
def test_corrupt_file_is_moved_aside_with_a_warning(tmp_path, caplog, content):
    path = tmp_path / "breakers.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="addons.config.statefile"):
        assert load_json(path) is None
    assert not path.exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("breakers.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert any(str(path) in r.getMessage() and aside[0].name in r.getMessage() for r in caplog.records)
    save_json(path, {"fresh": True})  # the next save starts over
    assert load_json(path) == {"fresh": True}


def test_two_corrupt_files_in_the_same_second_keep_both_copies(tmp_path, monkeypatch):
    import time
    monkeypatch.setattr(time, "gmtime", lambda *args: time.struct_time((2026, 5, 9, 12, 0, 0, 5, 129, 0)))
    path = tmp_path / "quotas.json"
    for content in (b"{one", b"{two"):
        path.write_bytes(content)
        assert load_json(path) is None
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"{one", b"{two"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quotas.json.corrupt-20260509T120000Z",
                                                         "quotas.json.corrupt-20260509T120000Z-1"]


def test_unreadable_path_is_none_not_a_crash(tmp_path, caplog):
    folder_in_the_way = tmp_path / "breakers.json"
    folder_in_the_way.mkdir()
    with caplog.at_level(logging.WARNING, logger="addons.config.statefile"):
        assert load_json(folder_in_the_way) is None
    assert folder_in_the_way.is_dir()  # not renamed: it is not a corrupt state file
    assert any("cannot read" in r.getMessage() for r in caplog.records)
