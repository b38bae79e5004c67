"""Under load, `kill -9` of each stage in turn while `alpha-panda run` supervises: every
stage comes back with no operator action, and the portfolios equal an independent
recomputation from the fill topic (no fill lost, none booked twice)."""

from __future__ import annotations

import asyncio
import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.broker import free_port
from alpha_panda.settings import Stage
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
    latest_per_key,
    metric,
    read_topic,
    wait_committed,
    wait_for,
)
from tests.integration.pipeline_run import Run
from tests.integration.test_pipeline_e2e import q, recompute

pytestmark = pytest.mark.integration

RATE = 200
TICKS = 6_000  # 30 s at 200/s: the feed is still publishing through every kill below
KILLED_IN_TURN = [
    Stage.STRATEGY_RUNNER,
    Stage.RISK_MANAGER,
    Stage.TRADING_ENGINE,
    Stage.PORTFOLIO_MANAGER,
]
CONSUMED = {
    Stage.STRATEGY_RUNNER: [MARKET_TICKS.name],
    Stage.RISK_MANAGER: [RISK_SIGNALS_BY_STRATEGY.name],
    Stage.TRADING_ENGINE: [MARKET_TICKS.name, ENGINE_SIGNALS_BY_INSTRUMENT.name],
    Stage.PORTFOLIO_MANAGER: [MARKET_TICKS.name, ORDERS_FILLED_PAPER.name],
}


def test_each_stage_killed_in_turn_under_load_comes_back_and_books_exactly(
    tmp_path: Path,
) -> None:
    deployment = Deployment(
        bootstrap=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'config.db'}",
        extra_env={
            "ALPHA_PANDA_REDIS_ENABLED": "false",
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": str(RATE),
            "ALPHA_PANDA_FEED_MAX_TICKS": str(TICKS),
            "ALPHA_PANDA_FEED_VOLATILITY_BPS": "15",
        },
    )
    bootstrap = deployment.bootstrap
    run = Run(tmp_path, list(Stage), deployment=deployment)
    try:
        for stage in Stage:
            run.health_pid(stage)
        feed = run.stage(Stage.MARKET_FEED)
        killed = {}
        for stage in KILLED_IN_TURN:
            # Kill only once the stage has work in flight, and the next one as soon as the
            # supervisor has started this one again: recoveries overlap, under load.
            wait_for(
                lambda s=stage: metric(run.stage(s), "alpha_panda_messages_processed_total") > 0,
                timeout=60,
                what=f"{stage.value} processing",
            )
            killed[stage] = run.health_pid(stage)
            os.kill(killed[stage], signal.SIGKILL)
            wait_for(
                lambda s=stage: f"alpha-panda: {s.value} pid " in run.output(),
                timeout=30,
                what=f"the supervisor to restart {stage.value}",
            )
            assert f"{stage.value} exited with -9" in run.output()
        ticks_sent = metric(feed, "alpha_panda_messages_produced_total")
        assert ticks_sent < TICKS, "the feed finished before the last kill: raise TICKS"
        for stage, pid in killed.items():
            run.health_pid(stage, not_pid=pid)
        wait_for(
            lambda: metric(feed, "alpha_panda_messages_produced_total") >= TICKS,
            timeout=120,
            what="the feed to publish every tick",
        )
        # Quiescence from the log itself (counters restart with a killed process): every
        # stage has committed everything it consumes, stage by stage downstream.
        for stage, topics in CONSUMED.items():
            for topic in topics:
                wait_committed(bootstrap, stage, topic, timeout=120)
        assert "DOWN" not in run.output()
        # Read the log while its broker runs (the run's embedded broker stops with it).
        generated = asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name))
        validated = asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name))
        fill_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
        ticks = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name))
        group = Stage.PORTFOLIO_MANAGER.consumer_group
        tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()

    assert generated and validated and fill_records, "the walk should make both strategies trade"
    fills = [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(fill_records, key=lambda r: (r.partition, r.offset))
    ]
    # Every approved signal was filled or refused by the engine (a redelivered one again,
    # under the same ids): none lost between risk and the fill topic.
    validated_ids = {
        decode(
            r.value, topic=r.topic, expect=EventType.SIGNAL_VALIDATED, key=r.key
        ).data.signal_event_id
        for r in validated
    }
    engine_refused = {
        rejected.signal_event_id
        for r in rejected
        if (rejected := decode(r.value, topic=r.topic, key=r.key).data).rejected_by
        == Stage.TRADING_ENGINE.value
    }
    assert {f.signal_event_id for f in fills} | engine_refused == validated_ids
    last_price: dict[int, Decimal] = {}
    for r in sorted(ticks, key=lambda r: (r.partition, r.offset)):
        tick = decode(r.value, topic=r.topic).data
        last_price[tick.instrument_token] = tick.last_price
    expected = recompute(fills, last_price)

    assert set(tables) == set(expected)
    for sid, want in expected.items():
        portfolio = Portfolio.from_json_dict(tables[sid])
        assert q(portfolio.cash) == q(want["cash"]), sid
        assert q(portfolio.fees_paid) == q(want["fees"]), sid
        assert q(portfolio.realized_pnl) == q(want["realised"]), sid
        assert portfolio.trade_count == len({f.fill_id for f in fills if f.strategy_id == sid})
