"""Fault tests against the local Kite server with real stage workers on the embedded broker.

- The token expires mid-run: feed and trader stop retrying, /health and a metric say so,
  and both resume after a new login without a restart.
- The WebSocket connections drop: the feed reconnects, restores its subscriptions and
  ticks resume; the trader reconnects its order-update connection, polls, and every
  Kite trade is one fill (none missed, none twice).
- Kite answers 500 to everything: the breaker opens, /health says so, and every live
  signal becomes a rejection with the reason (none is lost, no order is placed).
- The trading engine is killed with SIGKILL after Kite accepted its order but before it
  recorded it: the restarted engine finds the order by its tag (no second order) and the
  fills arrive once in the portfolio.
- A strategy is halted while its LIMIT order works at Kite: the engine cancels it at Kite
  and reports the cancellation as a rejection.
- Live trading on the embedded broker without ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER:
  /health says why (503) and live signals are rejected naming the setting, no order placed.
(Every other test here runs on the embedded broker with that opt-in set, in deploy().)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.domain.live_orders import order_tag
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
    changelog_topic,
)
from models.codec import decode
from models.envelope import EventType, derived_event_id
from models.events import (
    ExecutionMode,
    OrderType,
    RejectionReason,
    Side,
    TradingSignal,
    ValidatedSignal,
)
from tables.portfolio import Portfolio
from tests.integration.harness import (
    Deployment,
    StageProcess,
    latest_per_key,
    metric,
    produce,
    read_topic,
    wait_for,
)
from tests.integration.kite_thread import (
    KiteThread,
    kite_in_thread,
    store_fake_login,
    zerodha_env,
)

pytestmark = pytest.mark.integration

RELIANCE = 738561
EXPIRED = "alpha_panda_broker_token_expired"
PRODUCED = "alpha_panda_messages_produced_total"


@pytest.fixture
def kite() -> Iterator[KiteThread]:
    with kite_in_thread(tick_interval_s=0.1) as handle:
        yield handle


async def configure(url: str, token: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        await db.add_strategy(
            sessions,
            "live-mom",
            "momentum",
            [(RELIANCE, "RELIANCE")],
            {"lookback": 3, "threshold_pct": "5", "quantity": 25},  # never signals by itself
            execution_mode="live",
        )
        await login(url, token)
    finally:
        await engine.dispose()


async def migrate(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


async def login(url: str, token: str) -> None:
    engine = db.create_engine(url)
    try:
        await store_fake_login(db.session_factory(engine), token)
    finally:
        await engine.dispose()


def deploy(
    broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread, *, root_url: str
) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": broker.bootstrap})))
    asyncio.run(configure(pg_url, kite.sync(kite.kite.issue_token)))
    return Deployment(
        bootstrap=broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={
            **zerodha_env(kite),
            "ALPHA_PANDA_FEED_SOURCE": "zerodha",
            "ALPHA_PANDA_ZERODHA_ROOT_URL": root_url,
            # The restart after SIGKILL may take long on a loaded machine; the redelivered
            # signal must meet the tag lookup, not the stale-signal refusal.
            "ALPHA_PANDA_ZERODHA_MAX_SIGNAL_AGE_S": "600",
        },
    )


def health_text(worker: StageProcess) -> str:
    return json.dumps(worker.get("/health")[1])


def test_token_expiry_stops_feed_and_trader_until_a_new_login(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=kite.kite.root_url)
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    feed = StageProcess(deployment, Stage.MARKET_FEED).start()
    try:
        engine.wait_ready(require="zerodha: connected")
        feed.wait_ready(require="zerodha: connected")
        kite.call(kite.kite.expire_tokens())
        for worker in (feed, engine):
            wait_for(
                lambda w=worker: "zerodha: token expired" in health_text(w),  # type: ignore[misc]
                timeout=30,
                what=f"{worker.stage.value} to report the expired token",
            )
            assert worker.get("/health")[0] == 503
        assert metric(feed, EXPIRED, broker="zerodha") == 1
        assert metric(engine, EXPIRED, broker="zerodha") == 1
        # Stopped retrying: no further upgrade attempts over several token polls.
        refused = kite.sync(lambda: kite.kite.rejected_upgrades)
        assert refused >= 1
        time.sleep(1.5)  # a negative check: nothing may happen in this window
        assert kite.sync(lambda: kite.kite.rejected_upgrades) == refused

        asyncio.run(login(deployment.database_url, kite.sync(kite.kite.issue_token)))
        engine.wait_ready(timeout=30, require="zerodha: connected")
        feed.wait_ready(timeout=30, require="zerodha: connected")
        assert metric(feed, EXPIRED, broker="zerodha") == 0
        sent = metric(feed, PRODUCED, topic=MARKET_TICKS.name)
        wait_for(
            lambda: metric(feed, PRODUCED, topic=MARKET_TICKS.name) > sent,
            what="ticks after the new login",
        )
        assert engine.proc is not None and engine.proc.poll() is None  # never restarted
        assert feed.proc is not None and feed.proc.poll() is None
    finally:
        feed.stop()
        engine.stop()


def test_dropped_websocket_reconnects_and_resubscribes(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=kite.kite.root_url)
    bootstrap = fresh_broker.bootstrap
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    feed = StageProcess(deployment, Stage.MARKET_FEED).start()
    try:
        engine.wait_ready(require="zerodha: connected")
        feed.wait_ready(require="zerodha: connected")
        wait_for(lambda: kite.sync(kite.kite.subscriptions), what="the feed's subscription")
        # The feed's connection subscribes RELIANCE; the trader's, for order updates, nothing.
        assert sorted(kite.sync(kite.kite.subscriptions), key=len) == [{}, {RELIANCE: "full"}]
        asyncio.run(produce(bootstrap, [validated_record("sig-drop-1")]))
        wait_for(lambda: live_fill_ids(bootstrap), what="the first order's fills")

        assert kite.call(kite.kite.drop_connections()) == 2
        for worker, name in ((feed, "zerodha_ticker"), (engine, "zerodha_ticker")):
            wait_for(
                lambda w=worker, n=name: (
                    metric(  # type: ignore[misc]
                        w, "alpha_panda_domain_events_total", event=n, detail="reconnected"
                    )
                    >= 1
                ),
                what=f"{worker.stage.value} to reconnect",
            )
        # The server keeps no subscriptions across connections: the feed sent them again.
        wait_for(
            lambda: sorted(kite.sync(kite.kite.subscriptions), key=len) == [{}, {RELIANCE: "full"}],
            what="subscriptions restored",
        )
        sent = metric(feed, PRODUCED, topic=MARKET_TICKS.name)
        wait_for(
            lambda: metric(feed, PRODUCED, topic=MARKET_TICKS.name) > sent + 5,
            what="ticks after the reconnect",
        )
        asyncio.run(produce(bootstrap, [validated_record("sig-drop-2")]))

        def all_trades() -> set[str]:
            async def read() -> set[str]:
                return {t["trade_id"] for trades in kite.kite.trades.values() for t in trades}

            return kite.call(read())

        wait_for(
            lambda: (
                len(kite.sync(lambda: kite.kite.orders)) == 2
                and sorted(live_fill_ids(bootstrap)) == sorted(all_trades())
            ),
            what="both orders' trades on orders.filled.live",
        )
        # A little longer: a late duplicate from the poll or the update stream would show.
        time.sleep(1.0)
        ids = live_fill_ids(bootstrap)
    finally:
        feed.stop()
        engine.stop()
    assert len(ids) == len(set(ids)) == len(all_trades())  # each trade once
    ticks = asyncio.run(read_topic(bootstrap, MARKET_TICKS.name))
    assert {decode(r.value, topic=r.topic).data.instrument_token for r in ticks} == {RELIANCE}


def live_fill_ids(bootstrap: str) -> list[str]:
    records = asyncio.run(read_topic(bootstrap, ORDERS_FILLED_LIVE.name))
    return [decode(r.value, topic=r.topic).data.fill_id for r in records]


class HoldingProxy:
    """A loopback proxy to the local Kite server that forwards POST /orders/regular but
    holds Kite's answer back: the order exists at Kite, the engine never hears of it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.order_placed = threading.Event()
        self.holding = True
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method, self.target + request.rel_url.path_qs, data=body, headers=headers
            ) as upstream,
        ):
            payload = await upstream.read()
            status = upstream.status
            ctype = upstream.headers.get("Content-Type", "application/json")
        if request.method == "POST" and request.path.startswith("/orders/") and self.holding:
            self.order_placed.set()
            await self.release.wait()  # the engine is killed while waiting here
        return web.Response(body=payload, status=status, headers={"Content-Type": ctype})


