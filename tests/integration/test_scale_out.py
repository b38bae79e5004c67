"""Scale-out: two workers for every consuming stage in one consumer group each; one of each
killed with SIGKILL mid-stream. The survivors take over; no fill is lost or counted twice;
portfolios equal an independent recomputation from the fill topic; the read API lists every
portfolio throughout, and a single portfolio is read from its owner wherever asked."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.ownership import partition_for
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
from models.envelope import EventType, derived_event_id
from models.events import Side
from tables.portfolio import Portfolio
from tests.conftest import REDIS_TEST_URL, _require_service
from tests.factories import NIFTY, fill
from tests.integration.harness import (
    Deployment,
    NotYet,
    StageProcess,
    latest_per_key,
    metric,
    produce,
    read_topic,
    wait_committed,
    wait_for,
)
from tests.integration.test_pipeline_e2e import q, recompute

pytestmark = pytest.mark.integration

N_TICKS = 1_500
PASSWORD = "correct horse battery"
PROCESSED = "alpha_panda_messages_processed_total"
CONSUMING = (
    Stage.PORTFOLIO_MANAGER,
    Stage.TRADING_ENGINE,
    Stage.RISK_MANAGER,
    Stage.STRATEGY_RUNNER,
)
# The topic whose records show that a worker of the stage is doing its work.
WORK_TOPIC = {
    Stage.STRATEGY_RUNNER: MARKET_TICKS.name,
    Stage.RISK_MANAGER: RISK_SIGNALS_BY_STRATEGY.name,
    Stage.TRADING_ENGINE: MARKET_TICKS.name,
    Stage.PORTFOLIO_MANAGER: MARKET_TICKS.name,
}
# Strategy ids chosen to spread over the fill topic's three partitions.
STRATEGIES = ("mom-a", "mom-b", "mr-a", "mr-b", "mom-c", "mr-c")


async def configure(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        await db.create_user(sessions, "alice", PASSWORD)
        instruments = [(256265, "NIFTY 50"), (738561, "RELIANCE"), (2953217, "TCS")]
        for i, sid in enumerate(STRATEGIES):
            pair = [instruments[i % 3], (408065, "INFY")]
            if sid.startswith("mom"):
                params = {"lookback": 3, "threshold_pct": "0.05", "quantity": 10}
                await db.add_strategy(sessions, sid, "momentum", pair, params)
            else:
                params = {"window": 10, "entry_z": "1.2", "exit_z": "0.2", "quantity": 5}
                await db.add_strategy(sessions, sid, "mean_reversion", pair, params)
    finally:
        await engine.dispose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the shared test Redis, removed afterwards."""
    _require_service("Redis", "127.0.0.1", 6379)
    import redis

    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_TEST_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def http(port: int, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def login(port: int) -> str:
    credentials = {"username": "alice", "password": PASSWORD}
    status, body = http(port, "/api/v1/auth/login", body=credentials)
    assert status == 200, body
    return str(body["access_token"])


class ListWatcher(threading.Thread):
    """Polls ``GET /api/v1/portfolios`` on a worker as a client does, remembering every
    answer: a 503 carries Retry-After (Redis slow to answer on a loaded machine, and this
    worker holding only part of the portfolios), and is retried a few times at once."""

    RETRIES = 5

    def __init__(self, port: int, token: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token = port, token
        self.answers: list[tuple[int, set[str]]] = []
        self.refusals: list[Any] = []  # every 503 body, retried or not
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for _ in range(self.RETRIES):
                try:
                    status, body = http(self.port, "/api/v1/portfolios", self.token)
                except OSError as exc:  # a refused connection is a failure too
                    status, body = -1, {"error": str(exc)}
                if status != 503:
                    break
                self.refusals.append(body)
                self.halt.wait(0.2)
            rows = body.get("portfolios", []) if status == 200 else []
            self.answers.append((status, {r["strategy_id"] for r in rows}))
            self.halt.wait(0.1)


@pytest.fixture
def deployment(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, redis_prefix: str
) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    asyncio.run(configure(pg_url))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        redis_url=REDIS_TEST_URL,
        extra_env={
            "ALPHA_PANDA_REDIS_KEY_PREFIX": redis_prefix,
            "ALPHA_PANDA_FEED_MAX_TICKS": str(N_TICKS),
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": "150",
            "ALPHA_PANDA_FEED_SEED": "7",
            "ALPHA_PANDA_FEED_VOLATILITY_BPS": "15",
        },
    )


def test_two_workers_per_stage_one_killed_each_lose_and_double_nothing(
    deployment: Deployment,
) -> None:
    assert len({partition_for(s, ORDERS_FILLED_PAPER.partitions) for s in STRATEGIES}) > 1
    workers = {
        stage: [StageProcess(deployment, stage, instance).start() for instance in (0, 1)]
        for stage in CONSUMING
    }
    feed: StageProcess | None = None
    watchers: list[ListWatcher] = []
    bootstrap = deployment.bootstrap
    try:
        for pair in workers.values():
            for worker in pair:
                worker.wait_ready(timeout=120)
        pm0, pm1 = workers[Stage.PORTFOLIO_MANAGER]
        token = login(pm0.port)
        feed = StageProcess(deployment, Stage.MARKET_FEED).start()

        # Mid-stream: every stage has done some of its work and portfolios exist.
        def busy() -> bool:
            done = all(
                sum(metric(w, PROCESSED, topic=WORK_TOPIC[stage]) for w in pair) >= 50
                for stage, pair in workers.items()
            )
            booked = metric(pm0, PROCESSED, topic=ORDERS_FILLED_PAPER.name) + metric(
                pm1, PROCESSED, topic=ORDERS_FILLED_PAPER.name
            )
            return done and booked >= 5

        wait_for(busy, timeout=90, what="every stage at work and some fills booked")
        watchers = [ListWatcher(pm.port, token) for pm in (pm0, pm1)]
        for watcher in watchers:
            watcher.start()
        wait_for(lambda: all(w.answers for w in watchers), what="the API answering")
        # The single-portfolio read answers on both workers, whichever owns the key.
        for pm in (pm0, pm1):
            status, body = http(pm.port, "/api/v1/portfolios", token)
            assert status == 200, body
            for row in body["portfolios"]:
                status, one = http(pm.port, f"/api/v1/portfolios/{row['strategy_id']}", token)
                assert status == 200, one

        # Kill the busier worker of each stage: its partitions must move to the survivor.
        killed: dict[Stage, StageProcess] = {}
        for stage, pair in workers.items():
            victim = max(pair, key=lambda w: metric(w, PROCESSED, topic=WORK_TOPIC[stage]))
            victim.kill()
            killed[stage] = victim
        survivors = {
            stage: next(w for w in pair if w is not killed[stage])
            for stage, pair in workers.items()
        }
        survivor_pm = survivors[Stage.PORTFOLIO_MANAGER]
        dead_watcher = next(w for w in watchers if w.port == killed[Stage.PORTFOLIO_MANAGER].port)
        dead_watcher.halt.set()
        kill_index = len(next(w for w in watchers if w is not dead_watcher).answers)

        # Quiescence, stage by stage, read from each group's committed offsets.
        wait_for(
            lambda: any(e.get("event") == "market_feed_finished" for e in feed.log_events()),
            timeout=120,
            what="the feed to send all its ticks",
        )
        stages_in_order = [
            (Stage.STRATEGY_RUNNER, MARKET_TICKS.name),
            (Stage.RISK_MANAGER, SIGNALS_GENERATED.name),
            (Stage.RISK_MANAGER, RISK_SIGNALS_BY_STRATEGY.name),
            (Stage.TRADING_ENGINE, SIGNALS_VALIDATED.name),
            (Stage.TRADING_ENGINE, ENGINE_SIGNALS_BY_INSTRUMENT.name),
            (Stage.TRADING_ENGINE, MARKET_TICKS.name),
            (Stage.PORTFOLIO_MANAGER, ORDERS_FILLED_PAPER.name),
            (Stage.PORTFOLIO_MANAGER, SIGNALS_REJECTED.name),
            (Stage.PORTFOLIO_MANAGER, MARKET_TICKS.name),
        ]
        for stage, topic in stages_in_order:
            wait_committed(bootstrap, stage, topic, timeout=120)

        fill_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
        fills = [
            decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
            for r in sorted(fill_records, key=lambda r: (r.partition, r.offset))
        ]
        fill_ids = {f.fill_id for f in fills}
        expected_sids = {f.strategy_id for f in fills}

        # The API, on the survivor, after its mirror caught up: every portfolio, exact.
        def api_final() -> Any:
            status, body = http(survivor_pm.port, "/api/v1/portfolios", token)
            rows = {r["strategy_id"]: r for r in body.get("portfolios", [])}
            trades = {sid: r.get("trade_count") for sid, r in rows.items()}
            want = {s: len({f.fill_id for f in fills if f.strategy_id == s}) for s in rows}
            done = status == 200 and set(rows) == expected_sids and trades == want
            return done or NotYet(body)

        wait_for(api_final, timeout=30, what="the API to show every fill booked")
        for watcher in watchers:
            watcher.halt.set()
        skipped = {
            stage: metric(w, "alpha_panda_offset_gaps_total") for stage, w in survivors.items()
        }
        status, final_list = http(survivor_pm.port, "/api/v1/portfolios", token)
        singles = {
            sid: http(survivor_pm.port, f"/api/v1/portfolios/{sid}", token) for sid in expected_sids
        }
    finally:
        for watcher in watchers:
            watcher.halt.set()
        if feed is not None:
            feed.stop()
        for pair in workers.values():
            for worker in pair:
                worker.stop()

    assert skipped == dict.fromkeys(survivors, 0), "a survivor skipped source records"
    assert fills, "no fills: nothing to check"

    # No decision or fill lost or doubled: one decision per generated signal, one fill
    # (one fill id) per approved signal; redelivered records repeat the same event id.
    generated = {
        decode(r.value, topic=r.topic).id
        for r in asyncio.run(read_topic(bootstrap, SIGNALS_GENERATED.name))
    }
    validated = [
        decode(r.value, topic=r.topic).data
        for r in asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name))
    ]
    rejected = [
        decode(r.value, topic=r.topic).data
        for r in asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
    ]
    approved_ids = {v.signal_event_id for v in validated}
    rejected_ids = {r.signal_event_id for r in rejected}
    assert approved_ids | rejected_ids == generated
    assert not approved_ids & rejected_ids, "a signal was both approved and rejected"
    fills_per_signal: dict[str, set[str]] = {}
    for f in fills:
        fills_per_signal.setdefault(f.signal_event_id, set()).add(f.fill_id)
    assert set(fills_per_signal) == approved_ids, "an approved signal without a fill"
    assert all(len(ids) == 1 for ids in fills_per_signal.values()), "a signal filled twice"

    # Portfolios: the table (its changelog) and the API both equal a recomputation.
    last_price: dict[int, Decimal] = {}
    tick_records = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name, until=N_TICKS))
    for r in sorted(tick_records, key=lambda r: (r.partition, r.offset)):
        tick = decode(r.value, topic=r.topic).data
        last_price[tick.instrument_token] = tick.last_price
    expected = recompute(fills, last_price)
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))
    assert set(tables) == set(expected) == expected_sids
    rows = {r["strategy_id"]: r for r in final_list["portfolios"]}
    assert status == 200 and set(rows) == set(expected)
    for sid, want in expected.items():
        portfolio = Portfolio.from_json_dict(tables[sid])
        assert portfolio.trade_count == len({f.fill_id for f in fills if f.strategy_id == sid})
        assert q(portfolio.cash) == q(want["cash"]), sid
        assert q(portfolio.fees_paid) == q(want["fees"]), sid
        assert q(portfolio.realized_pnl) == q(want["realised"]), sid
        assert Decimal(rows[sid]["cash"]) == q(want["cash"]), (sid, rows[sid], tables[sid])
        assert Decimal(rows[sid]["equity"]) == q(want["equity"]), sid
        code, one = singles[sid]
        assert code == 200 and Decimal(one["cash"]) == q(want["cash"]), (sid, one)
    assert len(fill_ids) == sum(
        Portfolio.from_json_dict(tables[s]).trade_count for s in expected
    ), "a fill booked twice or not at all"

    # Throughout, on the surviving worker: every answer a 200, and a portfolio once
    # listed never missing from a later list (before, during and after the take-over).
    survivor_watcher = next(w for w in watchers if w is not dead_watcher)
    answers = survivor_watcher.answers
    assert len(answers) > kill_index + 5, "too few reads after the kill to tell"
    seen: set[str] = set()
    assert all(r["error"]["code"] == "service_unavailable" for r in survivor_watcher.refusals)
    for i, (code, listed) in enumerate(answers):
        assert code == 200, (i, code, listed, survivor_watcher.refusals[-3:])
        assert seen <= listed, (i, sorted(seen - listed))
        seen |= listed
    assert seen == expected_sids


