"""The embedded broker's log kept across clean stops: saved whole, restored exactly.

The embedded broker (Tansu 0.6.0) keeps its log in memory: ``memory://`` is the only
fast storage engine compiled in. Its ``s3://`` engine is durable but lists a
partition's objects on every fetch; against a local S3 server (s3rver 3.7.1) the
pipeline ran at ~40 ticks/s with the default fetch wait and at best 430 ticks/s with a
2 s fetch wait and 200 ms linger (p50 tick-to-portfolio ~1 s), below the 500 ticks/s
needed (measured 2026-11-30; docs/PERFORMANCE.md). So the log is made to survive
*clean* stops instead:

- :func:`save_log` reads every topic's records (offset, key, value, headers, timestamp)
  from the log start to the confirmed high watermark, and every consumer group's
  committed offsets on those partitions, into one file, written to a temporary name,
  fsynced and renamed: a crash while saving leaves the previous snapshot intact.
- :func:`restore_log` creates the topics with their partition counts on an empty
  broker, produces each partition's records in order (one request in flight per
  broker, so order holds), checks that every record landed at its saved offset, and
  commits each group's offsets with a group-less manual assignment.

What a broker *crash* still loses: everything written since the last clean stop. The
supervisor then restores the last snapshot under a new log id (see
:mod:`alpha_panda.log_identity`), so the Redis mirror drops state that the log no
longer holds. The embedded broker's log starts at offset 0 and has no gaps (no
retention, no compaction, no transactions), which is what makes "same offsets"
possible; a snapshot of a log that does not is refused rather than restored shifted.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from alpha_panda.workarounds.end_offsets import watermarks

MAGIC = b"ALPHA-PANDA-LOG 1\n"
_RECORD = struct.Struct(">qqii")  # offset, timestamp ms, key length, value length
_HEADERS = struct.Struct(">h")
_HEADER = struct.Struct(">ii")
_ABSENT = -1  # a null key or value


class SnapshotError(RuntimeError):
    """A snapshot cannot be saved or restored exactly."""


@dataclass(frozen=True)
class SavedRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Snapshot:
    """What a snapshot file holds, records aside."""

    log_id: str
    saved_at: str
    topics: dict[str, int]  # name -> partitions
    ends: dict[str, int]  # "topic:partition" -> high watermark
    groups: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> tp -> offset

    @property
    def records(self) -> int:
        return sum(self.ends.values())


def _tp_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _parse_tp(key: str) -> TopicPartition:
    topic, _, partition = key.rpartition(":")
    return TopicPartition(topic, int(partition))


def write_snapshot(path: Path, snapshot: Snapshot, records: Iterator[SavedRecord]) -> None:
    """Write atomically: a temporary file, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Key order matters: the records follow in the order of ``snapshot.ends``.
    header = json.dumps(snapshot.__dict__).encode()
    with tmp.open("wb") as out:
        out.write(MAGIC)
        out.write(struct.pack(">i", len(header)))
        out.write(header)
        for record in records:
            _write_record(out, record)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_record(out: IO[bytes], record: SavedRecord) -> None:
    key, value = record.key, record.value
    out.write(
        _RECORD.pack(
            record.offset,
            record.timestamp,
            _ABSENT if key is None else len(key),
            _ABSENT if value is None else len(value),
        )
    )
    if key is not None:
        out.write(key)
    if value is not None:
        out.write(value)
    out.write(_HEADERS.pack(len(record.headers)))
    for name, data in record.headers:
        encoded = name.encode()
        out.write(_HEADER.pack(len(encoded), len(data)))
        out.write(encoded)
        out.write(data)


def read_snapshot(path: Path) -> tuple[Snapshot, list[tuple[TopicPartition, list[SavedRecord]]]]:
    """The snapshot's header and each partition's records, in the order they were saved."""
    with path.open("rb") as src:
        if src.read(len(MAGIC)) != MAGIC:
            raise SnapshotError(f"{path} is not an Alpha Panda log snapshot")
        (size,) = struct.unpack(">i", _exactly(src, 4))
        snapshot = Snapshot(**json.loads(_exactly(src, size)))
        partitions = []
        for key, end in snapshot.ends.items():
            tp = _parse_tp(key)
            partitions.append((tp, [_read_record(src) for _ in range(end)]))
        if src.read(1):
            raise SnapshotError(f"{path}: data after the last record")
    return snapshot, partitions


