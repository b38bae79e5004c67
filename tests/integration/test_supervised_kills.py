"""Under load, `kill -9` of each stage in turn, and of the embedded broker, while
`alpha-panda run` supervises: every process comes back with no operator action, and the
portfolios equal an independent recomputation from the fill topic (no fill lost, none
booked twice)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from agents.portfolio_manager import RECENT_FILLS_KEPT
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
from models.events import OrderFill
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    NotYet,
    latest_per_key,
    metric,
    read_topic,
    wait_committed,
    wait_for,
)
from tests.integration.pipeline_run import Run
from tests.integration.test_api import SECRET, call, login, prepare_database, summaries
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
PRODUCED = "alpha_panda_messages_produced_total"


@dataclass
class Books:
    """What the log holds, read while its broker runs."""

    fills: list[OrderFill]
    expected: dict[str, dict[str, Decimal]]  # recomputed from `fills`, independently
    tables: dict[str, Any]  # the portfolio manager's portfolios, from their changelog

    @property
    def fill_ids(self) -> set[str]:
        return {f.fill_id for f in self.fills}

    def trade_count(self, strategy_id: str) -> int:
        return len({f.fill_id for f in self.fills if f.strategy_id == strategy_id})


def wait_quiescent(bootstrap: str) -> None:
    """Quiescence from the log itself (counters restart with a killed process): every
    stage has committed everything it consumes, stage by stage downstream."""
    for stage, topics in CONSUMED.items():
        for topic in topics:
            wait_committed(bootstrap, stage, topic, timeout=120)


def read_books(bootstrap: str) -> Books:
    """The books as the log holds them, once the pipeline is quiescent.

    Asserts that every approved signal was filled or refused by the engine (a redelivered
    one again, under the same ids): none lost between risk and the fill topic, none
    executed twice.
    """
    generated = asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name))
    validated = asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name))
    fill_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
    rejected = asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
    ticks = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name))
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))

    assert generated and validated and fill_records, "the walk should make both strategies trade"
    fills = [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(fill_records, key=lambda r: (r.partition, r.offset))
    ]
    approved = [
        decode(r.value, topic=r.topic, expect=EventType.SIGNAL_VALIDATED, key=r.key).data
        for r in validated
    ]
    ordered = {v.signal_event_id: v.signal.quantity for v in approved}
    engine_refused = {
        rejected.signal_event_id
        for r in rejected
        if (rejected := decode(r.value, topic=r.topic, key=r.key).data).rejected_by
        == Stage.TRADING_ENGINE.value
    }
    assert {f.signal_event_id for f in fills} | engine_refused == set(ordered)
    # Each filled once: its distinct fills add up to its quantity (a signal executed again
    # under other fill ids would be booked twice).
    filled: dict[str, int] = defaultdict(int)
    for f in {f.fill_id: f for f in fills}.values():
        filled[f.signal_event_id] += f.quantity
    assert filled == {sid: n for sid, n in ordered.items() if sid in filled}
    last_price: dict[int, Decimal] = {}
    for r in sorted(ticks, key=lambda r: (r.partition, r.offset)):
        tick = decode(r.value, topic=r.topic).data
        last_price[tick.instrument_token] = tick.last_price
    return Books(fills, recompute(fills, last_price), tables)


def assert_tables_exact(books: Books) -> None:
    assert set(books.tables) == set(books.expected)
    for sid, want in books.expected.items():
        portfolio = Portfolio.from_json_dict(books.tables[sid])
        assert q(portfolio.cash) == q(want["cash"]), sid
        assert q(portfolio.fees_paid) == q(want["fees"]), sid
        assert q(portfolio.realized_pnl) == q(want["realised"]), sid
        assert portfolio.trade_count == books.trade_count(sid), sid


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
        ticks_sent = metric(feed, PRODUCED)
        assert ticks_sent < TICKS, "the feed finished before the last kill: raise TICKS"
        for stage, pid in killed.items():
            run.health_pid(stage, not_pid=pid)
        wait_for(
            lambda: metric(feed, PRODUCED) >= TICKS,
            timeout=120,
            what="the feed to publish every tick",
        )
        wait_quiescent(bootstrap)
        assert "DOWN" not in run.output()
        # Read the log while its broker runs (the run's embedded broker stops with it).
        books = read_books(bootstrap)
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()
    assert_tables_exact(books)


SNAPSHOT_TICKS = 1_000  # the first run's, kept by its clean stop: 5 s at 200/s
LOAD_TICKS = 5_000  # each feed process's after that: 25 s at 200/s, through the broker kill


def _fill_ids(bootstrap: str) -> set[str]:
    records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
    return {
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data.fill_id
        for r in records
    }


@dataclass
class Served:
    """What the read API serves of each portfolio's history."""

    fill_ids: dict[str, set[str]]
    equity_times: dict[str, list[datetime]]  # when each equity sample was taken

    @property
    def all_fill_ids(self) -> set[str]:
        return set().union(*self.fill_ids.values())


