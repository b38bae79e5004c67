"""SIGKILL mid-stream: the portfolio and risk workers restart into exactly the state of an
uninterrupted run; no fill or decision is lost or counted twice."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.domain.fees import FeeSchedule
from alpha_panda.domain.risk_rules import evaluate
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import derived_event_id
from models.events import ExecutionMode, OrderFill, Side, TradingSignal
from tables.portfolio import Portfolio
from tables.risk_state import KillSwitch, RiskLimits, StrategyRiskState
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    produce,
    read_topic,
    wait_committed,
    wait_for,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
STARTING_CASH = Decimal("1000000")


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )


def make_fills(n: int) -> list[OrderFill]:
    rng = random.Random(11)
    fees = FeeSchedule.intraday()
    held: dict[tuple[str, int], int] = {}
    fills = []
    for i in range(n):
        sid = rng.choice(["alpha", "beta", "gamma"])
        token = rng.choice([101, 202])
        qty = rng.randint(1, 20)
        side = Side.SELL if held.get((sid, token), 0) >= qty and rng.random() < 0.5 else Side.BUY
        held[(sid, token)] = held.get((sid, token), 0) + (qty if side is Side.BUY else -qty)
        price = Decimal(100 + rng.randint(-300, 300)) * Decimal("0.05") + Decimal(50)
        breakdown = fees.compute(side, price * qty)
        fills.append(
            OrderFill(
                fill_id=f"fill-{i}",
                order_id=f"order-{i}",
                signal_event_id=f"sig-{i}",
                strategy_id=sid,
                instrument_token=token,
                symbol=f"S{token}",
                side=side,
                quantity=qty,
                fill_price=price,
                fees=breakdown.total,
                fee_breakdown=breakdown,
                execution_mode=ExecutionMode.PAPER,
                filled_ts=T0 + timedelta(seconds=i),
            )
        )
    return fills


def fill_record(fill: OrderFill):  # type: ignore[no-untyped-def]
    return ORDERS_FILLED_PAPER.record(
        fill, event_id=derived_event_id(fill.fill_id, "filled"), ts=fill.filled_ts, source="test"
    )


@pytest.mark.parametrize("batched", [False, True], ids=["single-record-batches", "batched"])
def test_portfolio_worker_killed_mid_stream_loses_and_doubles_nothing(
    deployment: Deployment, batched: bool
) -> None:
    # Batched: the changelog is written in multi-record batches, whose end offset the
    # embedded broker lists short; recovery must still read all of it.
    deployment.extra_env["ALPHA_PANDA_BROKER_SINGLE_RECORD_BATCHES"] = str(not batched).lower()
    fills = make_fills(600)
    records = [fill_record(f) for f in fills]
    # The engine re-producing a fill after its own crash: same fill id, later offset.
    records.insert(450, fill_record(fills[440]))
    expected: dict[str, Portfolio] = {}
    for f in fills:
        current = expected.get(f.strategy_id) or Portfolio.new(f.strategy_id, STARTING_CASH)
        expected[f.strategy_id] = current.apply_fill(f) or current

    pm = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    try:
        pm.wait_ready()
        asyncio.run(produce(deployment.bootstrap, records[:300]))
        wait_for(
            lambda: (
                metric(pm, "alpha_panda_messages_processed_total", topic=ORDERS_FILLED_PAPER.name)
                >= 150
            ),
            what="some fills booked",
        )
        pm.kill()  # SIGKILL: no commit, no flush, no goodbye
        asyncio.run(produce(deployment.bootstrap, records[300:]))
        pm = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
        pm.wait_ready()
        changelog = changelog_topic(Stage.PORTFOLIO_MANAGER.consumer_group, Tables.PORTFOLIOS)

        def booked() -> int:
            state = asyncio.run(latest_per_key(deployment.bootstrap, changelog))
            return sum(p["trade_count"] for p in state.values())

        wait_for(lambda: booked() >= len(fills), timeout=90, what="every fill booked")
        # Let anything still in flight land, then read the final table state.
        final = asyncio.run(latest_per_key(deployment.bootstrap, changelog))
        skipped = metric(pm, "alpha_panda_offset_gaps_total")
    finally:
        pm.stop()

    assert skipped == 0, "the restarted worker skipped source records"

    assert set(final) == set(expected)
    for sid, want in expected.items():
        got = Portfolio.from_json_dict(final[sid])
        assert got.trade_count == want.trade_count, sid
        assert got.cash == want.cash, sid
        assert got.fees_paid == want.fees_paid, sid
        assert got.realized_pnl == want.realized_pnl, sid
        assert got.positions == want.positions, sid


def test_risk_worker_killed_mid_stream_decides_exactly_as_an_uninterrupted_run(
    deployment: Deployment,
) -> None:
    overrides = {"max_position_quantity": 40, "max_order_quantity": 15, "max_orders_per_minute": 25}

    async def configure() -> None:
        engine = db.create_engine(deployment.database_url)
        try:
            await db.upgrade(engine)
            await db.add_strategy(
                db.session_factory(engine), "r1", "momentum", [(101, "S101")], risk_limits=overrides
            )
        finally:
            await engine.dispose()

    asyncio.run(configure())
    rng = random.Random(5)
    signals = []
    for i in range(300):
        side = rng.choice([Side.BUY, Side.BUY, Side.SELL])
        signals.append(
            (
                f"sig-{i:04d}",
                TradingSignal(
                    strategy_id="r1",
                    instrument_token=101,
                    symbol="S101",
                    side=side,
                    quantity=rng.randint(1, 18),
                    reference_price=Decimal(100) + Decimal(rng.randint(-50, 50)) / 10,
                    signal_ts=T0 + timedelta(seconds=3 * i),
                ),
            )
        )
    # The uninterrupted run: the pure rules over the same sequence.
    limits = RiskLimits.from_settings(load_settings().risk).with_overrides(overrides)
    state = StrategyRiskState.new("r1")
    expected: dict[str, str] = {}
    for event_id, signal in signals:
        decision = evaluate(signal, event_id, limits, state, KillSwitch())
        state = decision.new_state
        expected[event_id] = (
            "approved" if decision.rejection is None else decision.rejection.reason.value
        )
    assert 50 < sum(v == "approved" for v in expected.values()) < 300, "want a mix of outcomes"

    records = [
        SIGNALS_GENERATED.record(s, event_id=eid, ts=s.signal_ts, source="test")
        for eid, s in signals
    ]
    risk = StageProcess(deployment, Stage.RISK_MANAGER).start()
    try:
        risk.wait_ready(require="1 strategies enabled")
        asyncio.run(produce(deployment.bootstrap, records[:150]))
        wait_for(
            lambda: (
                metric(
                    risk,
                    "alpha_panda_messages_processed_total",
                    topic="alpha-panda.risk-manager.signals-by-strategy",
                )
                >= 60
            ),
            what="some decisions",
        )
        risk.kill()
        asyncio.run(produce(deployment.bootstrap, records[150:]))
        risk = StageProcess(deployment, Stage.RISK_MANAGER).start()
        risk.wait_ready(require="1 strategies enabled")

        def decisions() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for topic in (SIGNALS_VALIDATED.name, SIGNALS_REJECTED.name):
                for r in asyncio.run(read_topic(deployment.bootstrap, topic)):
                    env = decode(r.value, topic=topic)
                    outcome = (
                        "approved" if topic == SIGNALS_VALIDATED.name else env.data.reason.value
                    )
                    out.setdefault(env.data.signal_event_id, []).append(f"{env.id}:{outcome}")
            return out

        wait_for(
            lambda: len(decisions()) >= len(signals) or False,
            timeout=90,
            what=f"a decision for each of {len(signals)} signals",
        )
        got = decisions()
        wait_committed(deployment.bootstrap, Stage.RISK_MANAGER, RISK_SIGNALS_BY_STRATEGY.name)
        final_state = asyncio.run(
            latest_per_key(
                deployment.bootstrap,
                changelog_topic(Stage.RISK_MANAGER.consumer_group, Tables.RISK_STATE),
            )
        )["r1"]
        skipped = metric(risk, "alpha_panda_offset_gaps_total")
    finally:
        risk.stop()

    assert skipped == 0, "the restarted worker skipped source records"

    assert set(got) == set(expected)
    for event_id, outcomes in got.items():
        # A redelivered decision is the same event (same id, same outcome), never a new one.
        assert len(set(outcomes)) == 1, (event_id, outcomes)
        assert outcomes[0].split(":", 1)[1] == expected[event_id], event_id
    restored = StrategyRiskState.from_json_dict(final_state)
    assert restored.positions == state.positions
    assert restored.realized_pnl_today == state.realized_pnl_today
