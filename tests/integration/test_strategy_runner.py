"""The strategy runner on the embedded broker with its configuration in PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED
from models.codec import decode
from models.envelope import EventType, new_event_id
from models.events import MarketTick
from tests.factories import T0, tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    metric,
    produce,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

MOM, MR = 101, 202


def tick_record(t: MarketTick):  # type: ignore[no-untyped-def]
    return MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test-feed")


async def configure(database_url: str, *, momentum_enabled: bool = True) -> None:
    engine = db.create_engine(database_url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        # lookback 1, 1 %: BUY on a >= +1 % tick-to-tick move while flat, SELL on <= -1 %.
        await db.add_strategy(
            sessions,
            "mom",
            "momentum",
            [(MOM, f"S{MOM}")],
            {"lookback": 1, "threshold_pct": "1", "quantity": 5},
            enabled=momentum_enabled,
        )
        # Positive control on another instrument: same rule, other id.
        await db.add_strategy(
            sessions,
            "ctl",
            "momentum",
            [(MR, f"S{MR}")],
            {"lookback": 1, "threshold_pct": "1", "quantity": 7},
        )
    finally:
        await engine.dispose()


async def set_enabled(database_url: str, strategy_id: str, enabled: bool) -> None:
    engine = db.create_engine(database_url)
    try:
        await db.set_enabled(db.session_factory(engine), strategy_id, enabled)
    finally:
        await engine.dispose()


# prices of instrument MOM; the momentum rule above signals on exactly these ticks:
# 100 -> 102 (+2 %) BUY; 103 (+0.98 %) nothing; 101 (-1.94 %) SELL; 101.5 nothing;
# 103 (+1.48 %) BUY; 104 nothing; 102.9 (-1.06 %) SELL.
MOM_PRICES = ["100", "102", "103", "101", "101.5", "103", "104", "102.9"]
EXPECTED = [(1, "BUY"), (3, "SELL"), (5, "BUY"), (7, "SELL")]


def _signals(records: list) -> list:  # type: ignore[type-arg]
    out = []
    for r in records:
        env = decode(r.value, topic=r.topic, expect=EventType.SIGNAL_GENERATED, key=r.key)
        out.append(env)
    return out


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    return Deployment(bootstrap=fresh_broker.bootstrap, data_dir=tmp_path, database_url=pg_url)


def test_known_ticks_give_exactly_the_expected_signals_with_keys(deployment: Deployment) -> None:
    asyncio.run(configure(deployment.database_url))
    runner = StageProcess(deployment, Stage.STRATEGY_RUNNER).start()
    try:
        runner.wait_ready(require="2 strategies enabled")
        ticks = [tick(p, i, MOM) for i, p in enumerate(MOM_PRICES)]
        # a malformed record in the middle of the stream: dead-lettered, the rest processed
        records: list = [tick_record(t) for t in ticks[:4]]  # type: ignore[type-arg]
        records.append((MARKET_TICKS.name, str(MOM).encode(), b'{"type": "market.tick", "oops"'))
        records += [tick_record(t) for t in ticks[4:]]
        asyncio.run(produce(deployment.bootstrap, records))

        signals = _signals(
            asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name, until=4))
        )
        got = [(s.data.signal_ts, s.data.side.value) for s in signals]
        assert got == [(T0 + timedelta(seconds=i), side) for i, side in EXPECTED]
        for s in signals:
            assert s.key == f"mom:{MOM}"
            assert s.data.quantity == 5 and s.data.strategy_id == "mom"
            assert s.ts == s.data.signal_ts  # event time comes from the tick
            assert s.source == "strategy-runner"

        dlq = asyncio.run(read_topic(deployment.bootstrap, MARKET_TICKS.dlq_name, until=1))
        headers = dict(dlq[0].headers)
        assert dlq[0].key == str(MOM).encode()
        assert dlq[0].value == b'{"type": "market.tick", "oops"'
        assert headers["x-error-type"].startswith(b"DecodeError.invalid_json")
        assert headers["x-original-topic"] == MARKET_TICKS.name.encode()
        assert headers["x-stage"] == b"strategy-runner"

        decode_logs = [e for e in runner.log_events() if e.get("event") == "decode_failed"]
        assert len(decode_logs) == 1
        assert decode_logs[0]["topic"] == MARKET_TICKS.name
        assert decode_logs[0]["partition"] == int(headers["x-original-partition"])
        assert decode_logs[0]["offset"] == int(headers["x-original-offset"])
    finally:
        runner.stop()


def test_disabling_a_strategy_stops_its_signals_without_a_restart(deployment: Deployment) -> None:
    asyncio.run(configure(deployment.database_url))
    runner = StageProcess(deployment, Stage.STRATEGY_RUNNER).start()
    try:
        runner.wait_ready(require="2 strategies enabled")
        first = [tick("100", 0, MOM), tick("102", 1, MOM), tick("100", 0, MR), tick("102", 1, MR)]
        asyncio.run(produce(deployment.bootstrap, [tick_record(t) for t in first]))
        before = _signals(
            asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name, until=2))
        )
        assert sorted(s.data.strategy_id for s in before) == ["ctl", "mom"]

        asyncio.run(set_enabled(deployment.database_url, "mom", False))
        runner.wait_ready(require="1 strategies enabled", timeout=10)

        # Both would SELL on a -2 % move; only the still-enabled control may.
        second = [tick("99.9", 2, MOM), tick("99.9", 2, MR)]
        asyncio.run(produce(deployment.bootstrap, [tick_record(t) for t in second]))
        after = _signals(
            asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name, until=3))
        )
        # Every tick processed (the runner's own count), so no signal can still be coming.
        wait_for(
            lambda: (
                metric(runner, "alpha_panda_messages_processed_total", topic=MARKET_TICKS.name) == 6
            ),
            what="runner processed all 6 ticks",
        )
        settled = _signals(asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name)))
        assert len(after) == 3
        # Records come back grouped by partition, so compare as a multiset.
        assert sorted((s.data.strategy_id, s.data.side.value) for s in settled) == [
            ("ctl", "BUY"),
            ("ctl", "SELL"),
            ("mom", "BUY"),
        ]
        assert runner.proc is not None and runner.proc.poll() is None
    finally:
        runner.stop()


def test_runner_killed_mid_sequence_emits_what_an_uninterrupted_run_would(
    deployment: Deployment,
) -> None:
    asyncio.run(configure(deployment.database_url))
    prices = [
        str(Decimal(100) + Decimal(i % 7) * Decimal("1.5") - Decimal(i % 3)) for i in range(120)
    ]
    ticks = [tick(p, i, MOM) for i, p in enumerate(prices)]

    # The uninterrupted run, computed with the same pure strategy the runner hosts.
    from strategies.base import StrategyConfig
    from strategies.factory import StrategyFactory

    reference = StrategyFactory.create(
        "momentum",
        StrategyConfig(strategy_id="mom", instrument_token=MOM, symbol=f"S{MOM}"),
        {"lookback": 1, "threshold_pct": "1", "quantity": 5},
    )
    expected = [(s.signal_ts, s.side.value) for t in ticks for s in reference.on_tick(t)]
    assert len(expected) > 10

    records = [tick_record(t) for t in ticks]
    runner = StageProcess(deployment, Stage.STRATEGY_RUNNER).start()
    try:
        runner.wait_ready(require="2 strategies enabled")
        asyncio.run(produce(deployment.bootstrap, records[:60]))
        # Wait for some (not necessarily all) of the first half's signals, then kill -9.
        asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name, until=3))
        runner.kill()
        asyncio.run(produce(deployment.bootstrap, records[60:]))
        runner = StageProcess(deployment, Stage.STRATEGY_RUNNER).start()
        runner.wait_ready(require="2 strategies enabled")

        def distinct() -> int:
            records = asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name))
            return len({s.id for s in _signals(records)})

        # Redelivered signals repeat an id; wait for every distinct one.
        wait_for(lambda: distinct() >= len(expected), timeout=90, what="every distinct signal")
        got = _signals(asyncio.run(read_topic(deployment.bootstrap, SIGNALS_GENERATED.name)))
        skipped = metric(runner, "alpha_panda_offset_gaps_total")
    finally:
        runner.stop()

    assert skipped == 0, "the restarted worker skipped source records"
    by_id: dict[str, tuple[datetime, str]] = {}
    for s in got:
        value = (s.data.signal_ts, s.data.side.value)
        # A duplicate is allowed only as the same event (same id, same content).
        assert by_id.setdefault(s.id, value) == value
    assert sorted(by_id.values()) == sorted(expected)
    assert len({v for v in by_id.values()}) == len(by_id), "a signal emitted twice under two ids"
