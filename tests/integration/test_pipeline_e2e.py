"""All five stages on the embedded broker: a seeded tick sequence in, portfolios out that
equal an independent recomputation from the fills on the topic, to the paisa."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import EventType
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

N_TICKS = 600
PAISA = Decimal("0.01")
STARTING_CASH = Decimal("1000000")
PROCESSED = "alpha_panda_messages_processed_total"


async def configure(url: str, *, mr_product: str | None = None) -> None:
    """``mom`` and ``mr``; ``mr_product`` gives ``mr`` a product of its own (else the
    default, MIS)."""
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        await db.add_strategy(
            sessions,
            "mom",
            "momentum",
            [(256265, "NIFTY 50"), (738561, "RELIANCE")],
            {"lookback": 3, "threshold_pct": "0.05", "quantity": 10},
        )
        await db.add_strategy(
            sessions,
            "mr",
            "mean_reversion",
            [(2953217, "TCS"), (408065, "INFY")],
            {"window": 10, "entry_z": "1.2", "exit_z": "0.2", "quantity": 5},
            risk_limits={"product": mr_product} if mr_product else None,
        )
    finally:
        await engine.dispose()


def recompute(fills: list, prices: dict[int, Decimal]) -> dict[str, dict[str, Decimal]]:  # type: ignore[type-arg]
    """Average-cost accounting written out again, independently of tables/portfolio.py."""
    cash: dict[str, Decimal] = defaultdict(lambda: STARTING_CASH)
    fees: dict[str, Decimal] = defaultdict(Decimal)
    realised: dict[str, Decimal] = defaultdict(Decimal)
    qty: dict[tuple[str, int], int] = defaultdict(int)
    avg: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    seen: set[str] = set()
    for f in fills:
        if f.fill_id in seen:
            continue
        seen.add(f.fill_id)
        key = (f.strategy_id, f.instrument_token)
        notional = f.fill_price * f.quantity
        cash[f.strategy_id] += notional if f.side.value == "SELL" else -notional
        cash[f.strategy_id] -= f.fees
        fees[f.strategy_id] += f.fees
        signed = f.quantity if f.side.value == "BUY" else -f.quantity
        held = qty[key]
        if held == 0 or (held > 0) == (signed > 0):
            avg[key] = (avg[key] * abs(held) + f.fill_price * abs(signed)) / (
                abs(held) + abs(signed)
            )
            qty[key] = held + signed
        else:
            closed = min(abs(held), abs(signed))
            direction = 1 if held > 0 else -1
            realised[f.strategy_id] += (f.fill_price - avg[key]) * closed * direction
            qty[key] = held + signed
            if qty[key] == 0:
                avg[key] = Decimal(0)
            elif (qty[key] > 0) != (held > 0):
                avg[key] = f.fill_price
    out: dict[str, dict[str, Decimal]] = {}
    for sid in cash:
        unrealised = sum(
            ((prices[t] - avg[(s, t)]) * q for (s, t), q in qty.items() if s == sid and q),
            Decimal(0),
        )
        market_value = sum((prices[t] * q for (s, t), q in qty.items() if s == sid), Decimal(0))
        out[sid] = {
            "cash": cash[sid],
            "fees": fees[sid],
            "realised": realised[sid],
            "unrealised": unrealised,
            "equity": cash[sid] + market_value,
            "positions": {t: q for (s, t), q in qty.items() if s == sid},  # type: ignore[dict-item]
        }
    return out


def q(x: Decimal) -> Decimal:
    return x.quantize(PAISA, ROUND_HALF_UP)


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    asyncio.run(configure(pg_url))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={
            "ALPHA_PANDA_FEED_MAX_TICKS": str(N_TICKS),
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": "200",
            "ALPHA_PANDA_FEED_SEED": "7",
            "ALPHA_PANDA_FEED_VOLATILITY_BPS": "15",
            "ALPHA_PANDA_REDIS_ENABLED": "false",
        },
    )


def test_seeded_ticks_through_five_stages_give_portfolios_equal_to_a_recomputation(
    deployment: Deployment,
) -> None:
    order = [
        Stage.PORTFOLIO_MANAGER,
        Stage.TRADING_ENGINE,
        Stage.RISK_MANAGER,
        Stage.STRATEGY_RUNNER,
    ]
    workers = {stage: StageProcess(deployment, stage).start() for stage in order}
    try:
        for worker in workers.values():
            worker.wait_ready()
        feed = StageProcess(deployment, Stage.MARKET_FEED).start()
        workers[Stage.MARKET_FEED] = feed
        feed.wait_ready()

        bootstrap = deployment.bootstrap
        runner, risk, engine, pm = (
            workers[Stage.STRATEGY_RUNNER],
            workers[Stage.RISK_MANAGER],
            workers[Stage.TRADING_ENGINE],
            workers[Stage.PORTFOLIO_MANAGER],
        )
        ticks = MARKET_TICKS.name
        # Quiescence, stage by stage: each has processed everything upstream produced.
        wait_for(
            lambda: metric(runner, PROCESSED, topic=ticks) == N_TICKS, what="runner saw all ticks"
        )
        generated = len(asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name)))
        assert generated > 5, "the seeded walk should make both strategies trade"
        wait_for(
            lambda: metric(risk, PROCESSED, topic=RISK_SIGNALS_BY_STRATEGY.name) == generated,
            what="risk decided every signal",
        )
        validated = asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name))
        wait_for(
            lambda: (
                metric(engine, PROCESSED, topic=ENGINE_SIGNALS_BY_INSTRUMENT.name) == len(validated)
                and metric(engine, PROCESSED, topic=ticks) == N_TICKS
            ),
            what="engine handled every validated signal and tick",
        )
        fill_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
        assert len(validated) + len(rejected) >= generated
        wait_for(
            lambda: (
                metric(pm, PROCESSED, topic=ORDERS_FILLED_PAPER.name) == len(fill_records)
                and metric(pm, PROCESSED, topic=ticks) == N_TICKS
            ),
            what="portfolio manager booked every fill and tick",
        )
        assert fill_records, "no fills: nothing to check"
    finally:
        for worker in workers.values():
            worker.stop()

    fills = [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(fill_records, key=lambda r: (r.partition, r.offset))
    ]
    tick_records = asyncio.run(read_topic(bootstrap, ticks, until=N_TICKS))
    last_price: dict[int, Decimal] = {}
    for r in sorted(tick_records, key=lambda r: (r.partition, r.offset)):
        t = decode(r.value, topic=ticks).data
        last_price[t.instrument_token] = t.last_price
    expected = recompute(fills, last_price)

    # The live tables, as their changelog topics hold them.
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))
    prices_table = asyncio.run(
        latest_per_key(bootstrap, changelog_topic(group, Tables.LAST_PRICES))
    )
    table_prices = {int(k): Decimal(v["price"]) for k, v in prices_table.items()}
    assert table_prices == last_price

    assert set(tables) == set(expected)
    for sid, want in expected.items():
        portfolio = Portfolio.from_json_dict(tables[sid])
        valuation = portfolio.valuation(table_prices)
        assert q(portfolio.cash) == q(want["cash"]), sid
        assert q(portfolio.fees_paid) == q(want["fees"]), sid
        assert q(portfolio.realized_pnl) == q(want["realised"]), sid
        assert q(valuation.unrealized_pnl) == q(want["unrealised"]), sid
        assert q(valuation.equity) == q(want["equity"]), sid
        assert {t: p.quantity for t, p in portfolio.positions.items() if p.quantity} == {
            t: n
            for t, n in want["positions"].items()
            if n  # type: ignore[union-attr]
        }
        assert portfolio.trade_count == len({f.fill_id for f in fills if f.strategy_id == sid})
