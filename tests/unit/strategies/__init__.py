"""Unit tests for the pure strategy logic, plus the tick helpers they share."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from models.events import MarketTick, TradingSignal
from strategies.base import BaseStrategy

TOKEN = 256265
SYMBOL = "NIFTY"
# 09:15 IST, the NSE open, as UTC.
T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)


def tick(price: str, second: int, token: int = TOKEN) -> MarketTick:
    return MarketTick(
        instrument_token=token,
        symbol=SYMBOL,
        last_price=Decimal(price),
        volume=1000 + second,
        exchange_ts=T0 + timedelta(seconds=second),
    )


def run(
    strategy: BaseStrategy[Any], prices: Sequence[str], start: int = 0
) -> list[tuple[int, TradingSignal]]:
    """Feed prices as ticks one second apart (tick i at T0 + start + i seconds) and
    return (tick index, signal) for every signal emitted."""
    out: list[tuple[int, TradingSignal]] = []
    for i, price in enumerate(prices):
        out.extend((start + i, s) for s in strategy.on_tick(tick(price, start + i)))
    return out


def fired(strategy: BaseStrategy[Any], prices: Sequence[str]) -> list[tuple[int, str]]:
    """(tick index, side) of every signal: the compact form the pinned tests assert."""
    return [(i, s.side.value) for i, s in run(strategy, prices)]
