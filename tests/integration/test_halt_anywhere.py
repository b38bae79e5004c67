"""`alpha-panda halt --all` run from another working directory stops approvals in the
running pipeline within the refresh interval, and says which database it wrote.

A real risk manager on the embedded broker uses the default database: the SQLite file
inside its data directory (ALPHA_PANDA_DATABASE_URL left empty). The CLI runs as its own
process from an unrelated directory with only ALPHA_PANDA_DATA_DIR set, as an operator's
shell would. `--wait` makes the CLI itself fail unless the risk manager acknowledges the
halt within the bound given (ten refresh intervals).

The kill switch also stops execution: a real trading engine worker, once it has
acknowledged the halt, refuses a signal the risk manager approved before it and cancels
a resting paper LIMIT order instead of letting the next tick fill it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
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
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    OutgoingRecord,
)
from models.codec import decode
from models.envelope import EventType, new_event_id
from models.events import RejectionReason, ValidatedSignal
from tests.factories import OPEN
from tests.factories import signal as stub_signal
from tests.factories import tick as stub_tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    metric,
    produce,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

REFRESH_S = 0.3  # the harness's ALPHA_PANDA_DATABASE_CONFIG_REFRESH_S
PROCESSED = "alpha_panda_messages_processed_total"


def signal_record(second: int) -> object:
    signal = stub_signal(
        quantity=1, price="100", token=101, strategy_id="mom", ts=OPEN + timedelta(seconds=second)
    )
    return SIGNALS_GENERATED.record(
        signal, event_id=new_event_id(), ts=signal.signal_ts, source="test"
    )


def cli(cwd: Path, data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
    env["ALPHA_PANDA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "alpha_panda.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_halt_from_another_directory_stops_approvals_in_the_running_pipeline(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "deployment"
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    settings = load_settings(data_dir=data_dir)
    database = data_dir / "alpha_panda.db"
    assert settings.database.url == f"sqlite+aiosqlite:///{database}"
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))

    async def configure() -> None:
        engine = db.create_engine(settings.database.url)
        try:
            await db.upgrade(engine)
            await db.add_strategy(db.session_factory(engine), "mom", "momentum", [(101, "S101")])
        finally:
            await engine.dispose()

    asyncio.run(configure())
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=data_dir,
        database_url="",  # the default: the SQLite file in the data directory
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    risk = StageProcess(deployment, Stage.RISK_MANAGER).start()
    try:
        risk.wait_ready()
        asyncio.run(produce(fresh_broker.bootstrap, [signal_record(1)]))
        asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_VALIDATED.name, until=1))

        halted = cli(elsewhere, data_dir, "halt", "--all", "--wait", str(10 * REFRESH_S))
        assert halted.returncode == 0, halted.stderr
        lines = halted.stdout.splitlines()
        assert lines[0] == f"database: sqlite+aiosqlite:///{database}"
        assert lines[1] == "halted all trading: halted by operator"
        assert lines[2].startswith("applied by the risk manager ")
        assert not (elsewhere / "var").exists() and list(elsewhere.iterdir()) == []

        asyncio.run(produce(fresh_broker.bootstrap, [signal_record(2)]))
        [rejected] = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_REJECTED.name, until=1))
        envelope = decode(rejected.value, topic=rejected.topic, expect=EventType.SIGNAL_REJECTED)
        assert envelope.data.reason is RejectionReason.KILL_SWITCH
        validated = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_VALIDATED.name))
        assert len(validated) == 1  # only the signal before the halt

        status = cli(elsewhere, data_dir, "status")
        assert status.returncode == 0, status.stderr
        out = status.stdout.splitlines()
        assert out[0] == f"database: sqlite+aiosqlite:///{database}"
        assert out[1].startswith(
            f"pipeline: sqlite+aiosqlite:///{database} (recorded by risk-manager"
        )
        assert "ANOTHER DATABASE" not in status.stdout
        assert out[2] == "HALTED"
        assert "applied by the risk manager" in out[3]
    finally:
        risk.stop()


def tick_record(price: str, second: int) -> OutgoingRecord:
    tick = stub_tick(price, token=101, ts=OPEN + timedelta(seconds=second))
    return MARKET_TICKS.record(tick, event_id=new_event_id(), ts=tick.exchange_ts, source="test")


def validated_record(signal_event_id: str, second: int, limit: str | None = None) -> OutgoingRecord:
    signal = stub_signal(
        quantity=1,
        price="100",
        token=101,
        strategy_id="mom",
        limit=limit,
        ts=OPEN + timedelta(seconds=second),
    )
    validated = ValidatedSignal(
        signal_event_id=signal_event_id, signal=signal, validated_ts=signal.signal_ts
    )
    return SIGNALS_VALIDATED.record(
        validated, event_id=new_event_id(), ts=signal.signal_ts, source="test"
    )


def test_halt_all_stops_execution_in_the_running_engine(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "deployment"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = load_settings(data_dir=data_dir)
    bootstrap = fresh_broker.bootstrap
    asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))

    async def configure() -> None:
        engine = db.create_engine(settings.database.url)
        try:
            await db.upgrade(engine)
            await db.add_strategy(db.session_factory(engine), "mom", "momentum", [(101, "S101")])
        finally:
            await engine.dispose()

    asyncio.run(configure())
    deployment = Deployment(
        bootstrap=bootstrap,
        data_dir=data_dir,
        database_url="",
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    try:
        engine.wait_ready()
        asyncio.run(produce(bootstrap, [tick_record("100", 1)]))
        wait_for(
            lambda: metric(engine, PROCESSED, topic=MARKET_TICKS.name) >= 1,
            what="the engine to take the first price",
        )
        # A BUY LIMIT at 99 rests below the market.
        asyncio.run(produce(bootstrap, [validated_record("resting", 2, limit="99")]))
        wait_for(
            lambda: metric(engine, PROCESSED, topic=ENGINE_SIGNALS_BY_INSTRUMENT.name) >= 1,
            what="the LIMIT order to rest",
        )

        halted = cli(elsewhere, data_dir, "halt", "--all")
        assert halted.returncode == 0, halted.stderr

        def engine_applied() -> bool:
            status = cli(elsewhere, data_dir, "status", "--json")
            assert status.returncode == 0, status.stderr
            [halt] = json.loads(status.stdout)["halts"]
            return halt["engine_applied_at"] is not None

        wait_for(engine_applied, timeout=30, what="the engine to acknowledge the halt")
        text = cli(elsewhere, data_dir, "status").stdout
        assert "applied by the trading engine" in text

        # Approved by the risk manager before the halt, still in flight after it; then a
        # tick through the resting order's limit.
        asyncio.run(produce(bootstrap, [validated_record("approved-before", 3)]))
        asyncio.run(produce(bootstrap, [tick_record("98.50", 4)]))
        rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name, until=2))
        wait_for(
            lambda: metric(engine, PROCESSED, topic=MARKET_TICKS.name) >= 2,
            what="the engine to finish the second tick",
        )
        fills = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
    finally:
        engine.stop()

    assert fills == []  # neither the approved signal nor the resting order filled
    by_signal = {
        e.data.signal_event_id: e.data
        for e in (
            decode(r.value, topic=r.topic, expect=EventType.SIGNAL_REJECTED) for r in rejected
        )
    }
    assert set(by_signal) == {"approved-before", "resting"}
    assert {r.reason for r in by_signal.values()} == {RejectionReason.KILL_SWITCH}
    assert {r.rejected_by for r in by_signal.values()} == {"trading-engine"}
    assert by_signal["approved-before"].detail == "all trading halted: not executed"
    assert by_signal["resting"].detail == "all trading halted: resting LIMIT order cancelled"
