"""The NSE trading day through four real stages, in event time: a signal outside the
session is rejected with market_closed, an MIS position is squared off at the configured
time, a late entry is refused with mis_cutoff, and the portfolio ends flat, equal to an
independent recomputation from the fills on the topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.market_calendar import IST
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import EventType, new_event_id
from models.events import MarketTick, RejectionReason, Side
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    produce,
    read_topic,
    wait_for,
)
from tests.integration.test_pipeline_e2e import recompute

pytestmark = pytest.mark.integration

TOKEN = 738561
PROCESSED = "alpha_panda_messages_processed_total"
SATURDAY = date(2026, 3, 7)
MONDAY = date(2026, 3, 9)


def ist(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=IST).astimezone(UTC)


# momentum, lookback 1, 0.5 %: BUY on a >= +0.5 % tick-to-tick rise while flat.
TICKS = [
    (ist(SATURDAY, 10, 0), "100"),
    (ist(SATURDAY, 10, 1), "101"),  # BUY -> market_closed (a weekend)
    (ist(MONDAY, 15, 0), "100"),
    (ist(MONDAY, 15, 1), "101"),  # BUY 5, approved and filled
    (ist(MONDAY, 15, 10), "101.1"),  # +0.1 %: hold
    (ist(MONDAY, 15, 20), "101.2"),  # square-off time: SELL 5 (mis_square_off)
    (ist(MONDAY, 15, 21), "103"),  # BUY -> mis_cutoff
    (ist(MONDAY, 15, 22), "103"),
]


async def configure(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        await db.add_strategy(
            db.session_factory(engine),
            "intraday",
            "momentum",
            [(TOKEN, "RELIANCE")],
            {"lookback": 1, "threshold_pct": "0.5", "quantity": 5},
            risk_limits={"product": "MIS"},
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


def test_market_closed_square_off_and_cutoff_in_event_time(deployment: Deployment) -> None:
    stages = [
        Stage.PORTFOLIO_MANAGER,
        Stage.TRADING_ENGINE,
        Stage.RISK_MANAGER,
        Stage.STRATEGY_RUNNER,
    ]
    workers = {stage: StageProcess(deployment, stage).start() for stage in stages}
    bootstrap = deployment.bootstrap
    try:
        for worker in workers.values():
            worker.wait_ready()
        ticks = [
            MarketTick(
                instrument_token=TOKEN,
                symbol="RELIANCE",
                last_price=Decimal(price),
                volume=i + 1,
                exchange_ts=ts,
            )
            for i, (ts, price) in enumerate(TICKS)
        ]
        records = [
            MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test-feed")
            for t in ticks
        ]
        asyncio.run(produce(bootstrap, records))

        runner = workers[Stage.STRATEGY_RUNNER]
        wait_for(
            lambda: metric(runner, PROCESSED, topic=MARKET_TICKS.name) == len(TICKS),
            what="runner saw every tick",
        )
        generated = asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name, until=4))
        assert len(generated) == 4
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name, until=2))
        validated = asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name, until=2))
        fill_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name, until=2))
        pm = workers[Stage.PORTFOLIO_MANAGER]
        wait_for(
            lambda: (
                metric(pm, PROCESSED, topic=ORDERS_FILLED_PAPER.name) == 2
                and metric(pm, PROCESSED, topic=MARKET_TICKS.name) == len(TICKS)
            ),
            what="portfolio manager booked both fills and every tick",
        )
        group = Stage.PORTFOLIO_MANAGER.consumer_group
        portfolios = asyncio.run(
            latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS))
        )
        recent_fills = asyncio.run(
            latest_per_key(bootstrap, changelog_topic(group, Tables.RECENT_FILLS))
        )
    finally:
        for worker in workers.values():
            worker.stop()

    refusals = sorted(
        (r.data.signal.signal_ts, r.data.reason)
        for r in (decode(x.value, topic=x.topic, key=x.key) for x in rejected)
    )
    assert refusals == [
        (ist(SATURDAY, 10, 1), RejectionReason.MARKET_CLOSED),
        (ist(MONDAY, 15, 21), RejectionReason.MIS_CUTOFF),
    ]

    approved = sorted(
        (v.data.signal for v in (decode(x.value, topic=x.topic, key=x.key) for x in validated)),
        key=lambda s: s.signal_ts,
    )
    assert [(s.side, s.quantity, s.signal_ts) for s in approved] == [
        (Side.BUY, 5, ist(MONDAY, 15, 1)),
        (Side.SELL, 5, ist(MONDAY, 15, 20)),
    ]
    assert approved[1].reason.startswith("mis_square_off")

    fills = [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(fill_records, key=lambda r: (r.partition, r.offset))
    ]
    square_off = [f for f in fills if f.side is Side.SELL]
    assert len(square_off) == 1 and (square_off[0].reason or "").startswith("mis_square_off")
    # ... and the fills the API serves (the recent-fills table) say so too.
    assert any(
        str(f.get("reason", "")).startswith("mis_square_off") for f in recent_fills["intraday"]
    )

    # Flat, and equal to an independent recomputation from the fills on the topic.
    expected = recompute(fills, {TOKEN: Decimal("103")})["intraday"]
    portfolio = Portfolio.from_json_dict(portfolios["intraday"])
    assert all(p.quantity == 0 for p in portfolio.positions.values())
    assert expected["positions"] == {TOKEN: 0}
    assert portfolio.cash == expected["cash"]
    assert portfolio.fees_paid == expected["fees"]
    assert portfolio.realized_pnl == expected["realised"]
    assert portfolio.trade_count == 2
