"""Builders for test events, shared so every test makes them the same way."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from models.events import ExecutionMode, OrderFill, Side

SYMBOLS = {738561: "RELIANCE", 408065: "INFY", 2953217: "TCS", 256265: "NIFTY 50"}


def make_fill(
    fill_id: str,
    side: Side,
    quantity: int,
    price: str,
    *,
    fees: str = "0",
    strategy_id: str,
    token: int,
    filled_ts: datetime,
    symbol: str | None = None,
    mode: ExecutionMode = ExecutionMode.PAPER,
) -> OrderFill:
    """A fill whose order and signal ids derive from `fill_id`."""
    return OrderFill(
        fill_id=fill_id,
        order_id=f"o-{fill_id}",
        signal_event_id=f"s-{fill_id}",
        strategy_id=strategy_id,
        instrument_token=token,
        symbol=symbol or SYMBOLS.get(token, f"S{token}"),
        side=side,
        quantity=quantity,
        fill_price=Decimal(price),
        fees=Decimal(fees),
        execution_mode=mode,
        filled_ts=filled_ts,
    )
