"""Operator tools over the log: DLQ inspection and replay (:mod:`.dlq`), consumer-group
offset resets (:mod:`.replay`) and the portfolio rebuild (:mod:`.rebuild`).

Shared here: the error every tool raises for a one-line CLI answer, and reading a
partition range with a plain consumer (no group, nothing committed) up to a high
watermark taken before reading, so a topic that keeps growing still terminates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from alpha_panda.admin import admin_client, existing_partitions
from alpha_panda.settings import Settings
from alpha_panda.workarounds import end_offsets

EXIT_OK = 0
EXIT_REFUSED = 1  # not found, refused, or a difference that needs an operator
EXIT_USAGE = 2

# How long a read may go without progress before it gives up: a partition below its high
# watermark always has something to fetch, so silence this long means the broker is sick.
READ_STALL_S = 15.0


class OpsError(Exception):
    """A refusal or failure the CLI prints as one line and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line (aiokafka's messages often start with the type)."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def unreachable(settings: Settings, exc: BaseException) -> OpsError:
    return OpsError(f"cannot reach the broker at {settings.broker.url}: {describe_error(exc)}")


def broker_error(settings: Settings, exc: BaseException) -> OpsError:
    return OpsError(f"broker at {settings.broker.url} failed: {describe_error(exc)}")


@asynccontextmanager
async def plain_consumer(
    settings: Settings, *, client_id: str, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer that never subscribes (callers assign partitions themselves).

    With ``group_id`` it can commit offsets for that group without joining it.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker.bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15_000,
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise unreachable(settings, exc) from None
    try:
        yield consumer
    finally:
        await consumer.stop()


async def topic_partitions(settings: Settings, names: list[str]) -> dict[str, list[int]]:
    """The partitions of each of ``names`` that exists on the broker (absent: missing).

    Asked of an admin client: a consumer's own metadata narrows to what it has assigned.
    """
    admin = admin_client(settings)
    try:
        await admin.start()
        counts = await existing_partitions(admin, names)
    except KafkaError as exc:
        raise unreachable(settings, exc) from None
    finally:
        await admin.close()
    return {name: list(range(count)) for name, count in counts.items()}


async def watermarks(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition]
) -> dict[TopicPartition, tuple[int, int]]:
    """(log start, confirmed high watermark) of each partition; see
    :mod:`alpha_panda.workarounds.end_offsets`.

    Replaces the consumer's assignment.
    """
    try:
        return await end_offsets.watermarks(consumer, tps, stall_s=READ_STALL_S)
    except end_offsets.EndOffsetsUnconfirmed as exc:
        raise OpsError(str(exc)) from None


async def read_range(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
) -> list[Any]:
    """Every record of ``tp`` with ``start <= offset < end``, in offset order.

    Replaces the consumer's assignment with ``tp``. ``end`` is normally a high watermark
    read beforehand; offsets the log skips (transaction markers) are stepped over.
    """
    if start >= end:
        return []
    consumer.assign([tp])
    consumer.seek(tp, start)
    records: list[Any] = []
    position = start
    last_progress = time.monotonic()
    while position < end:
        batch = await consumer.getmany(tp, timeout_ms=500)
        for record in batch.get(tp, []):
            if record.offset >= end:
                return records
            records.append(record)
        new_position = int(await consumer.position(tp))
        if new_position > position:
            position = new_position
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > READ_STALL_S:
            raise OpsError(
                f"{tp.topic}[{tp.partition}]: nothing fetched from offset {position} "
                f"towards the high watermark {end} in {READ_STALL_S:.0f}s"
            )
    return records


def format_ms(timestamp_ms: int | None) -> str:
    if timestamp_ms is None or timestamp_ms < 0:
        return "-"
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