def _exactly(src: IO[bytes], n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise SnapshotError("snapshot file is truncated")
    return data


def _read_record(src: IO[bytes]) -> SavedRecord:
    offset, timestamp, key_len, value_len = _RECORD.unpack(_exactly(src, _RECORD.size))
    key = None if key_len == _ABSENT else _exactly(src, key_len)
    value = None if value_len == _ABSENT else _exactly(src, value_len)
    (count,) = _HEADERS.unpack(_exactly(src, _HEADERS.size))
    headers = []
    for _ in range(count):
        name_len, data_len = _HEADER.unpack(_exactly(src, _HEADER.size))
        headers.append((_exactly(src, name_len).decode(), _exactly(src, data_len)))
    return SavedRecord(offset, timestamp, key, value, tuple(headers))


async def _layout(admin: AIOKafkaAdminClient) -> dict[str, int]:
    names = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
    if not names:
        return {}
    layout = {}
    for meta in await admin.describe_topics(names):
        if meta.get("error_code", 0) == 0:
            layout[meta["topic"]] = len(meta.get("partitions", []))
    return layout


async def save_log(bootstrap: str, path: Path, log_id: str, *, stall_s: float = 30.0) -> Snapshot:
    """Save every topic's records and every group's committed offsets to ``path``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        layout = await _layout(admin)
        tps = [TopicPartition(t, p) for t, n in layout.items() for p in range(n)]
        groups: dict[str, dict[str, int]] = {}
        # Tansu 0.6.0 mis-encodes OffsetFetch for "all partitions" (aiokafka 0.14.0 drops
        # the connection), so the partitions are named.
        for group, _protocol in await admin.list_consumer_groups():
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
            committed = {
                _tp_key(tp): meta.offset for tp, meta in offsets.items() if meta.offset >= 0
            }
            if committed:
                groups[group] = committed
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="alpha-panda-log-snapshot",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        marks = await watermarks(consumer, tps, stall_s=stall_s)
        for tp, (begin, _end) in marks.items():
            if begin != 0:
                raise SnapshotError(f"{_tp_key(tp)} starts at {begin}, not 0: cannot restore it")
        ends = {tp: end for tp, (_, end) in marks.items()}
        records = await _read_all(consumer, ends, stall_s)
    finally:
        await consumer.stop()
    snapshot = Snapshot(
        log_id=log_id,
        saved_at=datetime.now(UTC).isoformat(),
        topics=layout,
        ends={_tp_key(tp): end for tp, end in ends.items()},
        groups=groups,
    )
    write_snapshot(path, snapshot, (r for tp in ends for r in records[tp]))
    return snapshot


async def _read_all(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], stall_s: float
) -> dict[TopicPartition, list[SavedRecord]]:
    records: dict[TopicPartition, list[SavedRecord]] = {tp: [] for tp in ends}
    pending = {tp for tp, end in ends.items() if end > 0}
    if not pending:
        return records
    consumer.assign(list(pending))
    for tp in pending:
        consumer.seek(tp, 0)
    last_progress = time.monotonic()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, messages in batch.items():
            saved = records[tp]
            for m in messages:
                if m.offset >= ends[tp]:
                    break
                if m.offset != len(saved):
                    raise SnapshotError(
                        f"{_tp_key(tp)}: offset {m.offset} where {len(saved)} was expected"
                    )
                saved.append(
                    SavedRecord(m.offset, m.timestamp, m.key, m.value, tuple(m.headers or ()))
                )
            if len(saved) >= ends[tp]:
                pending.discard(tp)
            last_progress = time.monotonic()
        if pending and time.monotonic() - last_progress > stall_s:
            raise SnapshotError(f"no records from {sorted(map(_tp_key, pending))} in {stall_s}s")
    return records


async def restore_log(bootstrap: str, path: Path) -> Snapshot:
    """Recreate the saved log on an empty broker: same topics, offsets and group offsets."""
    snapshot, partitions = read_snapshot(path)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = await _layout(admin)
        if existing:
            raise SnapshotError(
                f"the broker at {bootstrap} is not empty ({len(existing)} topics): "
                "a snapshot is restored only into an empty log"
            )
        if snapshot.topics:
            await admin.create_topics([NewTopic(name, n, 1) for name, n in snapshot.topics.items()])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="alpha-panda-log-restore",
        acks="all",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    try:
        for tp, records in partitions:
            futures = [
                await producer.send(
                    tp.topic,
                    value=r.value,
                    key=r.key,
                    partition=tp.partition,
                    timestamp_ms=r.timestamp,
                    headers=list(r.headers) or None,
                )
                for r in records
            ]
            for record, future in zip(records, futures, strict=True):
                meta: Any = await future
                if meta.offset != record.offset:
                    raise SnapshotError(
                        f"{_tp_key(tp)}: record saved at offset {record.offset} "
                        f"landed at {meta.offset}"
                    )
    finally:
        await producer.stop()
    for group, offsets in snapshot.groups.items():
        await _commit(bootstrap, group, offsets)
    return snapshot


async def _commit(bootstrap: str, group: str, offsets: dict[str, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = {_parse_tp(key): offset for key, offset in offsets.items()}
        consumer.assign(list(tps))  # manual assignment: commit without joining the group
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in tps.items()})
    finally:
        await consumer.stop()
