"""Stage 5, portfolio manager: fills and ticks -> positions, cash and P&L; the read API.

One portfolio per strategy. Fills are keyed by strategy id, so each portfolio is updated
only from the one orders.filled.* partition that owns it, in order. Last prices are
kept per instrument from market.ticks; unrealised P&L and equity are derived from the
two (``Portfolio.valuation``) when read, so a tick costs one small table write.
Recent rejections are kept for the API. After each update the Redis mirror is marked;
its flusher copies current table values to Redis in batches (see alpha_panda/mirror.py).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import structlog
from faust.types import EventT, StreamT

from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker
from alpha_panda.log_identity import wait_for_identity
from alpha_panda.mirror import MirrorKeys, MirrorSources, RedisMirror
from alpha_panda.ownership import Ownership
from alpha_panda.runtime import Route, StageContext
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
    Tables,
)
from models.envelope import EventEnvelope
from models.events import MarketTick, OrderFill, RejectedSignal
from tables.portfolio import Portfolio, book_fill
from web.api import ReadModel, register_api

log = structlog.get_logger(__name__)

RECENT_FILLS = 100
RECENT_REJECTIONS = 50


def register(ctx: StageContext) -> None:
    starting_cash = ctx.settings.portfolio.starting_cash
    portfolios = ctx.table(
        Tables.PORTFOLIOS, partitions=ORDERS_FILLED_PAPER.partitions, help="Portfolio per strategy"
    )
    recent_fills = ctx.table(
        Tables.RECENT_FILLS,
        partitions=ORDERS_FILLED_PAPER.partitions,
        help="Recent fills per strategy",
    )
    last_prices = ctx.write_behind_table(
        Tables.LAST_PRICES, partitions=MARKET_TICKS.partitions, help="Last trade per instrument"
    )
    guard = TickGuard(ctx)
    recent_rejections = ctx.table(
        Tables.RECENT_REJECTIONS,
        partitions=SIGNALS_REJECTED.partitions,
        help="Recent rejections per strategy:instrument",
    )

    def equity_of(strategy_id: str) -> str | None:
        raw = portfolios.get(strategy_id)
        if raw is None:
            return None
        portfolio = Portfolio.from_json_dict(raw)
        prices = {
            token: Decimal(p["price"])
            for token in portfolio.positions
            if (p := last_prices.get(str(token))) is not None
        }
        return str(portfolio.valuation(prices).equity)

    mirror: RedisMirror | None = None
    # With several workers each mirrors only the keys it actively owns: a copy of a key
    # of a partition it lost is stale (alpha_panda/ownership.py).
    owns = Ownership(ctx.app).owns

    def owned(table: str, get: Callable[[str], Any]) -> Callable[[str], Any]:
        return lambda key: get(key) if owns(table, key) else None

    if ctx.settings.redis.enabled:
        breaker = CircuitBreaker(
            "redis-mirror",
            failure_threshold=3,
            reset_timeout_s=2.0,
            on_state_change=lambda name, state: ctx.metrics.breaker_state.labels(
                ctx.source, name
            ).set(0 if state is BreakerState.CLOSED else 1),
        )
        ctx.metrics.breaker_state.labels(ctx.source, "redis-mirror").set(0)
        mirror = RedisMirror(
            url=ctx.settings.redis.url,
            keys=MirrorKeys(ctx.settings.redis.key_prefix),
            sources=MirrorSources(
                portfolio=owned(Tables.PORTFOLIOS, portfolios.get),
                fills=owned(Tables.RECENT_FILLS, recent_fills.get),
                price=owned(Tables.LAST_PRICES, last_prices.get),
                rejections=owned(Tables.RECENT_REJECTIONS, recent_rejections.get),
                equity=owned(Tables.PORTFOLIOS, equity_of),
                all_keys=lambda: (
                    [k for k in list(portfolios.keys()) if owns(Tables.PORTFOLIOS, k)],
                    [k for k in list(last_prices.keys()) if owns(Tables.LAST_PRICES, k)],
                    [
                        k
                        for k in list(recent_rejections.keys())
                        if owns(Tables.RECENT_REJECTIONS, k)
                    ],
                ),
            ),
            breaker=breaker,
        )
        ctx.health_checks["redis"] = mirror.health
        running_mirror = mirror
        recovered = portfolios.on_recovery_completed

        async def resync_after_recovery(active_tps: Any, standby_tps: Any) -> None:
            # After every rebalance, once the table holds its partitions: those taken over
            # may hold changes their previous owner (killed) never mirrored, and a
            # redelivered fill it had already booked marks nothing.
            await recovered(active_tps, standby_tps)
            running_mirror.request_resync()

        portfolios.on_recovery_completed = resync_after_recovery

        @ctx.app.task
        async def flush_mirror() -> None:
            identity = await wait_for_identity(
                ctx.settings.broker.bootstrap_servers, should_stop=lambda: ctx.app.should_stop
            )
            running_mirror.log_id = identity.log_id if identity is not None else None
            try:
                await running_mirror.run(lambda: ctx.app.should_stop)
            finally:
                await running_mirror.flush()
                await running_mirror.close()

    async def on_fill(envelope: EventEnvelope[Any], event: EventT) -> None:
        fill: OrderFill = envelope.data
        sid = fill.strategy_id
        source = f"{event.message.topic}:{event.message.partition}"
        raw = portfolios.get(sid)
        portfolio = (
            Portfolio.from_json_dict(raw) if raw is not None else Portfolio.new(sid, starting_cash)
        )
        booking = book_fill(portfolio, fill, (source, event.message.offset))
        if booking is None:
            ctx.metrics.domain.labels(ctx.source, "fill_duplicate", "redelivered").inc()
            return
        if not booking.booked:
            ctx.metrics.domain.labels(ctx.source, "fill_duplicate", "same_fill_id").inc()
        else:
            recent_fills[sid] = [fill.model_dump(mode="json"), *(recent_fills.get(sid) or [])][
                :RECENT_FILLS
            ]
            ctx.metrics.domain.labels(ctx.source, "fill_booked", fill.side.value).inc()
        portfolios[sid] = booking.portfolio.to_json_dict()
        if mirror is not None:
            mirror.mark_portfolio(sid)

    async def on_tick(envelope: EventEnvelope[Any], event: EventT) -> None:
        tick: MarketTick = envelope.data
        key = str(tick.instrument_token)
        previous = last_prices.get(key)
        # An instrument always maps to the same partition, so its offsets order its ticks.
        if previous is not None and previous["offset"] >= event.message.offset:
            return  # redelivered
        if not await guard.admit(
            tick, Decimal(previous["price"]) if previous is not None else None, event
        ):
            return  # quarantined: never marks a position
        last_prices[key] = {
            "price": str(tick.last_price),
            "symbol": tick.symbol,
            "ts": tick.exchange_ts.isoformat(),
            "offset": event.message.offset,
        }
        if mirror is not None:
            mirror.mark_price(key)

    async def on_rejected(envelope: EventEnvelope[Any], event: EventT) -> None:
        rejected: RejectedSignal = envelope.data
        key = envelope.key
        existing = recent_rejections.get(key) or []
        if any(r["event_id"] == envelope.id for r in existing):
            return
        entry = {"event_id": envelope.id, **rejected.model_dump(mode="json")}
        recent_rejections[key] = [entry, *existing][:RECENT_REJECTIONS]
        if mirror is not None:
            mirror.mark_rejections(key)

    @ctx.app.agent(
        ctx.source_channel([ORDERS_FILLED_PAPER, ORDERS_FILLED_LIVE]), name="portfolio-fills"
    )
    async def book_fills(stream: StreamT) -> None:
        await ctx.process(
            stream,
            {
                ORDERS_FILLED_PAPER.name: Route(ORDERS_FILLED_PAPER, on_fill),
                ORDERS_FILLED_LIVE.name: Route(ORDERS_FILLED_LIVE, on_fill),
            },
        )

    @ctx.app.agent(ctx.source_channel([MARKET_TICKS]), name="portfolio-marks")
    async def mark_prices(stream: StreamT) -> None:
        await ctx.process(stream, {MARKET_TICKS.name: Route(MARKET_TICKS, on_tick)})

    @ctx.app.agent(ctx.source_channel([SIGNALS_REJECTED]), name="portfolio-rejections")
    async def keep_rejections(stream: StreamT) -> None:
        await ctx.process(stream, {SIGNALS_REJECTED.name: Route(SIGNALS_REJECTED, on_rejected)})

    register_api(
        ctx,
        ReadModel(
            portfolios=portfolios,
            recent_fills=recent_fills,
            last_prices=last_prices,
            recent_rejections=recent_rejections,
        ),
        mirror,
    )
