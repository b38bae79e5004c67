"""Unit tests for the pure strategy logic, plus the helpers they share (on tests/factories)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

from models.events import MarketTick, TradingSignal
from strategies.base import BaseStrategy, StrategyParams
from tests.factories import tick as stub_tick

TOKEN = 256265
SYMBOL = "NIFTY"
# The strategies' instrument; time as seconds after T0.
tick = partial(stub_tick, token=TOKEN, symbol=SYMBOL)


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


class Exploding(BaseStrategy[StrategyParams]):
    """A plug-in with a bug: it raises on a price of 13, otherwise buys and holds."""

    kind: ClassVar[str] = "exploding"
    params_model: ClassVar[type[StrategyParams]] = StrategyParams

    def _history_size(self) -> int:
        return 1

    def _entry_reason(self, tick: MarketTick) -> str | None:
        if tick.last_price == 13:
            raise RuntimeError("bug in the plug-in")
        return "always"

    def _exit_reason(self, tick: MarketTick) -> str | None:
        if tick.last_price == 13:
            raise RuntimeError("bug in the plug-in")
        return None