def test_single_portfolio_read_is_routed_to_its_owner_without_the_mirror(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> None:
    """Two portfolio-manager workers, no Redis: a portfolio is read from the worker that
    owns it wherever it is asked (Faust's table_route picked the wrong one for most keys),
    and the list refuses with a 503 rather than answer with one worker's part."""
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    asyncio.run(configure(pg_url))
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    # Each portfolio ends flat. An open position would need its instrument's last price,
    # which the last-prices table keeps by instrument, on whichever worker owns that
    # partition: without Redis the portfolio's owner then answers 503 by design
    # (docs/API.md), whatever the routing did, and with these strategies all on NIFTY the
    # assignment decides whether any portfolio can be served.
    fills = [
        fill(f"f-{sid}-{i}", side, 2, "100.50", strategy_id=sid, token=NIFTY, second=i)
        for sid in STRATEGIES
        for i, side in enumerate((Side.BUY, Side.SELL))
    ]
    records = [
        ORDERS_FILLED_PAPER.record(
            f, event_id=derived_event_id(f.fill_id, "filled"), ts=f.filled_ts, source="test"
        )
        for f in fills
    ]
    pms = [StageProcess(deployment, Stage.PORTFOLIO_MANAGER, i).start() for i in (0, 1)]
    try:
        for pm in pms:
            pm.wait_ready(timeout=120)
        token = login(pms[0].port)
        asyncio.run(produce(deployment.bootstrap, records))
        wait_committed(deployment.bootstrap, Stage.PORTFOLIO_MANAGER, ORDERS_FILLED_PAPER.name)

        def routed_everywhere() -> Any:
            got = {
                (pm.port, sid): http(pm.port, f"/api/v1/portfolios/{sid}", token)
                for pm in pms
                for sid in STRATEGIES
            }
            ok = all(code == 200 and body["trade_count"] == 2 for code, body in got.values())
            return ok or NotYet({k: v for k, v in got.items() if v[0] != 200})

        # Both workers must own part of the fills for the routing to be exercised.
        wait_for(
            lambda: all(metric(pm, PROCESSED, topic=ORDERS_FILLED_PAPER.name) > 0 for pm in pms),
            timeout=5,
            what="both workers to book fills",
        )
        wait_for(routed_everywhere, timeout=30, what="every portfolio from either worker")
        for pm in pms:
            status, body = http(pm.port, "/api/v1/portfolios", token)
            assert status == 503, body
            assert body["error"]["code"] == "service_unavailable", body
            assert "several portfolio-manager workers" in body["error"]["message"]
    finally:
        for pm in pms:
            pm.stop()
