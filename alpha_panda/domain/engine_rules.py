"""The trading engine's decisions, outside the agent: which ticks count, what a
validated signal becomes, what the kill switch stops.

Pure domain logic (no Faust, no I/O, no clock): the engine (agents/trading_engine.py)
keeps last prices and resting LIMIT orders in its tables and asks these functions what
to do; the backtest (alpha_panda/backtest) keeps the same things in memory and asks the
same functions, so both fill the same orders at the same prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from alpha_panda.domain.paper_trader import MarketFills, PaperTrader, PendingLimitOrder
from alpha_panda.domain.risk_rules import check_kill_switch
from models.events import (
    ExecutionMode,
    MarketDepth,
    MarketTick,
    OrderFill,
    RejectionReason,
    TradingSignal,
    ValidatedSignal,
)
from tables.risk_state import KillSwitch

LIVE_NOT_CONFIGURED = "live trading not configured: set ALPHA_PANDA_ZERODHA_API_KEY and log in"


@dataclass(frozen=True)
class EngineRejection:
    reason: RejectionReason
    detail: str


def halt_refusal(signal: TradingSignal, kill_switch: KillSwitch) -> EngineRejection | None:
    """The kill switch at execution: a signal the risk manager approved before a halt
    (still in flight, or redelivered) is not executed while its strategy is halted.

    The same rule and wording as the risk manager's (``check_kill_switch``), so an
    operator reads one reason whichever stage refused the signal.
    """
    rejection = check_kill_switch(signal, kill_switch)
    if rejection is None:
        return None
    return EngineRejection(rejection.reason, f"{rejection.detail}: not executed")


def cancel_halted(
    resting: Sequence[PendingLimitOrder], kill_switch: KillSwitch
) -> tuple[list[PendingLimitOrder], list[tuple[PendingLimitOrder, EngineRejection]]]:
    """Split resting LIMIT orders into those that keep resting and those the kill switch
    cancels (each with its reason), in their resting order."""
    kept: list[PendingLimitOrder] = []
    cancelled: list[tuple[PendingLimitOrder, EngineRejection]] = []
    for order in resting:
        rejection = halt_cancellation(order.signal, kill_switch, "resting LIMIT order")
        if rejection is None:
            kept.append(order)
        else:
            cancelled.append((order, rejection))
    return kept, cancelled


def halt_cancellation(
    signal: TradingSignal, kill_switch: KillSwitch, order: str
) -> EngineRejection | None:
    """Why the kill switch cancels ``signal``'s working ``order`` (a resting paper LIMIT
    order, an open order at Kite), or None when its strategy is not halted."""
    rejection = check_kill_switch(signal, kill_switch)
    if rejection is None:
        return None
    return EngineRejection(rejection.reason, f"{rejection.detail}: {order} cancelled")


def tick_is_stale(previous_ts: datetime | None, tick: MarketTick) -> bool:
    """An older tick redelivered: the instrument's price has moved on, ignore it."""
    return previous_ts is not None and previous_ts > tick.exchange_ts


def execute_validated(
    trader: PaperTrader,
    validated: ValidatedSignal,
    last_price: Decimal | None,
    price_ts: datetime | None,
    resting_signal_ids: Iterable[str],
    depth: MarketDepth | None = None,
) -> OrderFill | MarketFills | PendingLimitOrder | EngineRejection | None:
    """A fill (or a MARKET order's fills against ``depth``), a LIMIT order to rest, a
    rejection, or None for a LIMIT order already resting.

    ``last_price``/``price_ts``/``depth`` are the instrument's last tick (None before any
    tick; ``depth`` None when that tick carried no book). A live signal reaching this is
    refused: the engine hands live signals to the Zerodha trader when one is configured.
    """
    signal = validated.signal
    if signal.execution_mode is ExecutionMode.LIVE:
        return EngineRejection(RejectionReason.LIVE_TRADING_NOT_CONFIGURED, LIVE_NOT_CONFIGURED)
    if last_price is None or price_ts is None:
        return EngineRejection(
            RejectionReason.NO_MARKET_PRICE,
            f"no market price yet for instrument {signal.instrument_token}",
        )
    # Fill time is market time: the later of the signal and the price it fills at.
    fill_ts = max(signal.signal_ts, price_ts)
    if validated.signal_event_id in resting_signal_ids:
        return None  # a redelivered LIMIT order already resting
    return trader.execute(signal, validated.signal_event_id, last_price, fill_ts, depth)
