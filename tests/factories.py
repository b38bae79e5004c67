"""Stubs for test events, shared so every test makes them the same way.

One clock (``T0``) and one builder per event: :func:`tick`, :func:`signal`, :func:`fill`,
:func:`rejection`; and :func:`strategy`, a strategy as the configuration store holds it.
Every argument has a default that makes a valid event, so a test names only what it is
about. Times are given as an offset from ``T0`` (``second=``) or as ``ts=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from alpha_panda import db
from models.events import (
    ExecutionMode,
    MarketDepth,
    MarketTick,
    OrderFill,
    OrderType,
    RejectedSignal,
    RejectionReason,
    Side,
    TradingSignal,
)

# 09:30 IST on Monday 2 March 2026, an NSE trading day (its session is open).
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
# The NSE open (09:15 IST) on that day, for tests about the start of the session.
OPEN = datetime(2026, 3, 2, 3, 45, tzinfo=UTC)

RELIANCE = 738561
INFY = 408065
TCS = 2953217
NIFTY = 256265
SYMBOLS = {RELIANCE: "RELIANCE", INFY: "INFY", TCS: "TCS", NIFTY: "NIFTY 50"}


def symbol_of(token: int) -> str:
    return SYMBOLS.get(token, f"S{token}")


def _at(ts: datetime | None, second: float) -> datetime:
    return ts if ts is not None else T0 + timedelta(seconds=second)


def tick(
    price: str | Decimal,
    second: float = 0,
    token: int = RELIANCE,
    *,
    ts: datetime | None = None,
    symbol: str | None = None,
    volume: int = 1,
    bid: str | None = None,
    ask: str | None = None,
    depth: MarketDepth | None = None,
) -> MarketTick:
    """A tick at ``ts``, else ``second`` seconds after ``T0``."""
    return MarketTick(
        instrument_token=token,
        symbol=symbol or symbol_of(token),
        last_price=Decimal(price),
        volume=volume,
        bid=Decimal(bid) if bid is not None else None,
        ask=Decimal(ask) if ask is not None else None,
        exchange_ts=_at(ts, second),
        depth=depth,
    )


def signal(
    side: Side = Side.BUY,
    quantity: int = 10,
    price: str = "1000",
    token: int = RELIANCE,
    *,
    ts: datetime = T0,
    strategy_id: str = "momo",
    limit: str | None = None,
    mode: ExecutionMode = ExecutionMode.PAPER,
    symbol: str | None = None,
    reason: str = "",
) -> TradingSignal:
    """A market signal (a limit one when ``limit`` is given); ``price`` is the reference."""
    return TradingSignal(
        strategy_id=strategy_id,
        instrument_token=token,
        symbol=symbol or symbol_of(token),
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=Decimal(limit) if limit else None,
        reference_price=Decimal(price),
        execution_mode=mode,
        signal_ts=ts,
        reason=reason,
    )


# A live strategy's order: what the Kite order builder, the trader and the postback reader see.
live_signal = partial(
    signal, quantity=100, price="1250", strategy_id="live-momo", mode=ExecutionMode.LIVE
)


def fill(
    fill_id: str,
    side: Side,
    quantity: int,
    price: str,
    fees: str = "0",
    *,
    strategy_id: str = "momo",
    token: int = RELIANCE,
    second: float = 0,
    ts: datetime | None = None,
    symbol: str | None = None,
    mode: ExecutionMode = ExecutionMode.PAPER,
    reason: str | None = None,
) -> OrderFill:
    """A fill whose order and signal ids derive from ``fill_id``, at ``ts``, else ``second``
    seconds after ``T0``; ``reason`` is its signal's (an MIS square-off's starts with
    ``mis_square_off``)."""
    return OrderFill(
        fill_id=fill_id,
        order_id=f"o-{fill_id}",
        signal_event_id=f"s-{fill_id}",
        strategy_id=strategy_id,
        instrument_token=token,
        symbol=symbol or symbol_of(token),
        side=side,
        quantity=quantity,
        fill_price=Decimal(price),
        fees=Decimal(fees),
        execution_mode=mode,
        filled_ts=_at(ts, second),
        reason=reason,
    )


def rejection(
    rejected: TradingSignal,
    reason: RejectionReason,
    detail: str = "",
    *,
    signal_event_id: str = "sig-1",
    rejected_by: str = "risk_manager",
    ts: datetime | None = None,
) -> RejectedSignal:
    """``rejected`` refused for ``reason``, at its own signal time unless ``ts`` is given."""
    return RejectedSignal(
        signal_event_id=signal_event_id,
        signal=rejected,
        reason=reason,
        detail=detail,
        rejected_by=rejected_by,
        rejected_ts=ts if ts is not None else rejected.signal_ts,
    )


# Momentum that signals on the first tick moving 0.5 % (lookback 1), 10 shares an order.
QUICK_MOMENTUM = {"lookback": 1, "threshold_pct": "0.5", "quantity": 10}


def strategy(
    strategy_id: str = "momo",
    mode: str = "paper",
    *,
    params: Mapping[str, Any] = QUICK_MOMENTUM,
    enabled: bool = True,
    **risk: Any,
) -> db.StrategyConfigRecord:
    """A momentum strategy on RELIANCE, updated at ``T0``; ``risk`` are its risk overrides
    (``product="CNC"``)."""
    return db.validated_strategy(
        strategy_id,
        "momentum",
        [(RELIANCE, symbol_of(RELIANCE))],
        params,
        enabled=enabled,
        execution_mode=mode,
        risk_limits=risk,
        updated_at=T0,
    )