def validated_record(signal_id: str, limit: str | None = None) -> object:
    signal = TradingSignal(
        strategy_id="live-mom",
        instrument_token=RELIANCE,
        symbol="RELIANCE",
        side=Side.BUY,
        quantity=25,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=Decimal(limit) if limit else None,
        reference_price=Decimal("1250"),
        execution_mode=ExecutionMode.LIVE,
        signal_ts=datetime.now(UTC),
    )
    validated = ValidatedSignal(
        signal_event_id=signal_id, signal=signal, validated_ts=signal.signal_ts
    )
    return SIGNALS_VALIDATED.record(
        validated,
        event_id=derived_event_id(signal_id, "validated"),
        ts=signal.signal_ts,
        source="test",
    )


def test_sigkill_between_placing_and_recording_places_once_and_books_once(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    proxy = HoldingProxy(kite.kite.root_url)
    kite.call(proxy.start())
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=proxy.url)
    pm = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    restarted: StageProcess | None = None
    try:
        pm.wait_ready()
        engine.wait_ready(require="zerodha: connected")
        asyncio.run(produce(fresh_broker.bootstrap, [validated_record("sig-kill-1")]))
        assert proxy.order_placed.wait(60), "the order never reached Kite"
        engine.kill()  # SIGKILL: Kite has the order, the engine recorded nothing
        proxy.holding = False
        orders = kite.sync(lambda: list(kite.kite.orders.values()))
        assert len(orders) == 1 and orders[0].tag == order_tag("sig-kill-1")

        restarted = StageProcess(deployment, Stage.TRADING_ENGINE).start()
        restarted.wait_ready(timeout=90, require="zerodha: connected")
        order_id = orders[0].order_id
        trade_ids = kite.sync(lambda: [t["trade_id"] for t in kite.kite.trades[order_id]])
        assert len(trade_ids) >= 2  # 25 shares across levels of 1..20

        def booked() -> bool:
            records = asyncio.run(read_topic(fresh_broker.bootstrap, ORDERS_FILLED_LIVE.name))
            return {decode(r.value, topic=r.topic).data.fill_id for r in records} == set(trade_ids)

        wait_for(booked, timeout=60, what="the order's trades on orders.filled.live")
        wait_for(
            lambda: (
                metric(pm, "alpha_panda_domain_events_total", event="fill_booked") >= len(trade_ids)
            ),
            what="the portfolio to book the fills",
        )
        assert kite.sync(lambda: len(kite.kite.orders)) == 1  # no second order
        assert any(e.get("event") == "live_order_found_placed" for e in restarted.log_events())
    finally:
        if restarted is not None:
            restarted.stop()
        engine.stop()
        pm.stop()
        kite.call(proxy.stop())

    records = asyncio.run(read_topic(fresh_broker.bootstrap, ORDERS_FILLED_LIVE.name))
    fills = [decode(r.value, topic=r.topic, expect=EventType.ORDER_FILLED).data for r in records]
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    tables = asyncio.run(
        latest_per_key(fresh_broker.bootstrap, changelog_topic(group, Tables.PORTFOLIOS))
    )
    portfolio = Portfolio.from_json_dict(tables["live-mom"])
    assert portfolio.trade_count == len(set(trade_ids))  # every trade once, none twice
    assert portfolio.positions[RELIANCE].quantity == 25
    assert {f.fill_id for f in fills} == set(trade_ids)


