"""The snapshot file format: written atomically, read back exactly, damage refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpha_panda.log_snapshot import (
    SavedRecord,
    Snapshot,
    SnapshotError,
    read_snapshot,
    write_snapshot,
)


def _snapshot() -> tuple[Snapshot, list[SavedRecord]]:
    records = [
        SavedRecord(0, 1_700_000_000_000, b"k", b"v0", (("x-stage", b"risk"),)),
        SavedRecord(1, 1_700_000_000_001, None, b"v1"),
        SavedRecord(0, 1_700_000_000_002, b"k2", None, (("a", b""), ("b", b"\x00\xff"))),
    ]
    snapshot = Snapshot(
        log_id="log-1",
        saved_at="2026-11-30T07:00:00+00:00",
        topics={"t": 2},
        ends={"t:0": 2, "t:1": 1},
        groups={"g": {"t:0": 2}},
    )
    return snapshot, records


def test_roundtrip_is_exact(tmp_path: Path) -> None:
    snapshot, records = _snapshot()
    path = tmp_path / "broker" / "log.snapshot"
    write_snapshot(path, snapshot, iter(records))
    header, partitions = read_snapshot(path)
    assert header == snapshot and header.records == 3
    assert [(tp.topic, tp.partition) for tp, _ in partitions] == [("t", 0), ("t", 1)]
    assert partitions[0][1] == records[:2]
    assert partitions[1][1] == records[2:]
    assert not path.with_name("log.snapshot.tmp").exists()


def test_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    snapshot, records = _snapshot()
    path = tmp_path / "log.snapshot"
    write_snapshot(path, snapshot, iter(records))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(SnapshotError, match="truncated"):
        read_snapshot(path)
    path.write_bytes(data + b"x")
    with pytest.raises(SnapshotError, match="after the last record"):
        read_snapshot(path)
    path.write_bytes(b"something else")
    with pytest.raises(SnapshotError, match="not an Alpha Panda log snapshot"):
        read_snapshot(path)


def test_partitions_keep_their_records_whatever_their_names_sort_as(tmp_path: Path) -> None:
    # "t:10" sorts before "t:2" as text: the records must follow the header's order.
    snapshot = Snapshot(
        log_id="x", saved_at="now", topics={"t": 11}, ends={"t:2": 1, "t:10": 2}, groups={}
    )
    records = [SavedRecord(0, 1, b"p2", b"a"), SavedRecord(0, 2, b"p10", b"b")]
    records.append(SavedRecord(1, 3, b"p10", b"c"))
    write_snapshot(tmp_path / "s", snapshot, iter(records))
    _header, partitions = read_snapshot(tmp_path / "s")
    by_partition = {tp.partition: [r.key for r in rs] for tp, rs in partitions}
    assert by_partition == {2: [b"p2"], 10: [b"p10", b"p10"]}
