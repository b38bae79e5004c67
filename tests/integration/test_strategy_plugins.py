"""The example plug-in (examples/alpha_panda_example_strategy, installed in the test venv
by the Makefile) configured through the CLI and run by the real strategy runner and risk
manager, next to a configuration row naming a plug-in that cannot be imported: that one
is skipped with its reason and the runner keeps trading the others."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED, SIGNALS_VALIDATED
from models.codec import decode
from models.db import StrategyConfiguration
from models.envelope import new_event_id
from models.events import Side
from strategies.base import StrategyConfig
from strategies.factory import StrategyFactory
from tests.factories import OPEN, tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    metric,
    produce,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

TOKEN = 738561
PRICES = ["100", "101", "99", "101", "101.05", "100", "98.9", "98.95", "99.5", "101.1"]
CLI = str(Path(sys.executable).with_name("alpha-panda"))


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
    env["ALPHA_PANDA_DATABASE_URL"] = url
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def add_broken_row(url: str) -> None:
    # Written past the store's validation (which refuses it), as a row left behind by a
    # plug-in that was uninstalled, or edited by hand, would be.
    engine = db.create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(StrategyConfiguration).values(
                    strategy_id="gone",
                    kind="uninstalled_pkg:Strategy",
                    instruments=[{"token": TOKEN, "symbol": "RELIANCE"}],
                    parameters={"quantity": 1},
                    enabled=True,
                    execution_mode="paper",
                    risk_limits={},
                )
            )
    finally:
        await engine.dispose()


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/config.db",
    )


def test_example_plugin_trades_in_the_pipeline_and_a_broken_one_is_skipped(
    deployment: Deployment,
) -> None:
    url = deployment.database_url
    assert cli(url, "db", "upgrade").returncode == 0
    refused = cli(url, "strategies", "add", "x", "--kind", "nope_pkg:Nope", "--instrument", "1:X")
    assert refused.returncode != 0
    assert "cannot import 'nope_pkg:Nope': ModuleNotFoundError" in refused.stderr
    added = cli(
        url,
        "strategies",
        "add",
        "bo",
        "--kind",
        "breakout",
        "--instrument",
        f"{TOKEN}:RELIANCE",
        "--param",
        "window=3",
        "--param",
        "quantity=7",
        "--product",
        "CNC",
    )
    assert added.returncode == 0, added.stderr
    assert "risk: product=CNC" in added.stdout
    kinds = cli(url, "strategies", "kinds")
    assert kinds.returncode == 0
    assert "breakout  (plug-in alpha_panda_example_strategy.breakout)  parameters: quantity, " in (
        kinds.stdout
    )
    asyncio.run(add_broken_row(url))

    runner = StageProcess(deployment, Stage.STRATEGY_RUNNER).start()
    risk = StageProcess(deployment, Stage.RISK_MANAGER).start()
    try:
        runner.wait_ready(require="2 strategies enabled")
        risk.wait_ready(require="2 strategies enabled")
        ticks = [
            tick(p, ts=OPEN + timedelta(seconds=i), token=TOKEN, volume=i + 1)
            for i, p in enumerate(PRICES)
        ]
        records = [
            MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test-feed")
            for t in ticks
        ]
        asyncio.run(produce(deployment.bootstrap, records))
        wait_for(
            lambda: (
                metric(runner, "alpha_panda_messages_processed_total", topic=MARKET_TICKS.name)
                == len(PRICES)
            ),
            what="runner processed every tick",
        )
        generated = asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name))
        validated = asyncio.run(
            read_topic(deployment.bootstrap, SIGNALS_VALIDATED.name, until=len(generated))
        )
        skipped = [e for e in runner.log_events() if e.get("event") == "strategy_skipped"]
        assert runner.proc is not None and runner.proc.poll() is None
    finally:
        runner.stop()
        risk.stop()

    # The same ticks through the same class, directly: what the runner must have emitted.
    reference = StrategyFactory.create(
        "breakout",
        StrategyConfig(strategy_id="bo", instrument_token=TOKEN, symbol="RELIANCE"),
        {"window": 3, "quantity": 7},
    )
    expected = [(s.signal_ts, s.side, s.reason) for t in ticks for s in reference.on_tick(t)]
    assert [side for _, side, _ in expected] == [Side.BUY, Side.SELL, Side.BUY]
    signals = sorted(
        (decode(r.value, topic=r.topic, key=r.key).data for r in generated),
        key=lambda s: s.signal_ts,
    )
    assert [(s.signal_ts, s.side, s.reason) for s in signals] == expected
    assert {s.strategy_id for s in signals} == {"bo"}
    assert len(validated) == len(expected)  # risk approved them: a known strategy

    assert len(skipped) >= 1
    assert (
        "strategy 'gone': parameter 'kind': cannot import 'uninstalled_pkg:Strategy'"
        in (skipped[0]["reason"])
    )
