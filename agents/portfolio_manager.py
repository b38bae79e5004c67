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
from typing import Any

import structlog
from faust.types import EventT

from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker
from alpha_panda.log_identity import wait_for_identity
from alpha_panda.mirror import MirrorKeys, MirrorSources, RedisMirror
from alpha_panda.ownership import Ownership
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES
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
from tables.last_price import LastPrice
from tables.portfolio import Portfolio, book_fill
from tables.recent import RecentFills, RecentRejections
from tables.specs import LAST_PRICES, PORTFOLIOS, RECENT_FILLS, RECENT_REJECTIONS
from web.api import ReadModel, register_api

log = structlog.get_logger(__name__)

RECENT_FILLS_KEPT = 100
RECENT_REJECTIONS_KEPT = 50

SPEC = STAGES[Stage.PORTFOLIO_MANAGER]


class PortfolioManager:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.starting_cash = ctx.settings.portfolio.starting_cash
        self.portfolios = ctx.table(PORTFOLIOS)
        self.recent_fills = ctx.table(RECENT_FILLS)
        self.last_prices = ctx.write_behind_table(LAST_PRICES)
        self.guard = TickGuard(ctx)
        self.recent_rejections = ctx.table(RECENT_REJECTIONS)
        self.mirror = self._install_mirror() if ctx.settings.redis.enabled else None
        fills = {ORDERS_FILLED_PAPER.name: self.on_fill, ORDERS_FILLED_LIVE.name: self.on_fill}
        ctx.run_agent(SPEC.agent("portfolio-fills"), fills)
        ctx.run_agent(SPEC.agent("portfolio-marks"), {MARKET_TICKS.name: self.on_tick})
        ctx.run_agent(SPEC.agent("portfolio-rejections"), {SIGNALS_REJECTED.name: self.on_rejected})
        register_api(
            ctx,
            ReadModel(
                portfolios=self.portfolios.as_json(),
                recent_fills=self.recent_fills.as_json(),
                last_prices=self.last_prices.as_json(),
                recent_rejections=self.recent_rejections.as_json(),
            ),
            self.mirror,
        )

    def equity_of(self, strategy_id: str) -> str | None:
        portfolio = self.portfolios.get(strategy_id)
        if portfolio is None:
            return None
        prices = {
            token: p.price
            for token in portfolio.positions
            if (p := self.last_prices.get(str(token))) is not None
        }
        return str(portfolio.valuation(prices).equity)

    def _install_mirror(self) -> RedisMirror:
        ctx = self.ctx
        portfolios, recent_fills = self.portfolios, self.recent_fills
        last_prices, recent_rejections = self.last_prices, self.recent_rejections
        # With several workers each mirrors only the keys it actively owns: a copy of a
        # key of a partition it lost is stale (alpha_panda/ownership.py).
        owns = Ownership(ctx.app).owns

        def owned(table: str, get: Callable[[str], Any]) -> Callable[[str], Any]:
            return lambda key: get(key) if owns(table, key) else None

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
                # The mirror holds each value as the changelog does (tables/specs.py).
                portfolio=owned(Tables.PORTFOLIOS, portfolios.get_json),
                fills=owned(Tables.RECENT_FILLS, recent_fills.get_json),
                price=owned(Tables.LAST_PRICES, last_prices.get_json),
                rejections=owned(Tables.RECENT_REJECTIONS, recent_rejections.get_json),
                equity=owned(Tables.PORTFOLIOS, self.equity_of),
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
        recovered = portfolios.table.on_recovery_completed

        async def resync_after_recovery(active_tps: Any, standby_tps: Any) -> None:
            # After every rebalance, once the table holds its partitions: those taken over
            # may hold changes their previous owner (killed) never mirrored, and a
            # redelivered fill it had already booked marks nothing.
            await recovered(active_tps, standby_tps)
            mirror.request_resync()

        portfolios.table.on_recovery_completed = resync_after_recovery

        @ctx.app.task
        async def flush_mirror() -> None:
            identity = await wait_for_identity(
                ctx.settings.broker.bootstrap_servers, should_stop=lambda: ctx.app.should_stop
            )
            mirror.log_id = identity.log_id if identity is not None else None
            try:
                await mirror.run(lambda: ctx.app.should_stop)
            finally:
                await mirror.flush()
                await mirror.close()

        return mirror

    async def on_fill(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        ctx = self.ctx
        fill: OrderFill = envelope.data
        sid = fill.strategy_id
        source = f"{event.message.topic}:{event.message.partition}"
        portfolio = self.portfolios.get(sid) or Portfolio.new(sid, self.starting_cash)
        booking = book_fill(portfolio, fill, (source, event.message.offset))
        if booking is None:
            ctx.metrics.domain.labels(ctx.source, "fill_duplicate", "redelivered").inc()
            return
        if not booking.booked:
            ctx.metrics.domain.labels(ctx.source, "fill_duplicate", "same_fill_id").inc()
        else:
            recent = self.recent_fills.get(sid) or RecentFills()
            self.recent_fills[sid] = recent.with_newest(fill, RECENT_FILLS_KEPT)
            ctx.metrics.domain.labels(ctx.source, "fill_booked", fill.side.value).inc()
        self.portfolios[sid] = booking.portfolio
        if self.mirror is not None:
            self.mirror.mark_portfolio(sid)

    async def on_tick(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        tick: MarketTick = envelope.data
        key = str(tick.instrument_token)
        previous = self.last_prices.get(key)
        offset = event.message.offset
        # An instrument always maps to the same partition, so its offsets order its ticks.
        if previous is not None and previous.offset is not None and previous.offset >= offset:
            return  # redelivered
        if not await self.guard.admit(
            tick, previous.price if previous is not None else None, event
        ):
            return  # quarantined: never marks a position
        self.last_prices[key] = LastPrice.of_tick(tick, offset=offset)
        if self.mirror is not None:
            self.mirror.mark_price(key)

    async def on_rejected(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        rejected: RejectedSignal = envelope.data
        key = envelope.key
        existing = self.recent_rejections.get(key) or RecentRejections()
        if existing.holds(envelope.id):
            return
        self.recent_rejections[key] = existing.with_newest(
            envelope.id, rejected, RECENT_REJECTIONS_KEPT
        )
        if self.mirror is not None:
            self.mirror.mark_rejections(key)