def _served(port: int, token: str) -> Served:
    served = Served({}, {})
    for sid in summaries(port, token):
        status, _, body = call(port, f"/api/v1/portfolios/{sid}/fills?limit=500", token=token)
        assert status == 200, body
        served.fill_ids[sid] = {row["fill_id"] for row in body["fills"]}
        status, _, body = call(port, f"/api/v1/portfolios/{sid}/equity?limit=500", token=token)
        assert status == 200 and body["source"] == "redis", body
        served.equity_times[sid] = [datetime.fromisoformat(s["ts"]) for s in body["samples"]]
    return served


def test_a_broker_killed_under_load_comes_back_and_books_exactly_its_restored_log(
    tmp_path: Path, redis_url: str
) -> None:
    """The embedded broker's crash loses the records since the last clean stop, by design
    (docs/RUNBOOK.md, "The embedded broker's log"): the supervisor restarts it from that
    stop's snapshot under a new log id. What must hold: every process comes back by
    itself; what the read API serves equals a recomputation from the fill topic as the
    restored log holds it (none of the lost fills served, none counted twice); and ticks
    flow again into new fills, booked exactly."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'config.db'}"
    asyncio.run(prepare_database(database_url))
    deployment = Deployment(
        bootstrap=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path / "var",
        database_url=database_url,
        redis_url=redis_url,
        extra_env={
            "ALPHA_PANDA_AUTH_JWT_SECRET": SECRET,
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": str(RATE),
            "ALPHA_PANDA_FEED_VOLATILITY_BPS": "15",
        },
    )
    bootstrap = deployment.bootstrap
    port = deployment.port(Stage.PORTFOLIO_MANAGER)
    client = redis.Redis.from_url(redis_url)

    def max_ticks(n: int) -> dict[str, str]:
        return {"ALPHA_PANDA_FEED_MAX_TICKS": str(n)}

    first = Run(
        tmp_path, list(Stage), deployment=deployment, name="first", env=max_ticks(SNAPSHOT_TICKS)
    )
    try:
        for stage in Stage:
            first.health_pid(stage)
        wait_for(
            lambda: metric(first.stage(Stage.MARKET_FEED), PRODUCED) >= SNAPSHOT_TICKS,
            timeout=60,
            what="the first run's ticks",
        )
        wait_quiescent(bootstrap)
        snapshot_fills = _fill_ids(bootstrap)
    finally:
        first.stop()
    assert first.proc.returncode == 0, first.output()
    assert "log: saved" in first.output()
    assert snapshot_fills, "no fills at the clean stop: the restored log would hold no books"

    run = Run(
        tmp_path, list(Stage), deployment=deployment, name="second", env=max_ticks(LOAD_TICKS)
    )
    try:
        pids = {stage: run.health_pid(stage) for stage in Stage}
        assert "log: restored" in run.output()
        feed = run.stage(Stage.MARKET_FEED)
        load_from, load_ticks_from = time.monotonic(), metric(feed, PRODUCED)
        token = login(port, "alice")

        # Under load, the API serves fills the crash is about to lose.
        def served_since_snapshot() -> set[str]:
            return _served(port, token).all_fill_ids - snapshot_fills

        wait_for(served_since_snapshot, timeout=60, what="fills served since the clean stop")
        before_kill = _served(port, token)
        doomed = before_kill.all_fill_ids - snapshot_fills
        ticks_before_kill = metric(feed, PRODUCED)
        assert ticks_before_kill < LOAD_TICKS, "the feed finished before the kill"
        os.kill(run.broker_pid(), signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
        rate = (ticks_before_kill - load_ticks_from) / (killed_at - load_from)

        wait_for(
            lambda: "broker back; stages restarted" in run.output(),
            timeout=60,
            what="the supervisor to restart the broker and the stages",
        )
        for stage, pid in pids.items():
            run.health_pid(stage, not_pid=pid)
        back_s = time.monotonic() - killed_at
        # Ticks flow again: the restarted feed publishes its own LOAD_TICKS, and every
        # stage consumes them all.
        wait_for(
            lambda: metric(feed, PRODUCED) >= LOAD_TICKS,
            timeout=120,
            what="the restarted feed to publish every tick",
        )
        wait_quiescent(bootstrap)
        books = read_books(bootstrap)

        def served_exactly() -> Any:
            rows = summaries(port, token)
            served = {
                sid: (
                    *(Decimal(row[k]) for k in ("cash", "fees_paid", "realised_pnl", "equity")),
                    row["trade_count"],
                )
                for sid, row in rows.items()
            }
            want = {
                sid: (
                    *(q(w[k]) for k in ("cash", "fees", "realised", "equity")),
                    books.trade_count(sid),
                )
                for sid, w in books.expected.items()
            }
            from_mirror = {r["source"] for r in rows.values()} == {"redis"}
            return (served == want and from_mirror) or NotYet((served, want))

        wait_for(served_exactly, timeout=30, what="the API to serve the restored log's books")
        after_restart = _served(port, token)
        log_ids = re.findall(r"log id (\S+)", run.output())
        mirrored_log_id = client.get(deployment.mirror_keys.log_id)
        assert "DOWN" not in run.output()
    finally:
        run.stop()
        client.close()
    assert run.proc.returncode == 0, run.output()
    output = run.output()
    assert "broker exited with -9" in output
    assert "new log id" in output
    print(
        f"{len(snapshot_fills)} fills at the clean stop, {len(doomed)} served then lost to "
        f"the kill at {rate:.0f} ticks/s after {ticks_before_kill:.0f} ticks, every stage "
        f"back {back_s:.1f}s after it, {len(books.fill_ids - snapshot_fills)} fills since"
    )

    # The restored log holds the clean stop's fills and none of the lost ones.
    assert snapshot_fills <= books.fill_ids
    assert not doomed & books.fill_ids
    # New fills after the restart, booked exactly: tables and API equal the recomputation.
    assert books.fill_ids - snapshot_fills
    assert_tables_exact(books)
    # The mirror is bound to the restored log, and serves none of the lost fills.
    assert len(log_ids) == 2 and log_ids[0] != log_ids[1], log_ids
    assert mirrored_log_id == log_ids[1].encode()
    for sid, ids in after_restart.fill_ids.items():
        assert ids <= books.fill_ids, sid
        assert not ids & doomed, sid
        assert len(ids) == min(RECENT_FILLS_KEPT, books.trade_count(sid)), sid
    # The equity curve (kept only in the mirror) was dropped with the log it came from.
    assert any(t < killed_wall for times in before_kill.equity_times.values() for t in times)
    for sid, times in after_restart.equity_times.items():
        assert times and min(times) > killed_wall, sid
