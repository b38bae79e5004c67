"""A restarted mock feed continues each instrument's walk from its last published price.

The "previous run" is produced here with the feed's envelope source, followed by ticks
the walk must ignore: a tick from another producer at an absurd price and a poison pill
on the same partition. Then the real feed stage starts and publishes a few ticks.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.feed_resume import LastTick, last_published
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS
from models.codec import DecodeError, decode
from models.envelope import EventType, new_event_id
from models.events import MarketTick
from tests.factories import OPEN
from tests.factories import tick as stub_tick
from tests.integration.harness import Deployment, StageProcess, metric, produce, read_topic
from tests.integration.harness import wait_for as wait_until

pytestmark = pytest.mark.integration

RELIANCE, INFY, TCS = 738561, 408065, 2953217
FEED = Stage.MARKET_FEED.value


def tick_record(token: int, price: str, volume: int, second: int, source: str) -> object:
    tick = stub_tick(price, ts=OPEN + timedelta(seconds=second), token=token, volume=volume)
    return MARKET_TICKS.record(tick, event_id=new_event_id(), ts=tick.exchange_ts, source=source)


def near(price: Decimal, reference: str) -> bool:
    return abs(price - Decimal(reference)) <= Decimal(reference) / 100


def test_the_feed_continues_from_its_last_published_prices(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    settings = load_settings(broker={"url": bootstrap})
    asyncio.run(ensure_topics(settings))
    previous_run = [
        tick_record(RELIANCE, "2490.00", 100, 1, FEED),
        tick_record(INFY, "1790.00", 50, 1, FEED),
        tick_record(RELIANCE, "2500.05", 180, 2, FEED),
        tick_record(INFY, "1800.00", 70, 2, FEED),
        # Not the walk: another producer's tick and a poison pill, after the feed's last.
        tick_record(RELIANCE, "9999.95", 999, 3, "test"),
        (MARKET_TICKS.name, str(RELIANCE).encode(), b"{not json"),
    ]
    asyncio.run(produce(bootstrap, previous_run))  # type: ignore[arg-type]

    found = asyncio.run(last_published(settings, {RELIANCE, INFY, TCS}, source=FEED))
    assert found == {
        RELIANCE: LastTick(Decimal("2500.05"), 180),
        INFY: LastTick(Decimal("1800.00"), 70),
    }  # TCS was never published: it starts at its configured price

    before = len(asyncio.run(read_topic(bootstrap, MARKET_TICKS.name)))
    deployment = Deployment(
        bootstrap=bootstrap,
        data_dir=tmp_path,
        extra_env={
            "ALPHA_PANDA_REDIS_ENABLED": "false",
            "ALPHA_PANDA_FEED_INSTRUMENTS": "738561:RELIANCE:2900,408065:INFY:1500,"
            "2953217:TCS:3900",
            "ALPHA_PANDA_FEED_MAX_TICKS": "6",
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": "200",
        },
    )
    feed = StageProcess(deployment, Stage.MARKET_FEED).start()
    try:
        feed.wait_ready()
        wait_until(
            lambda: metric(feed, "alpha_panda_messages_produced_total") >= 6,
            what="six ticks published",
        )
    finally:
        feed.stop()

    records = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name, until=before + 6))
    first: dict[int, MarketTick] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            envelope = decode(record.value, topic=record.topic, expect=EventType.MARKET_TICK)
        except DecodeError:
            continue  # the pill
        if envelope.source == FEED and envelope.data.exchange_ts > OPEN + timedelta(days=1):
            first.setdefault(envelope.data.instrument_token, envelope.data)
    assert set(first) == {RELIANCE, INFY, TCS}
    assert near(first[RELIANCE].last_price, "2500.05"), first[RELIANCE]
    assert first[RELIANCE].volume > 180
    assert near(first[INFY].last_price, "1800.00"), first[INFY]
    assert near(first[TCS].last_price, "3900"), first[TCS]
