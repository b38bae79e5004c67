"""An envelope sent to market.ticks on the embedded broker comes back with its key, on the
partition its key chooses."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.producer import send_record, start_producer
from alpha_panda.settings import load_settings
from alpha_panda.topics import MARKET_TICKS, all_topic_layout
from models.codec import decode
from models.envelope import EventType, new_event_id
from models.events import MarketTick

pytestmark = pytest.mark.integration


async def test_topics_create_is_idempotent(broker: EmbeddedBroker) -> None:
    settings = load_settings(broker={"url": broker.bootstrap})
    await ensure_topics(settings)
    second = await ensure_topics(settings)
    assert second.created == []
    assert sorted(second.existing) == sorted(all_topic_layout())
    assert second.mismatched == []
    assert "nothing changed" in second.lines()[-1]


async def test_tick_round_trip_on_the_partition_its_key_chooses(broker: EmbeddedBroker) -> None:
    settings = load_settings(broker={"url": broker.bootstrap})
    await ensure_topics(settings)
    tokens = [256265, 738561, 2953217, 408065, 5633, 3861249]
    producer = await start_producer(settings, client_id="test-roundtrip")
    sent = {}
    try:
        for token in tokens:
            tick = MarketTick(
                instrument_token=token,
                symbol=f"SYM{token}",
                last_price=Decimal("101.25"),
                volume=10,
                exchange_ts=datetime(2026, 1, 5, 4, 0, tzinfo=UTC),
            )
            record = MARKET_TICKS.record(
                tick, event_id=new_event_id(), ts=tick.exchange_ts, source="test"
            )
            await send_record(producer, record)
            sent[record.key] = record
        await producer.flush()
    finally:
        await producer.stop()

    partitioner = DefaultPartitioner()
    all_partitions = list(range(MARKET_TICKS.partitions))
    expected = {key: partitioner(key, all_partitions, all_partitions) for key in sent}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.broker.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(MARKET_TICKS.name, p) for p in all_partitions])
        await consumer.seek_to_beginning()
        seen = {}
        async with asyncio.timeout(20):
            while len(seen) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for tp, messages in batch.items():
                    for message in messages:
                        if message.key in sent:
                            seen[message.key] = (tp.partition, message)
    finally:
        await consumer.stop()

    assert len({p for p, _ in seen.values()}) > 1, "keys should spread over partitions"
    for key, (partition, message) in seen.items():
        assert partition == expected[key]
        envelope = decode(
            message.value,
            topic=message.topic,
            partition=partition,
            offset=message.offset,
            expect=EventType.MARKET_TICK,
            key=message.key,
        )
        assert envelope == sent[key].envelope