def test_kite_500s_open_the_breaker_and_live_signals_are_rejected_with_a_reason(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=kite.kite.root_url)
    deployment.extra_env["ALPHA_PANDA_ZERODHA_BREAKER_RESET_S"] = "60"
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    try:
        engine.wait_ready(require="zerodha: connected")
        kite.sync(kite.kite.fail_next, 1000, 500)  # Kite answers 500 to everything
        wait_for(
            lambda: metric(engine, "alpha_panda_circuit_breaker_open", breaker="zerodha-rest") == 1,
            timeout=30,
            what="the breaker to open",
        )
        assert "zerodha: circuit open" in health_text(engine)
        asyncio.run(
            produce(fresh_broker.bootstrap, [validated_record(f"sig-500-{i}") for i in range(3)])
        )
        records = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_REJECTED.name, until=3))
    finally:
        engine.stop()
    rejected = [decode(r.value, topic=r.topic).data for r in records]
    assert sorted(r.signal_event_id for r in rejected) == [f"sig-500-{i}" for i in range(3)]
    assert {r.reason for r in rejected} == {RejectionReason.BROKER_UNAVAILABLE}
    assert all("circuit 'zerodha-rest' is open" in r.detail for r in rejected), rejected
    assert kite.sync(lambda: len(kite.kite.orders)) == 0


