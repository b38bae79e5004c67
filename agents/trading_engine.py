"""Stage 4, trading engine: validated signals + ticks -> orders.filled.paper; live signals
go to the Zerodha trader (alpha_panda/zerodha_trader.py), whose fills go to orders.filled.live.

Paper fills need the instrument's last price and resting LIMIT orders need its ticks, so
all state here is per instrument. Validated signals are keyed by strategy and instrument;
the first agent repartitions them, bytes unchanged, by instrument onto a topic with
market.ticks' partitioning, and the second agent consumes that topic and market.ticks
together, routing by topic name, so an instrument's price and orders live in one place.

Each strategy's product (alpha_panda/domain/products.py) decides its fills' charges and
the product of its live orders. Signals do not carry it (their wire format predates it),
so the engine reads it from the runtime configuration, as the runner and risk manager
read theirs, and handles no signal before its first configuration is loaded.

The kill switch (``alpha-panda halt``) is read from the same configuration: while a halt
covers a strategy, its validated signals are refused rather than executed (the risk
manager approved them before the halt) and its resting paper LIMIT orders are cancelled
at their instrument's next tick, before that tick could fill them; each one becomes a
rejection (alpha_panda/domain/engine_rules.py).

Live orders are placed only where the log survives a crash: on the embedded broker, whose
log a crash rolls back, the engine refuses live signals unless
ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER accepts it (``Settings.live_trading_refusal``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from faust.types import EventT

from alpha_panda import db
from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.engine_rules import (
    EngineRejection,
    cancel_halted,
    execute_validated,
    halt_cancellation,
    halt_refusal,
    tick_is_stale,
)
from alpha_panda.domain.paper_trader import MarketFills, PaperTrader, PendingLimitOrder
from alpha_panda.domain.products import StrategyProducts, strategy_product
from alpha_panda.rejections import emit_rejection
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_VALIDATED,
)
from alpha_panda.zerodha_trader import Refused
from alpha_panda.zerodha_wiring import install_live_trading
from models.envelope import EventEnvelope, derived_event_id
from models.events import (
    ExecutionMode,
    MarketTick,
    OrderFill,
    RejectionReason,
    TradingSignal,
    ValidatedSignal,
)
from tables.last_price import LastPrice
from tables.risk_state import KillSwitch
from tables.specs import LAST_PRICES, PENDING_ORDERS

log = structlog.get_logger(__name__)

SPEC = STAGES[Stage.TRADING_ENGINE]


class TradingEngine:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        paper = ctx.settings.paper
        self.products = StrategyProducts(default=strategy_product({}, ctx.settings.risk.product))
        self.kill_switch = KillSwitch()
        self.trader = PaperTrader(
            slippage_bps=paper.slippage_bps,
            fees=lambda strategy_id: self.products.fees_of(strategy_id),
            leave_rest_unfilled=paper.leave_rest_unfilled,
        )
        self.watcher = ConfigWatcher(ctx, self.on_config, after_apply=self.acknowledge_halts)
        self.watcher.install()
        self.last_prices = ctx.write_behind_table(LAST_PRICES)
        self.pending_orders = ctx.table(PENDING_ORDERS)
        # Why live signals are refused although Zerodha is configured; None: they are not.
        self.live_refusal = (
            ctx.settings.live_trading_refusal if ctx.settings.zerodha.configured else None
        )
        self.live = (
            install_live_trading(ctx, self.live_cancellation)
            if ctx.settings.zerodha.configured and self.live_refusal is None
            else None
        )
        if self.live_refusal is not None:
            ctx.health_checks["zerodha"] = self.live_refused_health
        self.guard = TickGuard(ctx, token_watcher=self.live.live.watcher if self.live else None)
        ctx.run_agent(SPEC.agent("engine-repartition"), {SIGNALS_VALIDATED.name: self.repartition})
        ctx.run_agent(
            SPEC.agent("engine-execute"),
            {
                MARKET_TICKS.name: self.on_tick,
                ENGINE_SIGNALS_BY_INSTRUMENT.name: self.on_validated,
            },
        )

    def on_config(self, config: RuntimeConfig) -> None:
        self.products = StrategyProducts.from_config(config, self.ctx.settings.risk.product)
        self.kill_switch = KillSwitch.of(config)

    async def acknowledge_halts(self, config: RuntimeConfig, sessions: db.SessionFactory) -> None:
        # Runs after on_config(config): every handler from now on reads these halts.
        if not config.engine_unapplied_halts:
            return
        applied = await db.acknowledge_halts(
            sessions, config.engine_unapplied_halts, datetime.now(UTC), engine=True
        )
        if applied:
            log.info("halts_applied", stage=self.ctx.source, scopes=applied)

    def live_cancellation(self, signal: TradingSignal) -> str | None:
        rejection = halt_cancellation(signal, self.kill_switch, "open order at Kite")
        return None if rejection is None else rejection.detail

    async def live_refused_health(self) -> tuple[bool, str]:
        assert self.live_refusal is not None
        return False, self.live_refusal

    async def send_fill(self, fill: OrderFill) -> None:
        ctx = self.ctx
        await ctx.send(
            ORDERS_FILLED_PAPER.record(
                fill,
                event_id=derived_event_id(fill.fill_id, "filled"),
                ts=fill.filled_ts,
                source=ctx.source,
            )
        )
        ctx.metrics.domain.labels(ctx.source, "fill", fill.side.value).inc()

    async def reject(
        self,
        envelope: EventEnvelope[Any],
        validated: ValidatedSignal,
        reason: RejectionReason,
        detail: str,
    ) -> None:
        await emit_rejection(
            self.ctx,
            handled_event_id=envelope.id,
            id_suffix="engine-rejected",
            ts=envelope.ts,
            signal_event_id=validated.signal_event_id,
            signal=validated.signal,
            reason=reason,
            detail=detail,
        )

    async def on_live(self, envelope: EventEnvelope[Any], validated: ValidatedSignal) -> None:
        """Hand a live signal to the Zerodha trader; wait for Kite's answer before the
        offset may commit, so a crash redelivers it (and its tag finds the placed order)."""
        live = self.live
        assert live is not None
        signal = validated.signal
        product = self.products.product_of(signal.strategy_id)
        if product is None:
            # Real money: never placed with a guessed product.
            await self.reject(
                envelope,
                validated,
                RejectionReason.STRATEGY_UNKNOWN,
                f"no configuration for strategy {signal.strategy_id!r} in the trading engine: "
                "its product is unknown, so its order is not placed",
            )
            return
        outcome = await live.submit(validated.signal_event_id, signal, product)
        if isinstance(outcome, Refused):
            await self.reject(envelope, validated, outcome.reason, outcome.detail)
            return
        live.record(outcome.order)

    async def repartition(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        token = str(envelope.data.signal.instrument_token)
        await self.ctx.forward(ENGINE_SIGNALS_BY_INSTRUMENT, token, event.message.value)

    async def on_tick(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        tick: MarketTick = envelope.data
        key = str(tick.instrument_token)
        previous = self.last_prices.get(key)
        if tick_is_stale(None if previous is None else previous.ts, tick):
            return  # an older tick redelivered: the price has moved on
        if not await self.guard.admit(
            tick, previous.price if previous is not None else None, event
        ):
            return  # quarantined: never a fill price, never fills a resting order
        # Only the last tick's book counts: a later tick without depth clears it.
        self.last_prices[key] = LastPrice.of_tick(tick, with_depth=True)
        live = self.live
        if live is not None and tick.instrument_token in live.done:
            live.forget_done(tick.instrument_token)
        resting = self.pending_orders.get(key)
        if not resting:
            return
        # Their fees follow their strategies' products, their fate the kill switch.
        await self.watcher.ready.wait()
        orders, cancelled = cancel_halted(resting, self.kill_switch)
        for order, rejection in cancelled:
            await emit_rejection(
                self.ctx,
                handled_event_id=order.signal_event_id,
                id_suffix="halt-cancelled",
                ts=envelope.ts,
                signal_event_id=order.signal_event_id,
                signal=order.signal,
                reason=rejection.reason,
                detail=rejection.detail,
            )
            log.info(
                "paper_order_cancelled_by_halt",
                signal_event_id=order.signal_event_id,
                strategy_id=order.signal.strategy_id,
                instrument_token=order.instrument_token,
            )
        fills, still_resting = self.trader.on_tick(orders, tick)
        if fills or cancelled:
            self.pending_orders[key] = tuple(still_resting)
            for fill in fills:
                await self.send_fill(fill)

    async def on_validated(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        await self.watcher.ready.wait()
        ctx = self.ctx
        validated: ValidatedSignal = envelope.data
        signal = validated.signal
        halted = halt_refusal(signal, self.kill_switch)
        if halted is not None:
            await self.reject(envelope, validated, halted.reason, halted.detail)
            return
        if signal.execution_mode is ExecutionMode.LIVE:
            if self.live_refusal is not None:
                await self.reject(
                    envelope,
                    validated,
                    RejectionReason.LIVE_TRADING_NOT_CONFIGURED,
                    self.live_refusal,
                )
                return
            if self.live is not None:
                await self.on_live(envelope, validated)
                return
        key = str(signal.instrument_token)
        last = self.last_prices.get(key)
        resting_now = self.pending_orders.get(key) or ()
        outcome = execute_validated(
            self.trader,
            validated,
            None if last is None else last.price,
            None if last is None else last.ts,
            (o.signal_event_id for o in resting_now),
            None if last is None else last.market_depth(),
        )
        if outcome is None:
            return  # a redelivered LIMIT order already resting
        if isinstance(outcome, EngineRejection):
            await self.reject(envelope, validated, outcome.reason, outcome.detail)
            return
        if isinstance(outcome, PendingLimitOrder):
            self.pending_orders[key] = (*resting_now, outcome)
            ctx.metrics.domain.labels(ctx.source, "limit_resting", signal.side.value).inc()
            return
        if isinstance(outcome, MarketFills):
            for fill in outcome.fills:
                await self.send_fill(fill)
            if outcome.unfilled:
                ctx.metrics.domain.labels(ctx.source, "depth_unfilled", signal.side.value).inc()
                log.info(
                    "paper_rest_unfilled",
                    signal_event_id=validated.signal_event_id,
                    strategy_id=signal.strategy_id,
                    instrument_token=signal.instrument_token,
                    filled=outcome.filled,
                    unfilled=outcome.unfilled,
                )
            return
        await self.send_fill(outcome)
