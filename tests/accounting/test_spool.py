"""The spool of a team gateway's usage rows (addons/accounting/spool.py): appended lines read back in
order a batch at a time, consumed and compacted, kept across a reopen (a `kill -9`), a line cut short by
a crash cut off and counted, bounded, private, and one slot per running replica. Against a real
PostgreSQL: tests/gateway/test_usage_postgres.py."""

from __future__ import annotations

import json
import os

import pytest

from addons.accounting import spool as spool_module
from addons.accounting.spool import SLOTS, Spool, SpoolError


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"request_id": f"r{n}", "attempt": 0, "agent": "claude", "cost_usd": 0.001 * n}
            for n in range(start, start + count)]


def ids(found: list[dict]) -> list[str]:
    return [row["request_id"] for row in found]


def test_rows_come_back_in_order_a_batch_at_a_time_and_the_file_is_private(tmp_path):
    spool = Spool.claim(tmp_path / "state")
    assert spool.append(rows(7)) == 7 and spool.append(rows(5, 7)) == 5 and spool.pending == 12
    assert oct(spool.path.stat().st_mode & 0o777) == "0o600"
    first, end = spool.read(5)
    assert ids(first) == [f"r{n}" for n in range(5)]
    assert ids(spool.read(5)[0]) == ids(first)  # not consumed: read again
    spool.consumed(end)
    assert spool.pending == 7
    spool.append(rows(1, 12))  # a row finishing meanwhile goes behind
    rest, end = spool.read(100)
    assert ids(rest) == [f"r{n}" for n in range(5, 13)]
    spool.consumed(end)
    spool.compact()
    assert spool.pending == 0 and spool.path.stat().st_size == 0 and spool.read(10)[0] == []
    spool.close()


def test_compaction_keeps_the_lines_still_waiting(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_module, "COMPACT_BYTES", 200)
    spool = Spool.claim(tmp_path)
    spool.append(rows(20))
    head, end = spool.read(10)
    spool.consumed(end)
    spool.compact()  # 10 lines written (past 200 bytes), 10 waiting (also past it): nothing moves yet
    assert spool.path.stat().st_size == spool.size and spool.pending == 10
    tail, end = spool.read(8)
    spool.consumed(end)
    spool.compact()  # now 2 wait: they move to the head of the file
    assert spool.pending == 2 and ids(spool.read(10)[0]) == ["r18", "r19"]
    assert spool.path.read_bytes().count(b"\n") == 2
    spool.close()


def test_a_reopened_spool_keeps_its_rows_and_cuts_off_a_line_cut_short(tmp_path):
    """What a `kill -9` leaves: every appended line (the kernel has them), maybe half a line at the end."""
    spool = Spool.claim(tmp_path)
    spool.append(rows(3))
    fd = os.open(spool.path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, json.dumps(rows(1, 3)[0]).encode()[:20])
    os.close(fd)
    spool.close()
    again = Spool.claim(tmp_path)
    assert again.path == spool.path and again.pending == 3 and again.torn == 1
    again.append(rows(1, 4))  # does not run into the cut line
    assert ids(again.read(10)[0]) == ["r0", "r1", "r2", "r4"] and again.torn == 1
    again.close()


def test_a_full_spool_refuses_and_counts_the_rows_past_its_bound(tmp_path):
    four = sum(len(json.dumps(row, separators=(",", ":"))) + 1 for row in rows(4))
    spool = Spool.claim(tmp_path, max_bytes=four + 2)
    assert spool.append(rows(3)) == 3
    assert spool.append(rows(3, 3)) == 1 and spool.refused == 2 and spool.pending == 4
    assert spool.path.stat().st_size == four
    spool.close()


def test_each_running_replica_has_its_own_slot_and_a_released_one_is_an_orphan(tmp_path):
    held = [Spool.claim(tmp_path) for _ in range(SLOTS)]
    assert len({spool.path for spool in held}) == SLOTS
    with pytest.raises(SpoolError, match="held by running gateways"):
        Spool.claim(tmp_path)
    held[3].append(rows(2))
    assert list(held[0].orphans()) == []  # every other slot is still held
    held[3].close()
    [orphan] = list(held[0].orphans())
    assert orphan.path == held[3].path and orphan.pending == 2  # not replayed, so its file stays
    assert held[3].path.exists()
    for spool in held:
        spool.close()


def test_the_bound_is_on_what_waits_so_written_lines_make_room(tmp_path):
    four = sum(len(json.dumps(row, separators=(",", ":"))) + 1 for row in rows(4))
    spool = Spool.claim(tmp_path, max_bytes=four + 2)
    assert spool.append(rows(4)) == 4 and spool.append(rows(1, 4)) == 0
    _, end = spool.read(3)
    spool.consumed(end)  # three are in the database; the file is as long as before
    assert spool.append(rows(3, 5)) == 3 and spool.pending == 4
    spool.close()


def test_a_crash_in_the_middle_of_a_compaction_loses_no_waiting_line(tmp_path):
    """The carry file is written whole (statefile.save_bytes: a temporary name, then renamed) before the
    spool is cut: a crash after the cut finds the carry and makes it the spool; one before the rename
    finds only a half temporary file, and the spool untouched."""
    spool = Spool.claim(tmp_path)
    spool.append(rows(5))
    spool.close()
    carry = tmp_path / "usage-spool-1.jsonl.carry"
    carry.write_bytes(b"".join(json.dumps(row).encode() + b"\n" for row in rows(2, 3)))
    (tmp_path / "usage-spool-1.jsonl").write_bytes(b"")  # the crash came right after the cut
    again = Spool.claim(tmp_path)
    assert ids(again.read(10)[0]) == ["r3", "r4"] and not carry.exists()
    again.close()
    half = tmp_path / ".usage-spool-1.jsonl.carry.x1y2z3.tmp"
    half.write_bytes(b'{"request_id": "r9", "att')  # the crash came while the carry was being written
    third = Spool.claim(tmp_path)
    assert ids(third.read(10)[0]) == ["r3", "r4"] and not half.exists()
    third.close()
