"""The embedded broker creates unknown topics on first produce; our producers wait instead."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from alpha_panda.admin import admin_client, existing_partitions, wait_for_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import load_settings
from alpha_panda.topics import MARKET_TICKS

pytestmark = pytest.mark.integration


async def _topics(bootstrap: str) -> list[str]:
    admin = admin_client(load_settings(broker={"url": bootstrap}))
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_the_embedded_broker_creates_a_topic_on_first_produce(
    fresh_broker: EmbeddedBroker,
) -> None:
    """The defect (Tansu 0.6.0) behind `wait_for_topics`: if this fails, Tansu stopped
    auto-creating topics and the wait is no longer needed for it (still harmless)."""

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=fresh_broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("nobody.created.this", b"x")
        finally:
            await producer.stop()

    assert "nobody.created.this" not in asyncio.run(_topics(fresh_broker.bootstrap))
    asyncio.run(produce())
    assert "nobody.created.this" in asyncio.run(_topics(fresh_broker.bootstrap))


def test_wait_for_topics_returns_once_the_topic_exists_and_creates_nothing(
    fresh_broker: EmbeddedBroker,
) -> None:
    settings = load_settings(broker={"url": fresh_broker.bootstrap})

    async def scenario() -> tuple[bool, dict[str, int]]:
        waiting = asyncio.create_task(
            wait_for_topics(settings, [MARKET_TICKS.name], should_stop=lambda: False, poll_s=0.05)
        )
        # Let it list (and find nothing) a few times before the topic is created.
        for _ in range(5):
            await asyncio.sleep(0.05)
            assert not waiting.done()
        admin = admin_client(settings)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(MARKET_TICKS.name, MARKET_TICKS.partitions, 1)])
            found = await asyncio.wait_for(waiting, timeout=30)
            return found, await existing_partitions(admin, [MARKET_TICKS.name])
        finally:
            await admin.close()

    found, partitions = asyncio.run(scenario())
    assert found
    assert partitions == {MARKET_TICKS.name: MARKET_TICKS.partitions}
    # A stop request ends the wait without the topic.
    assert (
        asyncio.run(wait_for_topics(settings, ["never.created"], should_stop=lambda: True)) is False
    )
