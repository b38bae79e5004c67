"""Parity: a seeded pipeline run on the embedded broker, its ticks recorded with
`alpha-panda record`, then backtested: the same fills (ids, prices, quantities, fees) and
the same portfolios to the paisa.

The test is the feed: it sends the seeded random walk one tick at a time and waits until
the engine has executed that tick's signals. The live engine fills a signal at the last
price it has seen when the signal arrives; a feed racing ahead (or a cold start on a
loaded machine) lets a later tick get there first, and the live fill price then depends on
timing: a first version of this test, with the real feed at 10 ticks/s (400 ms between two
ticks of an instrument), saw three of 18 fills at the next tick's price. The backtest
fills at the price of the tick that caused the signal, which is what the pipeline does
whenever it keeps up.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from alpha_panda.admin import ensure_topics
from alpha_panda.backtest import config as backtest_config
from alpha_panda.backtest.engine import BacktestSetup
from alpha_panda.backtest.runner import FileSource, run_backtest
from alpha_panda.backtest.sources import OnBadInput
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.domain.random_walk import RandomWalkFeed, parse_instruments
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import EventType, new_event_id
from models.events import OrderFill
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    read_topic,
    wait_for,
)
from tests.integration.test_pipeline_e2e import configure

pytestmark = pytest.mark.integration

N_TICKS = 120
D = Decimal
PAISA = Decimal("0.01")
PROCESSED = "alpha_panda_messages_processed_total"
PRODUCED = "alpha_panda_messages_produced_total"
SEED = 11
INSTRUMENTS = "256265:NIFTY 50:22000,738561:RELIANCE:2900,2953217:TCS:3900,408065:INFY:1500"
ALPHA_PANDA = str(Path(sys.executable).with_name("alpha-panda"))


def _diff(ours: OrderFill | None, live: OrderFill | None) -> object:
    if ours is None or live is None:
        return {"backtest": ours, "live": live}
    a, b = ours.model_dump(), live.model_dump()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def q(x: Decimal) -> Decimal:
    return x.quantize(PAISA, ROUND_HALF_UP)


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    # mr trades CNC, mom the default MIS: the backtest must charge each as the engine does.
    asyncio.run(configure(pg_url, mr_product="CNC"))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={
            "ALPHA_PANDA_REDIS_ENABLED": "false",
        },
    )


async def feed_in_lockstep(bootstrap: str, workers: dict[Stage, StageProcess]) -> None:
    """The seeded walk onto market.ticks, each tick sent once the last one's signals were
    filled (or rejected) by the engine, so the engine always fills at the price of the tick
    that caused a signal, whatever the machine's load."""
    runner, risk, engine = (
        workers[Stage.STRATEGY_RUNNER],
        workers[Stage.RISK_MANAGER],
        workers[Stage.TRADING_ENGINE],
    )
    feed = RandomWalkFeed(parse_instruments(INSTRUMENTS), SEED, Decimal("15"))
    start = datetime.now(UTC).replace(microsecond=0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for n in range(1, N_TICKS + 1):
            tick = feed.step(start + timedelta(milliseconds=250 * n))
            record = MARKET_TICKS.record(
                tick, event_id=new_event_id(), ts=tick.exchange_ts, source="test-feed"
            )
            await producer.send_and_wait(record.topic, key=record.key, value=record.value)
            wait_for(
                lambda n=n: (  # type: ignore[misc]
                    metric(runner, PROCESSED, topic=MARKET_TICKS.name) == n
                    and metric(engine, PROCESSED, topic=MARKET_TICKS.name) == n
                ),
                what=f"tick {n} processed",
            )
            signals = metric(runner, PRODUCED, topic=SIGNALS_GENERATED.name)
            wait_for(
                lambda signals=signals: (  # type: ignore[misc]
                    metric(risk, PROCESSED, topic=RISK_SIGNALS_BY_STRATEGY.name) == signals
                ),
                what=f"risk decided the signals of tick {n}",
            )
            approved = metric(risk, PRODUCED, topic=SIGNALS_VALIDATED.name)
            wait_for(
                lambda approved=approved: (  # type: ignore[misc]
                    metric(engine, PROCESSED, topic=ENGINE_SIGNALS_BY_INSTRUMENT.name) == approved
                ),
                what=f"engine executed the signals of tick {n}",
            )
    finally:
        await producer.stop()


def run_pipeline(deployment: Deployment) -> tuple[list[OrderFill], dict[str, Portfolio]]:
    order = [
        Stage.PORTFOLIO_MANAGER,
        Stage.TRADING_ENGINE,
        Stage.RISK_MANAGER,
        Stage.STRATEGY_RUNNER,
    ]
    workers = {stage: StageProcess(deployment, stage).start() for stage in order}
    bootstrap = deployment.bootstrap
    try:
        for worker in workers.values():
            worker.wait_ready()
        asyncio.run(feed_in_lockstep(bootstrap, workers))
        generated = metric(workers[Stage.STRATEGY_RUNNER], PRODUCED, topic=SIGNALS_GENERATED.name)
        assert generated > 5, "the seeded walk should make both strategies trade"
        pm = workers[Stage.PORTFOLIO_MANAGER]
        fills = len(asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name)))
        wait_for(
            lambda: (
                metric(pm, PROCESSED, topic=ORDERS_FILLED_PAPER.name) == fills
                and metric(pm, PROCESSED, topic=MARKET_TICKS.name) == N_TICKS
            ),
            what="portfolio manager booked every fill and tick",
        )
    finally:
        for worker in workers.values():
            worker.stop()
    records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
    fills = [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    ]
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))
    return fills, {sid: Portfolio.from_json_dict(v) for sid, v in tables.items()}


