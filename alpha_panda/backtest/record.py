"""market.ticks as backtest data: read it (from an offset or a time) and write JSON Lines.

Reads every partition with a plain consumer (no group, nothing committed) up to the high
watermarks taken before reading, so a topic that keeps growing still ends. Partitions are
merged into one stream ordered by the envelope's event time (then partition, offset):
that is the order the feed produced them in, which is the order a backtest replays. The
file holds each record's value bytes unchanged, so the envelope ids are the live ones and
a backtest derives the same signal and fill ids as the pipeline did.
"""

from __future__ import annotations

import gzip
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from aiokafka import TopicPartition

from alpha_panda.backtest.sources import BadInput, Problem, SourceItem
from alpha_panda.ops import OpsError, plain_consumer, read_range, topic_partitions, watermarks
from alpha_panda.settings import Settings
from alpha_panda.topics import MARKET_TICKS
from models.codec import DecodeError, decode
from models.envelope import EventType
from models.events import MarketTick


@dataclass(frozen=True)
class TopicTick:
    ts: datetime
    partition: int
    offset: int
    value: bytes
    tick: MarketTick
    event_id: str

    @property
    def where(self) -> str:
        return f"{MARKET_TICKS.name}[{self.partition}]@{self.offset}"


@dataclass
class TopicRead:
    ticks: list[TopicTick]
    problems: list[Problem]


async def read_market_ticks(
    settings: Settings, *, from_offset: int = 0, from_time: datetime | None = None
) -> TopicRead:
    """market.ticks from ``from_offset`` in every partition, keeping ticks whose event time
    is at or after ``from_time``; merged in event-time order."""
    partitions = (await topic_partitions(settings, [MARKET_TICKS.name])).get(MARKET_TICKS.name)
    if partitions is None:
        raise OpsError(f"topic {MARKET_TICKS.name} does not exist at {settings.broker.url}")
    per_partition: list[list[TopicTick]] = []
    problems: list[Problem] = []
    async with plain_consumer(settings, client_id="alpha-panda-record") as consumer:
        tps = [TopicPartition(MARKET_TICKS.name, p) for p in partitions]
        marks = await watermarks(consumer, tps)
        for tp in tps:
            begin, end = marks[tp]
            kept: list[TopicTick] = []
            for record in await read_range(consumer, tp, max(begin, from_offset), end):
                where = f"{tp.topic}[{tp.partition}]@{record.offset}"
                try:
                    envelope = decode(
                        record.value,
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=record.offset,
                        expect=EventType.MARKET_TICK,
                        key=record.key,
                    )
                except DecodeError as exc:
                    problems.append(
                        Problem(where, BadInput.MALFORMED, f"{exc.failure.value}: {exc.reason}")
                    )
                    continue
                tick: MarketTick = envelope.data
                if from_time is not None and envelope.ts < from_time:
                    continue
                kept.append(
                    TopicTick(
                        envelope.ts, tp.partition, record.offset, record.value, tick, envelope.id
                    )
                )
            per_partition.append(kept)
    merged = list(heapq.merge(*per_partition, key=lambda t: (t.ts, t.partition, t.offset)))
    return TopicRead(merged, problems)


def topic_items(read: TopicRead) -> Iterator[SourceItem]:
    """A read topic as a backtest source (its unreadable records as problems, first)."""
    yield from read.problems
    for t in read.ticks:
        yield t.where, t.tick, t.event_id


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "wb"))
    return path.open("wb")


def write_jsonl(read: TopicRead, path: Path) -> int:
    """Write the ticks' record values, one per line (gzip when ``path`` ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_binary(path) as out:
        for t in read.ticks:
            out.write(t.value.rstrip(b"\n") + b"\n")
    return len(read.ticks)
