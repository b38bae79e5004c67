"""A strategy's own position through the real pipeline (issue 16): the strategy runner
books its fills and rejections (repartitioned by instrument), so a BUY refused by risk is
not sold at the MIS square-off, and the view of a strategy whose orders filled follows
its fills to flat."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.domain.own_position import OwnPosition
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    OutgoingRecord,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import new_event_id
from models.events import MarketTick, RejectionReason, Side
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    produce,
    read_topic,
    wait_for,
)
from tests.integration.test_trading_day import MONDAY, TOKEN, ist

pytestmark = pytest.mark.integration

PROCESSED = "alpha_panda_messages_processed_total"
MOMENTUM = {"lookback": 1, "threshold_pct": "0.5", "quantity": 5}

# Both strategies BUY 5 at 15:01; "capped" may hold 1 share, so risk refuses its BUY.
BEFORE = [
    (ist(MONDAY, 15, 0), "100"),
    (ist(MONDAY, 15, 1), "101"),  # BUY 5 each: "filled" fills, "capped" is refused
    (ist(MONDAY, 15, 10), "101.1"),
]
# Sent once the runner has booked the fill and the rejection.
AFTER = [
    (ist(MONDAY, 15, 20), "101.2"),  # square-off: "filled" sells 5, "capped" nothing
    (ist(MONDAY, 15, 21), "103"),  # both flat: BUY, refused for the cut-off
]


async def configure(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        await db.add_strategy(
            sessions,
            "filled",
            "momentum",
            [(TOKEN, "RELIANCE")],
            MOMENTUM,
            risk_limits={"product": "MIS"},
        )
        await db.add_strategy(
            sessions,
            "capped",
            "momentum",
            [(TOKEN, "RELIANCE")],
            MOMENTUM,
            risk_limits={"product": "MIS", "max_position_quantity": 1},
        )
    finally:
        await engine.dispose()


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    url = f"sqlite+aiosqlite:///{tmp_path}/config.db"
    asyncio.run(configure(url))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=url,
        extra_env={
            "ALPHA_PANDA_MARKET_ENFORCE_SESSIONS": "true",
            "ALPHA_PANDA_MARKET_SQUARE_OFF_TIME": "15:20",
            "ALPHA_PANDA_REDIS_ENABLED": "false",
        },
    )


def tick_records(ticks: list[tuple[datetime, str]], first_volume: int) -> list[OutgoingRecord]:
    records = []
    for i, (ts, price) in enumerate(ticks):
        t = MarketTick(
            instrument_token=TOKEN,
            symbol="RELIANCE",
            last_price=Decimal(price),
            volume=first_volume + i,
            exchange_ts=ts,
        )
        records.append(
            MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test-feed")
        )
    return records


def test_a_buy_refused_by_risk_is_not_sold_and_the_view_follows_the_fills(
    deployment: Deployment,
) -> None:
    stages = [Stage.TRADING_ENGINE, Stage.RISK_MANAGER, Stage.STRATEGY_RUNNER]
    workers = {stage: StageProcess(deployment, stage).start() for stage in stages}
    bootstrap = deployment.bootstrap
    runner = workers[Stage.STRATEGY_RUNNER]
    try:
        for worker in workers.values():
            worker.wait_ready()
        asyncio.run(produce(bootstrap, tick_records(BEFORE, 1)))
        wait_for(
            lambda: (
                metric(runner, PROCESSED, topic=RUNNER_FILLS_BY_INSTRUMENT.name) == 1
                and metric(runner, PROCESSED, topic=RUNNER_REJECTIONS_BY_INSTRUMENT.name) == 1
            ),
            what="the runner booked the BUY's fill and the other BUY's rejection",
        )
        asyncio.run(produce(bootstrap, tick_records(AFTER, len(BEFORE) + 1)))
        wait_for(
            lambda: (
                metric(runner, PROCESSED, topic=MARKET_TICKS.name) == len(BEFORE) + len(AFTER)
                and metric(runner, PROCESSED, topic=RUNNER_FILLS_BY_INSTRUMENT.name) == 2
                and metric(runner, PROCESSED, topic=RUNNER_REJECTIONS_BY_INSTRUMENT.name) == 3
            ),
            what="the runner saw every tick, both fills and the three rejections",
        )
        generated = asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name, until=5))
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name, until=3))
        fills = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name, until=2))
        group = Stage.STRATEGY_RUNNER.consumer_group
        views = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.OWN_POSITIONS)))
    finally:
        for worker in workers.values():
            worker.stop()

    signals = sorted(
        (s.data.strategy_id, s.data.signal_ts, s.data.side)
        for s in (decode(r.value, topic=r.topic, key=r.key) for r in generated)
    )
    assert signals == [
        ("capped", ist(MONDAY, 15, 1), Side.BUY),  # refused by risk: max_position
        # no square-off SELL of the shares it never had
        ("capped", ist(MONDAY, 15, 21), Side.BUY),
        ("filled", ist(MONDAY, 15, 1), Side.BUY),
        ("filled", ist(MONDAY, 15, 20), Side.SELL),  # the square-off of its 5 shares
        ("filled", ist(MONDAY, 15, 21), Side.BUY),
    ]
    refusals = sorted(
        (r.data.signal.strategy_id, r.data.reason)
        for r in (decode(x.value, topic=x.topic, key=x.key) for x in rejected)
    )
    assert refusals == [
        ("capped", RejectionReason.MAX_POSITION),
        ("capped", RejectionReason.MIS_CUTOFF),
        ("filled", RejectionReason.MIS_CUTOFF),
    ]
    assert len(fills) == 2

    capped = OwnPosition.from_json_dict(views[f"capped:{TOKEN}"])
    assert (capped.quantity, capped.fill_count, capped.rejection_count) == (0, 0, 2)
    assert (capped.refused_buy_shares, capped.refused_sell_shares) == (5, 0)
    filled = OwnPosition.from_json_dict(views[f"filled:{TOKEN}"])
    assert (filled.quantity, filled.fill_count, filled.rejection_count) == (0, 2, 1)
    assert [(f.side, f.quantity) for f in filled.recent_fills] == [(Side.BUY, 5), (Side.SELL, 5)]
    buy, sell = filled.recent_fills
    assert filled.realized_pnl == (sell.fill_price - buy.fill_price) * 5
    assert filled.fees_paid == buy.fees + sell.fees
    # The forwarded records carried where they were read (through the real broker), so a
    # replay forwarding them again would be recognised.
    assert {k.rsplit(":", 1)[0] for k in capped.source_offsets} == {SIGNALS_REJECTED.name}
    assert {k.rsplit(":", 1)[0] for k in filled.source_offsets} == {
        ORDERS_FILLED_PAPER.name,
        SIGNALS_REJECTED.name,
    }
