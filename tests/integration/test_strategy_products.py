"""Each strategy's product on the real path: the trading engine worker on the embedded
broker, its configuration from PostgreSQL, live orders to the local Kite server.

Two paper strategies (CNC and MIS) and two live ones (CNC and the default, MIS) trade
the same instrument in one engine: each paper fill pays its strategy's charges, each live
order reaches Kite with its strategy's product and its fills pay that product's charges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.domain.live_orders import order_tag
from alpha_panda.domain.products import fees_for_product
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    OutgoingRecord,
)
from models.codec import decode
from models.envelope import derived_event_id
from models.events import ExecutionMode, OrderFill, ValidatedSignal
from tests.factories import RELIANCE, signal, tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    metric,
    produce,
    read_topic,
    wait_for,
)
from tests.integration.kite_thread import (
    KiteThread,
    kite_in_thread,
    store_fake_login,
    zerodha_env,
)

pytestmark = pytest.mark.integration

PROCESSED = "alpha_panda_messages_processed_total"
# strategy id -> (execution mode, its risk_limits product; None: the default, MIS)
STRATEGIES: dict[str, tuple[str, str | None]] = {
    "paper-cnc": ("paper", "CNC"),
    "paper-mis": ("paper", None),
    "live-cnc": ("live", "CNC"),
    "live-mis": ("live", None),
}


def product_of(sid: str) -> str:
    return STRATEGIES[sid][1] or "MIS"


@pytest.fixture
def kite() -> Iterator[KiteThread]:
    with kite_in_thread(tick_interval_s=None) as handle:
        yield handle


async def configure(url: str, token: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        for sid, (mode, product) in STRATEGIES.items():
            await db.add_strategy(
                sessions,
                sid,
                "momentum",
                [(RELIANCE, "RELIANCE")],
                {"lookback": 3, "threshold_pct": "5", "quantity": 10},
                execution_mode=mode,
                risk_limits={"product": product} if product else None,
            )
        await store_fake_login(sessions, token)
    finally:
        await engine.dispose()


def validated_record(sid: str, now: datetime) -> OutgoingRecord:
    mode = ExecutionMode(STRATEGIES[sid][0])
    sig = signal(strategy_id=sid, quantity=10, price="1250", ts=now, mode=mode)
    validated = ValidatedSignal(signal_event_id=f"sig-{sid}", signal=sig, validated_ts=now)
    return SIGNALS_VALIDATED.record(
        validated, event_id=derived_event_id(f"sig-{sid}", "validated"), ts=now, source="test"
    )


def fills_on(bootstrap: str, topic: str) -> list[OrderFill]:
    records = asyncio.run(read_topic(bootstrap, topic))
    return [decode(r.value, topic=r.topic).data for r in records]


def test_paper_fees_and_live_kite_orders_follow_each_strategys_product(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    bootstrap = fresh_broker.bootstrap
    asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))
    asyncio.run(configure(pg_url, kite.sync(kite.kite.issue_token)))
    deployment = Deployment(
        bootstrap=bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env=zerodha_env(kite),
    )
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    try:
        engine.wait_ready(require="zerodha: connected")
        now = datetime.now(UTC)
        # The paper orders fill at the instrument's last price: the engine has it first.
        price = MARKET_TICKS.record(tick("1250", ts=now), event_id="tick-1", ts=now, source="test")
        asyncio.run(produce(bootstrap, [price]))
        wait_for(
            lambda: metric(engine, PROCESSED, topic=MARKET_TICKS.name) >= 1,
            what="the engine to take the tick's price",
        )
        asyncio.run(produce(bootstrap, [validated_record(sid, now) for sid in STRATEGIES]))

        def kite_products() -> dict[str, str]:
            async def read() -> dict[str, str]:
                return {o.tag: o.product for o in kite.kite.orders.values() if o.tag}

            return kite.call(read())

        wait_for(lambda: len(kite_products()) == 2, what="both live orders at Kite")

        def live_trades() -> set[str]:
            async def read() -> set[str]:
                return {t["trade_id"] for trades in kite.kite.trades.values() for t in trades}

            return kite.call(read())

        wait_for(
            lambda: (
                len(fills_on(bootstrap, ORDERS_FILLED_PAPER.name)) >= 2
                and {f.fill_id for f in fills_on(bootstrap, ORDERS_FILLED_LIVE.name)}
                == live_trades()
            ),
            timeout=60,
            what="the paper fills and every Kite trade on orders.filled.live",
        )
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
    finally:
        engine.stop()

    assert rejected == []
    assert kite_products() == {
        order_tag("sig-live-cnc"): "CNC",
        order_tag("sig-live-mis"): "MIS",
    }
    paper = fills_on(bootstrap, ORDERS_FILLED_PAPER.name)
    live = fills_on(bootstrap, ORDERS_FILLED_LIVE.name)
    assert {f.strategy_id for f in paper} == {"paper-cnc", "paper-mis"}
    assert {f.strategy_id for f in live} == {"live-cnc", "live-mis"}
    for fill in paper + live:
        product = product_of(fill.strategy_id)
        # Per fill: far below the intraday brokerage cap, so no earlier fill's share counts.
        expected = fees_for_product(product).compute(fill.side, fill.fill_price * fill.quantity)
        assert fill.fee_breakdown == expected, fill.strategy_id
        # Delivery (CNC): no brokerage, STT on the buy. Intraday (MIS): brokerage, no STT.
        breakdown = fill.fee_breakdown
        if product == "CNC":
            assert breakdown.brokerage == 0 < breakdown.stt, fill.strategy_id
        else:
            assert breakdown.stt == 0 < breakdown.brokerage, fill.strategy_id
