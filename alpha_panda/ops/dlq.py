"""Dead-letter queues: list, show, replay.

A DLQ record (written by :meth:`alpha_panda.runtime.StageContext.dead_letter`) carries the
original record's key and bytes unchanged, plus ``x-*`` headers naming the error, the
stage, the attempts and where the record came from. Replay re-produces key and bytes to
the original topic; the DLQ itself is never modified (the log is append-only), so the
replay output names every DLQ offset it replayed for the operator's notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from alpha_panda.ops import (
    EXIT_USAGE,
    OpsError,
    broker_error,
    describe_error,
    format_ms,
    plain_consumer,
    read_range,
    topic_partitions,
    watermarks,
)
from alpha_panda.producer import start_producer
from alpha_panda.settings import Settings
from alpha_panda.topics import ALL_TOPICS_BY_NAME, DLQ_SUFFIX, dlq_name, partitions_of

H_ERROR_TYPE = "x-error-type"
H_ERROR_MESSAGE = "x-error-message"
H_STAGE = "x-stage"
H_ATTEMPTS = "x-attempts"
H_ORIGINAL_TOPIC = "x-original-topic"
H_ORIGINAL_PARTITION = "x-original-partition"
H_ORIGINAL_OFFSET = "x-original-offset"

LIST_MESSAGE_CHARS = 120
SHOW_VALUE_BYTES = 64 * 1024


def resolve(name: str) -> tuple[str, str]:
    """``(original topic, DLQ topic)`` for either spelling; exit 2 naming the known ones."""
    base = name.removesuffix(DLQ_SUFFIX)
    if base in ALL_TOPICS_BY_NAME:
        return base, dlq_name(base)
    known = ", ".join(sorted(ALL_TOPICS_BY_NAME))
    raise OpsError(
        f"unknown topic {name!r}; known: {known} (or any of them with {DLQ_SUFFIX!r})",
        code=EXIT_USAGE,
    )


def known_dlqs() -> list[tuple[str, str]]:
    return [(name, dlq_name(name)) for name in ALL_TOPICS_BY_NAME]


def safe_text(raw: bytes | str | None, limit: int | None = None) -> str:
    """Printable, unambiguous text: a terminal never sees a control character, an escape
    sequence or a bidi override from a record.

    Printable UTF-8 characters stay as they are; a backslash is doubled; any other
    character is escaped (``\\x1b``, ``\\u202e``) and a byte that is not UTF-8 shows as
    ``\\xNN``, so the output maps back to exactly one byte string.
    """
    if raw is None:
        return "<none>"
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    truncated = limit is not None and len(data) > limit
    if truncated:
        data = data[:limit]
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out) + ("..." if truncated else "")


@dataclass(frozen=True)
class DlqRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def from_consumer_record(cls, r: Any) -> DlqRecord:
        return cls(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            timestamp_ms=r.timestamp,
            key=r.key,
            value=r.value,
            headers=tuple((str(k), bytes(v or b"")) for k, v in r.headers),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def original_topic(self) -> str | None:
        return self.header(H_ORIGINAL_TOPIC)

    def original_position(self) -> str:
        return (
            f"{self.original_topic or '?'}[{self.header(H_ORIGINAL_PARTITION) or '?'}]"
            f"@{self.header(H_ORIGINAL_OFFSET) or '?'}"
        )

    def list_line(self) -> str:
        message = self.header(H_ERROR_MESSAGE)
        return "\t".join(
            (
                str(self.offset),
                self.original_position(),
                safe_text(self.header(H_ERROR_TYPE) or "?"),
                safe_text(self.header(H_STAGE) or "?"),
                safe_text(self.header(H_ATTEMPTS) or "?"),
                safe_text(message, LIST_MESSAGE_CHARS) if message is not None else "-",
            )
        )

    def show_lines(self) -> list[str]:
        lines = [
            f"{self.topic}[{self.partition}]@{self.offset}",
            f"timestamp: {format_ms(self.timestamp_ms)}",
            "headers:",
        ]
        lines += [f"  {safe_text(k)}: {safe_text(v)}" for k, v in self.headers] or ["  (none)"]
        key = "<none>" if self.key is None else f"{safe_text(self.key)} ({len(self.key)} bytes)"
        lines.append(f"key: {key}")
        if self.value is None:
            lines.append("value: <none> (tombstone)")
        else:
            size = len(self.value)
            shown = f", first {SHOW_VALUE_BYTES} shown" if size > SHOW_VALUE_BYTES else ""
            lines.append(f"value ({size} bytes{shown}, non-printable bytes escaped):")
            lines.append(safe_text(self.value, SHOW_VALUE_BYTES))
        return lines


LIST_HEADER = "\t".join(("dlq_offset", "original", "error_type", "stage", "attempts", "message"))


@dataclass(frozen=True)
class DlqSummary:
    original: str
    dlq: str
    exists: bool
    count: int = 0
    oldest_ms: int | None = None
    newest_ms: int | None = None

    def line(self) -> str:
        if not self.exists:
            return f"{self.dlq}\tmissing (alpha-panda topics create)"
        if self.count == 0:
            return f"{self.dlq}\t0 records"
        return (
            f"{self.dlq}\t{self.count} records\toldest {format_ms(self.oldest_ms)}"
            f"\tnewest {format_ms(self.newest_ms)}"
        )


async def summarize(settings: Settings) -> list[DlqSummary]:
    """Count and age of every DLQ, by reading it: exact even when transaction markers
    (exactly-once stages) occupy offsets. DLQs are small unless something is very wrong,
    and then an exact count is what the operator needs."""
    out: list[DlqSummary] = []
    try:
        present = await topic_partitions(settings, [dlq for _, dlq in known_dlqs()])
        tps = [TopicPartition(dlq, p) for dlq, partitions in present.items() for p in partitions]
        stamps: dict[str, list[int]] = {dlq: [] for dlq in present}
        if tps:  # (aiokafka's stop() raises if a group-less consumer was never assigned)
            async with plain_consumer(settings, client_id="alpha-panda.ops.dlq") as consumer:
                for tp, (begin, end) in (await watermarks(consumer, tps)).items():
                    records = await read_range(consumer, tp, begin, end)
                    stamps[tp.topic] += [r.timestamp for r in records]
        for original, dlq in known_dlqs():
            if dlq not in present:
                out.append(DlqSummary(original, dlq, exists=False))
                continue
            seen = stamps[dlq]
            oldest, newest = (min(seen), max(seen)) if seen else (None, None)
            out.append(DlqSummary(original, dlq, True, len(seen), oldest, newest))
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    return out


async def read_dlq(settings: Settings, dlq: str) -> list[DlqRecord]:
    """Every record of one DLQ, from the log start to the high watermark."""
    records: list[DlqRecord] = []
    try:
        partitions = (await topic_partitions(settings, [dlq])).get(dlq)
        if partitions is None:
            raise OpsError(f"{dlq} does not exist on the broker (alpha-panda topics create)")
        async with plain_consumer(settings, client_id="alpha-panda.ops.dlq") as consumer:
            tps = [TopicPartition(dlq, p) for p in partitions]
            for tp, (begin, end) in (await watermarks(consumer, tps)).items():
                raw = await read_range(consumer, tp, begin, end)
                records += [DlqRecord.from_consumer_record(r) for r in raw]
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    return records


def select(records: Sequence[DlqRecord], offsets: Sequence[int] | None) -> list[DlqRecord]:
    """The records at ``offsets`` (all when None), refusing if any offset is absent.

    DLQs have one partition (topics.DLQ_PARTITIONS), so an offset names one record.
    """
    if offsets is None:
        return list(records)
    by_offset = {r.offset: r for r in records}
    missing = sorted(set(offsets) - by_offset.keys())
    if missing:
        present = f"offsets {records[0].offset}..{records[-1].offset}" if records else "no records"
        raise OpsError(
            f"no record at offset {', '.join(map(str, missing))} (the DLQ holds {present})"
        )
    return [by_offset[o] for o in sorted(set(offsets))]


def check_replayable(records: Sequence[DlqRecord], original: str) -> None:
    """Refuse the whole batch if any record would land anywhere but ``original``."""
    bad = [r for r in records if r.original_topic != original]
    if bad:
        detail = ", ".join(f"@{r.offset} says {r.original_topic!r}" for r in bad[:5])
        raise OpsError(
            f"refusing: {len(bad)} record(s) do not name {original!r} in {H_ORIGINAL_TOPIC} "
            f"({detail}); nothing replayed"
        )


@dataclass(frozen=True)
class Replayed:
    record: DlqRecord
    target: str
    partition: int | None
    offset: int | None

    def line(self, dry_run: bool) -> str:
        size = 0 if self.record.value is None else len(self.record.value)
        key = safe_text(self.record.key)
        source = f"{self.record.topic}@{self.record.offset}"
        if dry_run:
            return f"would replay {source} -> {self.target} key={key} ({size} bytes)"
        note = ""
        original_partition = self.record.header(H_ORIGINAL_PARTITION)
        if original_partition is not None and original_partition != str(self.partition):
            note = f" (originally partition {original_partition})"
        return (
            f"replayed {source} -> {self.target}[{self.partition}]@{self.offset}"
            f" key={key} ({size} bytes){note}"
        )


async def replay(
    settings: Settings, original: str, records: Sequence[DlqRecord], *, dry_run: bool
) -> list[Replayed]:
    """Re-produce key and bytes of ``records`` to ``original`` (acks=all), in DLQ order.

    The key picks the partition, as for every producer in the pipeline, so a replayed
    record lands where its key's state lives.
    """
    check_replayable(records, original)
    partitions_of(original)  # the registry knows it (KeyError is a programming error)
    if dry_run:
        return [Replayed(r, original, None, None) for r in records]
    out: list[Replayed] = []
    try:
        producer = await start_producer(settings, client_id="alpha-panda.ops.dlq-replay")
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    try:
        for record in records:
            meta = await producer.send_and_wait(original, key=record.key, value=record.value)
            out.append(Replayed(record, original, meta.partition, meta.offset))
    except KafkaError as exc:
        done = ", ".join(str(r.record.offset) for r in out) or "none"
        raise OpsError(
            f"replay stopped: {describe_error(exc)}; replayed DLQ offsets so far: {done}"
        ) from None
    finally:
        await producer.stop()
    return out
