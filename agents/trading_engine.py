"""Stage 4, trading engine: validated signals + ticks -> orders.filled.paper; live signals
go to the Zerodha trader (alpha_panda/zerodha_trader.py), whose fills go to orders.filled.live.

Paper fills need the instrument's last price and resting LIMIT orders need its ticks, so
all state here is per instrument. Validated signals are keyed by strategy and instrument;
the first agent repartitions them, bytes unchanged, by instrument onto a topic with
market.ticks' partitioning, and the second agent consumes that topic and market.ticks
together, routing by topic name, so an instrument's price and orders live in one place.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import structlog
from faust.types import EventT, StreamT

from alpha_panda.domain.engine_rules import EngineRejection, execute_validated, tick_is_stale
from alpha_panda.domain.fees import FeeSchedule
from alpha_panda.domain.paper_trader import MarketFills, PaperTrader, PendingLimitOrder
from alpha_panda.runtime import Route, StageContext
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
)
from alpha_panda.zerodha_trader import Refused
from alpha_panda.zerodha_wiring import install_live_trading
from models.envelope import EventEnvelope, derived_event_id
from models.events import (
    ExecutionMode,
    MarketDepth,
    MarketTick,
    OrderFill,
    RejectedSignal,
    RejectionReason,
    ValidatedSignal,
)

log = structlog.get_logger(__name__)


def register(ctx: StageContext) -> None:
    fees = (
        FeeSchedule.delivery()
        if ctx.settings.paper.product == "delivery"
        else FeeSchedule.intraday()
    )
    trader = PaperTrader(
        slippage_bps=ctx.settings.paper.slippage_bps,
        fees=fees,
        leave_rest_unfilled=ctx.settings.paper.leave_rest_unfilled,
    )
    last_prices = ctx.write_behind_table(
        Tables.LAST_PRICES, partitions=MARKET_TICKS.partitions, help="Last trade per instrument"
    )
    guard = TickGuard(ctx)
    pending_orders = ctx.table(
        Tables.PENDING_ORDERS,
        partitions=MARKET_TICKS.partitions,
        help="Resting paper LIMIT orders per instrument",
    )

    async def send_fill(fill: OrderFill) -> None:
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
        envelope: EventEnvelope[Any],
        validated: ValidatedSignal,
        reason: RejectionReason,
        detail: str,
    ) -> None:
        rejected = RejectedSignal(
            signal_event_id=validated.signal_event_id,
            signal=validated.signal,
            reason=reason,
            detail=detail,
            rejected_by=ctx.source,
            rejected_ts=validated.signal.signal_ts,
        )
        await ctx.send(
            SIGNALS_REJECTED.record(
                rejected,
                event_id=derived_event_id(envelope.id, "engine-rejected"),
                ts=envelope.ts,
                source=ctx.source,
            )
        )
        ctx.metrics.domain.labels(ctx.source, "rejected", reason.value).inc()

    live = install_live_trading(ctx) if ctx.settings.zerodha.configured else None

    async def on_live(envelope: EventEnvelope[Any], validated: ValidatedSignal) -> None:
        """Hand a live signal to the Zerodha trader; wait for Kite's answer before the
        offset may commit, so a crash redelivers it (and its tag finds the placed order)."""
        assert live is not None
        outcome = await live.submit(validated.signal_event_id, validated.signal)
        if isinstance(outcome, Refused):
            await reject(envelope, validated, outcome.reason, outcome.detail)
            return
        live.record(outcome.order)

    async def repartition(envelope: EventEnvelope[Any], event: EventT) -> None:
        token = str(envelope.data.signal.instrument_token)
        await ctx.forward(ENGINE_SIGNALS_BY_INSTRUMENT, token, event.message.value)

    async def on_tick(envelope: EventEnvelope[Any], event: EventT) -> None:
        tick: MarketTick = envelope.data
        key = str(tick.instrument_token)
        previous = last_prices.get(key)
        if tick_is_stale(
            None if previous is None else datetime.fromisoformat(previous["ts"]), tick
        ):
            return  # an older tick redelivered: the price has moved on
        if not await guard.admit(
            tick, Decimal(previous["price"]) if previous is not None else None, event
        ):
            return  # quarantined: never a fill price, never fills a resting order
        last_prices[key] = {
            "price": str(tick.last_price),
            "symbol": tick.symbol,
            "ts": tick.exchange_ts.isoformat(),
            # Only the last tick's book counts: a later tick without depth clears it.
            **({"depth": tick.depth.model_dump(mode="json")} if tick.depth else {}),
        }
        if live is not None and tick.instrument_token in live.done:
            live.forget_done(tick.instrument_token)
        resting = pending_orders.get(key)
        if not resting:
            return
        orders = [PendingLimitOrder.from_json_dict(o) for o in resting]
        fills, still_resting = trader.on_tick(orders, tick)
        if fills:
            pending_orders[key] = [o.to_json_dict() for o in still_resting]
            for fill in fills:
                await send_fill(fill)

    async def on_validated(envelope: EventEnvelope[Any], event: EventT) -> None:
        validated: ValidatedSignal = envelope.data
        signal = validated.signal
        if signal.execution_mode is ExecutionMode.LIVE and live is not None:
            await on_live(envelope, validated)
            return
        key = str(signal.instrument_token)
        price = last_prices.get(key)
        resting_now = pending_orders.get(key) or []
        outcome = execute_validated(
            trader,
            validated,
            None if price is None else Decimal(price["price"]),
            None if price is None else datetime.fromisoformat(price["ts"]),
            (o["signal_event_id"] for o in resting_now),
            MarketDepth.model_validate(price["depth"]) if price and "depth" in price else None,
        )
        if outcome is None:
            return  # a redelivered LIMIT order already resting
        if isinstance(outcome, EngineRejection):
            await reject(envelope, validated, outcome.reason, outcome.detail)
            return
        if isinstance(outcome, PendingLimitOrder):
            pending_orders[key] = [*resting_now, outcome.to_json_dict()]
            ctx.metrics.domain.labels(ctx.source, "limit_resting", signal.side.value).inc()
            return
        if isinstance(outcome, MarketFills):
            for fill in outcome.fills:
                await send_fill(fill)
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
        await send_fill(outcome)

    @ctx.app.agent(ctx.source_channel([SIGNALS_VALIDATED]), name="engine-repartition")
    async def repartition_validated(stream: StreamT) -> None:
        await ctx.process(stream, {SIGNALS_VALIDATED.name: Route(SIGNALS_VALIDATED, repartition)})

    channel = ctx.source_channel([MARKET_TICKS, ENGINE_SIGNALS_BY_INSTRUMENT])

    @ctx.app.agent(channel, name="engine-execute")
    async def execute(stream: StreamT) -> None:
        await ctx.process(
            stream,
            {
                MARKET_TICKS.name: Route(MARKET_TICKS, on_tick),
                ENGINE_SIGNALS_BY_INSTRUMENT.name: Route(
                    ENGINE_SIGNALS_BY_INSTRUMENT, on_validated
                ),
            },
        )
