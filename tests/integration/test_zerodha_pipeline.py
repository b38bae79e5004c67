"""All five stages on the embedded broker against the local Kite server.

The feed streams Kite's ticks (full mode, with depth) into market.ticks; a live strategy's
signals become Kite orders; Kite's trades (an order walking several book levels gives a
trade per level) come back on orders.filled.live into its portfolio, which must equal an
independent recomputation from the topic; a paper strategy trades beside it untouched.
The live strategy trades CNC, the paper one the default MIS: each order reaches Kite as
CNC and each fill pays its own product's charges.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.commands.zerodha_session import probe_health
from alpha_panda.domain.live_orders import order_tag
from alpha_panda.domain.paper_trader import fill_id_for
from alpha_panda.settings import Stage, WebSettings, load_settings
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import EventType
from models.events import ExecutionMode
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    read_topic,
    wait_for,
)
from tests.integration.kite_thread import (
    KiteThread,
    kite_in_thread,
    store_fake_login,
    zerodha_env,
)
from tests.integration.test_pipeline_e2e import q, recompute

pytestmark = pytest.mark.integration

RELIANCE, INFY = 738561, 408065
PROCESSED = "alpha_panda_messages_processed_total"
SECRETS_API = "pipeline_api_secret_" + "s" * 12


@pytest.fixture
def kite() -> Iterator[KiteThread]:
    with kite_in_thread(tick_interval_s=0.1, api_secret=SECRETS_API) as handle:
        yield handle


async def configure(url: str, access_token: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        momentum = {"lookback": 3, "threshold_pct": "0.005"}
        await db.add_strategy(
            sessions,
            "live-mom",
            "momentum",
            [(RELIANCE, "RELIANCE")],
            {**momentum, "quantity": 25},
            execution_mode="live",
            risk_limits={"product": "CNC"},
        )
        await db.add_strategy(
            # 30 shares: more than any one level of the fake book (1-20), so each paper
            # MARKET order walks the depth of the last tick.
            sessions,
            "paper-mom",
            "momentum",
            [(INFY, "INFY")],
            {**momentum, "quantity": 30},
        )
        await store_fake_login(sessions, access_token)
    finally:
        await engine.dispose()


@pytest.fixture
def deployment(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    token = kite.sync(kite.kite.issue_token)
    asyncio.run(configure(pg_url, token))
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={**zerodha_env(kite, poll_s=0.5), "ALPHA_PANDA_FEED_SOURCE": "zerodha"},
    )


def fills_of(records: list) -> list:  # type: ignore[type-arg]
    return [
        decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED, key=r.key).data
        for r in sorted(records, key=lambda r: (r.partition, r.offset))
    ]


def test_kite_ticks_live_orders_and_fills_through_five_stages(
    deployment: Deployment, kite: KiteThread
) -> None:
    bootstrap = deployment.bootstrap
    order = [Stage.PORTFOLIO_MANAGER, Stage.TRADING_ENGINE, Stage.RISK_MANAGER]
    order += [Stage.STRATEGY_RUNNER]
    workers = {stage: StageProcess(deployment, stage).start() for stage in order}
    try:
        for worker in workers.values():
            worker.wait_ready()
        feed = workers[Stage.MARKET_FEED] = StageProcess(deployment, Stage.MARKET_FEED).start()
        feed.wait_ready(require="zerodha: connected")
        engine, pm = workers[Stage.TRADING_ENGINE], workers[Stage.PORTFOLIO_MANAGER]

        def live_orders_with_fills() -> list[str]:
            records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_LIVE.name))
            per_order = Counter(f.order_id for f in fills_of(records))
            return [o for o, n in per_order.items() if n >= 2]

        # A 25-share MARKET order walks the fake book's levels (1-20 shares each).
        wait_for(live_orders_with_fills, timeout=90, what="a live order filled in parts")
        wait_for(
            lambda: asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name)),
            timeout=60,
            what="a paper fill",
        )
        # What `alpha-panda zerodha status` reads from the two stages.
        ports = load_settings(
            web=WebSettings(port=deployment.api_port, stage_base_port=deployment.base_port)
        )
        status = {
            stage: asyncio.run(probe_health(ports, stage))
            for stage in (Stage.MARKET_FEED, Stage.TRADING_ENGINE)
        }
        assert {s["state"] for s in status.values()} == {"connected"}, status
        # A finished order is forgotten on a later tick of its instrument: a tombstone in
        # the engine's live-orders changelog. Await it while the feed still ticks: stopped
        # right after the order finished (as once on CI), no later tick could come.
        live_orders_log = changelog_topic(Stage.TRADING_ENGINE.consumer_group, Tables.LIVE_ORDERS)
        wait_for(
            lambda: any(
                r.value is None for r in asyncio.run(read_topic(bootstrap, live_orders_log))
            ),
            timeout=90,
            what="a finished live order forgotten (a tombstone in the live-orders changelog)",
        )
        served = [json.dumps(feed.get("/health")[1]), str(feed.get("/metrics")[1])]
        feed.stop()
        ticks = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name))
        n_ticks = len(ticks)
        wait_for(
            lambda: metric(engine, PROCESSED, topic=MARKET_TICKS.name) == n_ticks,
            what="engine saw every tick",
        )
        validated = asyncio.run(read_topic(bootstrap, SIGNALS_VALIDATED.name))
        wait_for(
            lambda: (
                metric(engine, PROCESSED, topic=ENGINE_SIGNALS_BY_INSTRUMENT.name) >= len(validated)
            ),
            what="engine handled every validated signal",
        )

        def kite_trades_of_ours() -> dict[str, int]:
            async def read() -> dict[str, int]:
                return {
                    tid["trade_id"]: 1
                    for oid, o in kite.kite.orders.items()
                    if o.tag
                    for tid in kite.kite.trades[oid]
                }

            return kite.call(read())

        def all_trades_booked() -> bool:
            live = fills_of(asyncio.run(read_topic(bootstrap, ORDERS_FILLED_LIVE.name)))
            return {f.fill_id for f in live} == set(kite_trades_of_ours())

        wait_for(all_trades_booked, timeout=30, what="every Kite trade on orders.filled.live")
        live_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_LIVE.name))
        paper_records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_PAPER.name))
        wait_for(
            lambda: (
                metric(pm, PROCESSED, topic=ORDERS_FILLED_LIVE.name) >= len(live_records)
                and metric(pm, PROCESSED, topic=ORDERS_FILLED_PAPER.name) >= len(paper_records)
                and metric(pm, PROCESSED, topic=MARKET_TICKS.name) >= n_ticks
            ),
            what="portfolio manager booked every fill and tick",
        )
        health_status, health = engine.get("/health")
        for stage in order:
            served.append(json.dumps(workers[stage].get("/health")[1]))
            served.append(str(workers[stage].get("/metrics")[1]))
        served.append(json.dumps(pm.get("/api/v1/openapi.json")[1]))
        served.append(str(pm.get("/api/v1/zerodha/session")[1]))  # 401 without a user
    finally:
        for worker in workers.values():
            worker.stop()

    # Ticks: Kite's, keyed by token, v2 with five levels a side from full mode.
    decoded = [decode(r.value, topic=r.topic, key=r.key) for r in ticks]
    with_depth = [e for e in decoded if e.data.depth is not None]
    assert with_depth and all(e.version == 2 for e in decoded)
    assert {e.key for e in decoded} == {str(RELIANCE), str(INFY)}
    assert all(len(e.data.depth.bids) == 5 == len(e.data.depth.asks) for e in with_depth)

    # Orders at Kite: exactly one per validated live signal the engine did not refuse.
    rejected = {
        decode(r.value, topic=r.topic).data.signal_event_id
        for r in asyncio.run(read_topic(bootstrap, SIGNALS_REJECTED.name))
    }
    live_signals = [
        decode(r.value, topic=r.topic).data
        for r in validated
        if decode(r.value, topic=r.topic).data.signal.execution_mode is ExecutionMode.LIVE
    ]
    expected_tags = {order_tag(v.signal_event_id) for v in live_signals} - {
        order_tag(s) for s in rejected
    }
    kite_tags = kite.call(_tags(kite))
    assert sorted(kite_tags) == sorted(expected_tags)  # no order placed twice
    assert all(o.instrument.instrument_token == RELIANCE for o in kite.kite.orders.values())
    assert {o.product for o in kite.kite.orders.values()} == {"CNC"}  # the strategy's own

    live_fills, paper_fills = fills_of(live_records), fills_of(paper_records)
    assert {f.strategy_id for f in live_fills} == {"live-mom"}
    assert {f.execution_mode for f in live_fills} == {ExecutionMode.LIVE}
    assert {f.strategy_id for f in paper_fills} == {"paper-mom"}
    assert {f.execution_mode for f in paper_fills} == {ExecutionMode.PAPER}
    # Delivery (CNC) charges no brokerage; intraday (MIS) does.
    assert {f.fee_breakdown.brokerage for f in live_fills} == {Decimal("0")}
    assert all(f.fee_breakdown.brokerage > 0 for f in paper_fills)
    # Paper orders walked the depth: one fill per level, ids derived from the signal.
    by_signal: dict[str, list] = {}  # type: ignore[type-arg]
    for f in paper_fills:
        by_signal.setdefault(f.signal_event_id, []).append(f)
    for signal_id, parts in by_signal.items():
        assert len(parts) >= 2, parts
        assert sum(p.quantity for p in parts) == 30
        assert [p.fill_id for p in parts] == [fill_id_for(signal_id, i) for i in range(len(parts))]

    last_price: dict[int, Decimal] = {}
    for e in sorted(decoded, key=lambda e: e.data.exchange_ts):
        last_price[e.data.instrument_token] = e.data.last_price
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.PORTFOLIOS)))
    prices = asyncio.run(latest_per_key(bootstrap, changelog_topic(group, Tables.LAST_PRICES)))
    table_prices = {int(k): Decimal(v["price"]) for k, v in prices.items()}
    expected = recompute(live_fills + paper_fills, table_prices)
    assert set(tables) == {"live-mom", "paper-mom"} == set(expected)
    for sid, want in expected.items():
        portfolio = Portfolio.from_json_dict(tables[sid])
        assert q(portfolio.cash) == q(want["cash"]), sid
        assert q(portfolio.fees_paid) == q(want["fees"]), sid
        assert q(portfolio.realized_pnl) == q(want["realised"]), sid
        assert q(portfolio.valuation(table_prices).equity) == q(want["equity"]), sid
        mine = live_fills if sid == "live-mom" else paper_fills
        assert portfolio.trade_count == len({f.fill_id for f in mine})

    # Placed orders were recorded in the engine's live-orders table by tag, and finished
    # ones forgotten again (a tombstone on a later tick of their instrument).
    engine_group = Stage.TRADING_ENGINE.consumer_group
    live_log = asyncio.run(read_topic(bootstrap, changelog_topic(engine_group, Tables.LIVE_ORDERS)))
    recorded = {json.loads(r.key) for r in live_log if r.value is not None}
    assert recorded == set(kite_tags)
    assert any(r.value is None for r in live_log), "no finished order was forgotten"

    # The engine reported the Kite connection, and no secret leaked into what it serves.
    assert health_status == 200 and "zerodha: connected" in json.dumps(health)
    token = kite.call(_tokens(kite))
    logs = "".join(
        (deployment.data_dir / "logs" / f"{s.value}.log").read_text(errors="replace") for s in Stage
    )
    assert len(served) == 2 + 2 * len(order) + 2
    for secret in [SECRETS_API, *token]:
        assert not any(secret in text for text in served)
        assert secret not in logs


async def _tags(kite: KiteThread) -> list[str]:
    return [o.tag for o in kite.kite.orders.values() if o.tag]


async def _tokens(kite: KiteThread) -> list[str]:
    return list(kite.kite._tokens)
