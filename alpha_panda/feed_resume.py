"""Where the mock feed's random walk left off: the last tick it published per instrument.

A restarted feed that began again at the configured start prices would make every
instrument jump back (by more than a price band, after a long run) and the strategies
would trade on the jump. So at start the feed reads, for each of its instruments, the
last tick on ``market.ticks`` that it published itself (envelope ``source`` is the feed's
stage name: a tick produced by anything else, a test or a replay, is not the walk) and
continues from that price and cumulative volume.

Ticks are keyed by instrument, so each instrument lives in one partition (aiokafka's
default partitioner over the key, as the feed's producer uses). Each such partition is
read backwards in windows from its confirmed end (the embedded broker lists end offsets
short, see end_offsets.py) until its instruments are found, at most ``MAX_SCAN`` records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from alpha_panda.settings import Settings
from alpha_panda.topics import MARKET_TICKS
from alpha_panda.workarounds.end_offsets import watermarks
from models.codec import DecodeError, decode
from models.events import MarketTick

WINDOW = 1_000
MAX_SCAN = 50_000  # per partition; beyond this an instrument starts afresh


@dataclass(frozen=True)
class LastTick:
    price: Decimal
    volume: int


def partition_of(token: int, partitions: int) -> int:
    everything = list(range(partitions))
    return int(DefaultPartitioner()(str(token).encode(), everything, everything))


async def last_published(
    settings: Settings, tokens: set[int], *, source: str, stall_s: float = 15.0
) -> dict[int, LastTick]:
    """The last tick ``source`` published per token; tokens never published are absent."""
    by_partition: dict[int, set[int]] = defaultdict(set)
    for token in tokens:
        by_partition[partition_of(token, MARKET_TICKS.partitions)].add(token)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker.bootstrap_servers,
        client_id="alpha-panda-feed-resume",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[int, LastTick] = {}
    try:
        tps = [TopicPartition(MARKET_TICKS.name, p) for p in sorted(by_partition)]
        marks = await watermarks(consumer, tps, stall_s=stall_s)
        for tp in tps:
            begin, end = marks[tp]
            wanted = set(by_partition[tp.partition])
            high = end
            while wanted and high > begin and end - high < MAX_SCAN:
                low = max(begin, high - WINDOW)
                window = await _read(consumer, tp, low, high, stall_s)
                latest: dict[int, LastTick] = {}
                for tick in _ticks(window, source):
                    if tick.instrument_token in wanted:
                        latest[tick.instrument_token] = LastTick(tick.last_price, tick.volume)
                found.update(latest)
                wanted -= set(latest)
                high = low
    finally:
        await consumer.stop()
    return found


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, low: int, high: int, stall_s: float
) -> list[object]:
    consumer.assign([tp])
    consumer.seek(tp, low)
    records: list[object] = []
    position = low
    idle = 0.0
    while position < high:
        batch = await consumer.getmany(tp, timeout_ms=500)
        messages = batch.get(tp, [])
        if not messages:
            idle += 0.5
            if idle > stall_s:
                break
            continue
        for message in messages:
            if message.offset < high:
                records.append(message)
        position = messages[-1].offset + 1
    return records


def _ticks(records: list[object], source: str) -> list[MarketTick]:
    ticks = []
    for record in records:
        try:
            envelope = decode(
                record.value,  # type: ignore[attr-defined]
                topic=MARKET_TICKS.name,
                expect=MARKET_TICKS.event_type,
            )
        except DecodeError:
            continue  # a poison pill is not a price
        if envelope.source == source:
            ticks.append(envelope.data)
    return ticks