def test_backtest_of_recorded_ticks_gives_the_pipeline_fills_and_portfolios(
    deployment: Deployment, tmp_path: Path
) -> None:
    live_fills, live_portfolios = run_pipeline(deployment)
    assert live_fills, "no fills: nothing to compare"
    # Each strategy's fills paid its product's charges: CNC no brokerage, MIS brokerage.
    brokerage = {
        sid: {f.fee_breakdown.brokerage > 0 for f in live_fills if f.strategy_id == sid}
        for sid in ("mom", "mr")
    }
    assert brokerage == {"mom": {True}, "mr": {False}}

    recording = tmp_path / "ticks.jsonl.gz"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
    env["ALPHA_PANDA_BROKER_URL"] = deployment.bootstrap
    done = subprocess.run(
        [ALPHA_PANDA, "record", str(recording)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {N_TICKS} ticks" in done.stdout

    # The harness's stages judge signals at any hour (market.enforce_sessions off); the
    # backtest must decide as they did.
    settings = load_settings(
        database={"url": deployment.database_url}, market={"enforce_sessions": False}
    )
    config = asyncio.run(backtest_config.load_database(settings))
    setup = BacktestSetup.from_settings(config, settings)
    result, guard = run_backtest(FileSource(recording), setup, OnBadInput.REFUSE)
    assert guard.skipped == 0
    assert result.ticks == N_TICKS

    live = {f.fill_id: f for f in live_fills}  # the engine may have produced one twice
    ours = {f.fill_id: f for f in result.fills}
    assert len(ours) == len(result.fills)
    differences = [
        (fill_id, _diff(ours.get(fill_id), live.get(fill_id)))
        for fill_id in sorted(set(ours) | set(live))
        if ours.get(fill_id) != live.get(fill_id)
    ]
    assert not differences, f"{len(differences)} of {len(live)} fills differ: {differences[:3]}"

    # The same through the CLI, straight from market.ticks, strategies from the database.
    env["ALPHA_PANDA_DATABASE_URL"] = deployment.database_url
    env["ALPHA_PANDA_MARKET_ENFORCE_SESSIONS"] = "false"  # as the harness's stages
    out = tmp_path / "from-topic"
    done = subprocess.run(
        [ALPHA_PANDA, "backtest", "--from-topic", "--out", str(out), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"{N_TICKS} ticks" in done.stdout
    with (out / "fills.csv").open() as rows:
        cli_fills = {
            r["fill_id"]: (
                r["order_id"],
                r["side"],
                int(r["quantity"]),
                D(r["fill_price"]),
                D(r["fees"]),
            )
            for r in csv.DictReader(rows)
        }
    assert cli_fills == {
        f.fill_id: (f.order_id, f.side.value, f.quantity, f.fill_price, f.fees)
        for f in live.values()
    }

    assert set(result.portfolios) == set(live_portfolios)
    for sid, live in live_portfolios.items():
        ours = result.portfolios[sid]
        assert q(ours.cash) == q(live.cash), sid
        assert q(ours.fees_paid) == q(live.fees_paid), sid
        assert q(ours.realized_pnl) == q(live.realized_pnl), sid
        assert ours.trade_count == live.trade_count, sid
        assert {
            t: (p.quantity, q(p.avg_price), q(p.realized_pnl)) for t, p in ours.positions.items()
        } == {
            t: (p.quantity, q(p.avg_price), q(p.realized_pnl)) for t, p in live.positions.items()
        }, sid
        assert q(result.valuations[sid].equity) == q(live.valuation(result.marks).equity), sid
