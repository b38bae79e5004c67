"""Kite's ticks are checked against each instrument's own tick size, from the master.

The local Kite server lists IDEA on a ₹0.01 tick, RELIANCE on ₹0.05, and the index
NIFTY 50 (segment INDICES) with a row tick size of ₹0.05 while its value moves in paise,
as a computed index does. The real feed streams them into market.ticks; the three stages
that check ticks run against the embedded broker and PostgreSQL. Each stage loads the
master before the feed starts (its /health says so), so every tick is judged by the
master's sizes: IDEA's and the index's ticks off the ₹0.05 grid are accepted, and one
RELIANCE price off its ₹0.05 grid (but on the default ₹0.01 one, so only the master's
size refuses it) is dead-lettered by each stage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.broker_session import store_session
from alpha_panda.domain.price_band import OFF_TICK_SIZE
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS, Tables, changelog_topic
from models.codec import decode
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    read_topic,
    wait_committed,
    wait_for,
)
from tests.integration.kite_thread import KiteThread, kite_in_thread

pytestmark = pytest.mark.integration

IDEA, NIFTY, RELIANCE = 3677697, 256265, 738561
STAGES = [Stage.STRATEGY_RUNNER, Stage.TRADING_ENGINE, Stage.PORTFOLIO_MANAGER]
STEPS_BEFORE, STEPS_AFTER = 30, 5
OFF_GRID, BACK_ON_GRID = Decimal("1250.03"), Decimal("1250.05")
FIVE_PAISE = Decimal("0.05")


@pytest.fixture
def kite() -> Iterator[KiteThread]:
    # tick_interval_s=None: no walk of its own; the test steps the market.
    with kite_in_thread(tick_interval_s=None) as handle:
        yield handle


async def configure(url: str, access_token: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        await db.add_strategy(
            sessions,
            "mom",
            "momentum",
            [(IDEA, "IDEA"), (NIFTY, "NIFTY 50"), (RELIANCE, "RELIANCE")],
            {"lookback": 3, "threshold_pct": "5", "quantity": 1},
        )
        await store_session(
            sessions,
            user_id="FK0001",
            user_name="Fake User",
            access_token=access_token,
            login_time=datetime.now(UTC),
        )
    finally:
        await engine.dispose()


def test_one_paisa_and_index_ticks_pass_and_an_off_grid_five_paisa_tick_is_dead_lettered(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    bootstrap = fresh_broker.bootstrap
    asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))
    asyncio.run(configure(pg_url, kite.sync(kite.kite.issue_token)))
    deployment = Deployment(
        bootstrap=bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={
            "ALPHA_PANDA_FEED_SOURCE": "zerodha",
            "ALPHA_PANDA_ZERODHA_API_KEY": kite.kite.api_key,
            "ALPHA_PANDA_ZERODHA_ROOT_URL": kite.kite.root_url,
            "ALPHA_PANDA_ZERODHA_WS_URL": kite.kite.ws_url,
            "ALPHA_PANDA_ZERODHA_TOKEN_POLL_S": "0.5",
            # The engine trades live only with this on the embedded broker; it shares its
            # token watcher with the tick sizes (the other stages have their own).
            "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER": "true",
            "ALPHA_PANDA_REDIS_ENABLED": "false",
        },
    )
    listed = len(kite.kite.market.instruments)
    workers = {stage: StageProcess(deployment, stage).start() for stage in STAGES}
    try:
        for worker in workers.values():
            health = worker.wait_ready(
                timeout=90, require=f"tick sizes: {listed} instruments from Kite's"
            )
            assert health["checks"]["tick_sizes"]["ok"] is True
        feed = workers[Stage.MARKET_FEED] = StageProcess(deployment, Stage.MARKET_FEED).start()
        feed.wait_ready(timeout=90, require="zerodha: connected, 3 instruments")

        def step() -> None:
            kite.call(kite.kite.step())

        for _ in range(STEPS_BEFORE):
            step()
        kite.sync(kite.kite.set_book, RELIANCE, [(OFF_GRID, 10)], [(OFF_GRID + 1, 10)])
        step()
        kite.sync(kite.kite.set_book, RELIANCE, [(BACK_ON_GRID, 10)], [(BACK_ON_GRID + 1, 10)])
        for _ in range(STEPS_AFTER):
            step()

        def published() -> list[tuple[int, Decimal]]:
            records = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name))
            records.sort(key=lambda r: (r.partition, r.offset))  # an instrument's in order
            return [
                (t.data.instrument_token, t.data.last_price)
                for t in (decode(r.value, topic=r.topic, key=r.key) for r in records)
            ]

        def all_steps_published() -> bool:
            reliance = [price for token, price in published() if token == RELIANCE]
            return (
                OFF_GRID in reliance
                and reliance[reliance.index(OFF_GRID) + 1 :] == [BACK_ON_GRID] * STEPS_AFTER
            )

        wait_for(all_steps_published, timeout=60, what="the feed published every step's ticks")
        feed.stop()
        for stage in STAGES:
            wait_committed(bootstrap, stage, MARKET_TICKS.name, timeout=90)
        ticks = published()
        dlq = asyncio.run(read_topic(bootstrap, MARKET_TICKS.dlq_name))
        prices = {
            stage: asyncio.run(
                latest_per_key(bootstrap, changelog_topic(stage.consumer_group, Tables.LAST_PRICES))
            )
            for stage in (Stage.TRADING_ENGINE, Stage.PORTFOLIO_MANAGER)
        }
        states = asyncio.run(
            latest_per_key(
                bootstrap,
                changelog_topic(Stage.STRATEGY_RUNNER.consumer_group, Tables.STRATEGY_STATE),
            )
        )
    finally:
        for worker in workers.values():
            worker.stop()

    def prices_of(token: int) -> list[Decimal]:
        return [price for t, price in ticks if t == token]

    # The test means something only if the paisa instrument and the index left the
    # ₹0.05 grid, and RELIANCE left it exactly once.
    assert any(p % FIVE_PAISE for p in prices_of(IDEA)), prices_of(IDEA)
    assert any(p % FIVE_PAISE for p in prices_of(NIFTY)), prices_of(NIFTY)
    assert [p for p in prices_of(RELIANCE) if p % FIVE_PAISE] == [OFF_GRID]

    # Only that tick was dead-lettered, once by each stage, for its instrument's tick size.
    assert len(dlq) == len(STAGES), [dict(r.headers) for r in dlq]
    refused_by = []
    for record in dlq:
        headers = {k: v.decode() for k, v in record.headers}
        assert record.key == str(RELIANCE).encode()
        assert headers["x-error-type"] == OFF_TICK_SIZE
        assert headers["x-error-message"] == (
            f"RELIANCE ({RELIANCE}): price {OFF_GRID} is not a multiple of the tick size 0.05"
        )
        refused_by.append(headers["x-stage"])
    assert sorted(refused_by) == sorted(s.value for s in STAGES)

    # Every other tick was acted on: each stage's last price is the last one published.
    last = {token: prices_of(token)[-1] for token in (IDEA, NIFTY, RELIANCE)}
    assert last[RELIANCE] == BACK_ON_GRID
    for stage, table in prices.items():
        assert {int(k): Decimal(v["price"]) for k, v in table.items()} == last, stage
    assert {key: Decimal(v["px"]) for key, v in states.items()} == {
        f"mom:{token}": price for token, price in last.items()
    }
