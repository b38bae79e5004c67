"""A tick outside the price band, or off the tick grid, is dead-lettered with its reason
by every stage that acts on ticks, and never reaches their state.

Real stages on the embedded broker and PostgreSQL. One momentum strategy trades the
instrument, so the strategy runner acts on its ticks too. The sequence is
100.00 (good), 1e12 (out of band), 100.003 (off the 0.01 grid every instrument has
without Kite's instruments master), 100.50 (good). Had the
1e12 tick been accepted, the momentum rule would have signalled on it and the 100.50
tick would then have been the "jump"; so the final prices of every stage's table and
an empty signal topic show the bad ticks changed nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED, Tables
from models.envelope import new_event_id
from tests.factories import tick as stub_tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    produce,
    read_topic,
    wait_committed,
)

pytestmark = pytest.mark.integration

TOKEN = 101
STAGES = [Stage.STRATEGY_RUNNER, Stage.TRADING_ENGINE, Stage.PORTFOLIO_MANAGER]


def tick_record(price: str, second: int) -> object:
    t = stub_tick(price, second, TOKEN)
    return MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test-feed")


async def configure(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        await db.add_strategy(
            db.session_factory(engine),
            "mom",
            "momentum",
            [(TOKEN, f"S{TOKEN}")],
            {"lookback": 1, "threshold_pct": "1", "quantity": 5},
        )
    finally:
        await engine.dispose()


def changelog(stage: Stage, table: str) -> str:
    return f"{stage.consumer_group}-{table}-changelog"


def test_out_of_band_and_off_grid_ticks_are_dead_lettered_by_every_tick_stage(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> None:
    bootstrap = fresh_broker.bootstrap
    asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))
    asyncio.run(configure(pg_url))
    deployment = Deployment(
        bootstrap=bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    workers = [StageProcess(deployment, s).start() for s in STAGES]
    try:
        for w in workers:
            w.wait_ready()
        ticks = [
            tick_record("100.00", 0),
            tick_record("1000000000000", 1),
            tick_record("100.003", 2),
            tick_record("100.50", 3),
        ]
        asyncio.run(produce(bootstrap, ticks))

        dlq = asyncio.run(read_topic(bootstrap, MARKET_TICKS.dlq_name, until=2 * len(STAGES)))
        assert len(dlq) == 2 * len(STAGES)
        by_offset: dict[int, list[dict[str, str]]] = {}
        for record in dlq:
            headers = {k: v.decode() for k, v in record.headers}
            by_offset.setdefault(int(headers["x-original-offset"]), []).append(headers)
        band, grid = (by_offset[o] for o in sorted(by_offset))
        for headers in band:
            assert headers["x-error-type"] == "PriceBand.out_of_band"
            assert headers["x-error-message"] == (
                f"S{TOKEN} ({TOKEN}): price 1000000000000 is 999999999900.00 % from the "
                "previous price 100.00, outside the 20 % band"
            )
        for headers in grid:
            assert headers["x-error-type"] == "PriceBand.off_tick_size"
            assert headers["x-error-message"].endswith(
                "price 100.003 is not a multiple of the tick size 0.01"
            )
        for group in (band, grid):
            assert sorted(h["x-stage"] for h in group) == sorted(s.value for s in STAGES)
            assert {h["x-attempts"] for h in group} == {"1"}

        for stage in STAGES:
            wait_committed(bootstrap, stage, MARKET_TICKS.name)
        # The last accepted price is the good tick after the bad ones, in every stage.
        for stage in (Stage.TRADING_ENGINE, Stage.PORTFOLIO_MANAGER):
            prices = asyncio.run(latest_per_key(bootstrap, changelog(stage, Tables.LAST_PRICES)))
            assert prices[str(TOKEN)]["price"] == "100.50", stage
        states = asyncio.run(
            latest_per_key(bootstrap, changelog(Stage.STRATEGY_RUNNER, Tables.STRATEGY_STATE))
        )
        assert states[f"mom:{TOKEN}"]["px"] == "100.50"
        # +0.5 % from 100.00: no signal. The 1e12 tick, had the strategy seen it, was one.
        assert asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name)) == []
    finally:
        for w in workers:
            w.stop()
