"""The spool of a team gateway's usage rows (addons/accounting/spool.py): on disk and private, read back in
order a batch at a time, a line cut short by a crash skipped and counted, bounded, and one slot per
running replica. Against a real PostgreSQL: tests/gateway/test_usage_postgres.py."""

from __future__ import annotations

import json

import pytest

from addons.accounting.spool import SLOTS, Spool, SpoolError


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"request_id": f"r{n}", "attempt": 0, "agent": "claude", "cost_usd": 0.001 * n}
            for n in range(start, start + count)]


def test_rows_come_back_in_order_a_batch_at_a_time_and_the_file_is_private(tmp_path):
    spool = Spool.claim(tmp_path / "state")
    assert spool.append(rows(7)) == 7 and spool.append(rows(5, 7)) == 5 and len(spool) == 12
    assert oct(spool.path.stat().st_mode & 0o777) == "0o600"
    batches = list(spool.batches(size=5))
    assert [len(batch) for batch in batches] == [5, 5, 2]
    assert [row["request_id"] for batch in batches for row in batch] == [f"r{n}" for n in range(12)]
    spool.clear()
    assert len(spool) == 0 and spool.path.stat().st_size == 0 and list(spool.batches()) == []
    spool.close()


def test_a_reopened_spool_keeps_its_rows_and_skips_a_line_cut_short(tmp_path):
    spool = Spool.claim(tmp_path)
    spool.append(rows(3))
    spool.close()
    with open(tmp_path / "usage-spool-1.jsonl", "ab") as file:  # the gateway died in the middle of a write
        file.write(json.dumps(rows(1, 3)[0]).encode()[:20])
    again = Spool.claim(tmp_path)
    assert again.path == spool.path and len(again) == 3
    assert [row["request_id"] for batch in again.batches() for row in batch] == ["r0", "r1", "r2"]
    assert again.torn == 1
    again.close()


def test_a_full_spool_refuses_and_counts_the_rows_past_its_bound(tmp_path):
    four = sum(len(json.dumps(row, separators=(",", ":"))) + 1 for row in rows(4))
    spool = Spool.claim(tmp_path, max_bytes=four + 2)
    assert spool.append(rows(3)) == 3
    assert spool.append(rows(3, 3)) == 1 and spool.refused == 2 and len(spool) == 4
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
    assert orphan.path == held[3].path  # yielded with its rows; not emptied, so its file stays
    assert held[3].path.exists()
    for spool in held:
        spool.close()