def test_without_credentials_live_signals_are_rejected_as_not_configured(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    # The engine reads each strategy's product from the configuration store, as the runner
    # and risk manager read theirs: a deployment's store has its schema.
    asyncio.run(migrate(pg_url))
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()
    try:
        health = engine.wait_ready()
        assert "zerodha" not in health["checks"]  # no Kite parts without an api_key
        asyncio.run(produce(fresh_broker.bootstrap, [validated_record("sig-unconfigured")]))
        (record,) = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_REJECTED.name, until=1))
    finally:
        engine.stop()
    rejected = decode(record.value, topic=record.topic).data
    assert rejected.reason is RejectionReason.LIVE_TRADING_NOT_CONFIGURED
    assert "ALPHA_PANDA_ZERODHA_API_KEY" in rejected.detail


def test_halting_a_strategy_cancels_its_open_order_at_kite(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=kite.kite.root_url)
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()

    def kite_status(tag: str) -> str | None:
        async def read() -> str | None:
            return next((o.status for o in kite.kite.orders.values() if o.tag == tag), None)

        return kite.call(read())

    tag = order_tag("sig-resting")
    try:
        engine.wait_ready(require="zerodha: connected")
        # Far below the market: the order works at Kite, unfilled.
        asyncio.run(produce(fresh_broker.bootstrap, [validated_record("sig-resting", "1000")]))
        wait_for(lambda: kite_status(tag) == "OPEN", timeout=30, what="the order to work")

        async def halt() -> None:
            store = db.create_engine(pg_url)
            try:
                await db.add_halt(db.session_factory(store), "live-mom", "test", "test")
            finally:
                await store.dispose()

        asyncio.run(halt())
        wait_for(lambda: kite_status(tag) == "CANCELLED", timeout=30, what="the cancel at Kite")
        (record,) = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_REJECTED.name, until=1))
    finally:
        engine.stop()
    rejected = decode(record.value, topic=record.topic).data
    assert rejected.signal_event_id == "sig-resting"
    assert rejected.reason is RejectionReason.KILL_SWITCH
    assert rejected.detail.startswith("strategy live-mom halted: open order at Kite cancelled")


def test_live_trading_on_the_embedded_broker_needs_the_opt_in(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, kite: KiteThread
) -> None:
    deployment = deploy(fresh_broker, pg_url, tmp_path, kite, root_url=kite.kite.root_url)
    del deployment.extra_env["ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER"]
    engine = StageProcess(deployment, Stage.TRADING_ENGINE).start()

    def refusing() -> bool:
        try:
            status, body = engine.get("/health")
        except OSError:
            return False
        return (
            status == 503
            and body.get("failing") == ["zerodha"]
            and "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER" in body["checks"]["zerodha"]["detail"]
        )

    try:
        wait_for(refusing, timeout=60, what="/health to refuse live trading, naming the setting")
        asyncio.run(produce(fresh_broker.bootstrap, [validated_record("sig-embedded")]))
        (record,) = asyncio.run(read_topic(fresh_broker.bootstrap, SIGNALS_REJECTED.name, until=1))
    finally:
        engine.stop()
    rejected = decode(record.value, topic=record.topic).data
    assert rejected.reason is RejectionReason.LIVE_TRADING_NOT_CONFIGURED
    assert "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER=true" in rejected.detail
    assert kite.sync(lambda: len(kite.kite.orders)) == 0  # nothing reached Kite
