"""Channel breakout: buy when the price closes above the highest of the previous
``window`` prices, sell when it falls below the lowest of them.

Pure, like every strategy: ticks in, signals out, time from ``tick.exchange_ts``, Decimal
comparisons only (no arithmetic, so nothing to round).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from models.events import MarketTick
from strategies.base import MAX_WINDOW, BaseStrategy, StrategyParams, WholeNumber


class BreakoutParams(StrategyParams):
    window: WholeNumber = Field(
        ge=1, le=MAX_WINDOW, description="Previous ticks that make the channel."
    )


class BreakoutStrategy(BaseStrategy[BreakoutParams]):
    kind: ClassVar[str] = "breakout"
    params_model: ClassVar[type[StrategyParams]] = BreakoutParams
    # Used for parameters a configuration leaves out (`alpha-panda strategies add`).
    default_params: ClassVar[dict[str, Any]] = {"window": 10, "quantity": 10}

    def _history_size(self) -> int:
        # The channel (window previous prices) plus the current one.
        return self.params.window + 1

    def _entry_reason(self, tick: MarketTick) -> str | None:
        if not self.window_full:
            return None
        *channel, price = self.prices
        high = max(channel)
        if price > high:
            return f"breakout: {price} > {self.params.window}-tick high {high}"
        return None

    def _exit_reason(self, tick: MarketTick) -> str | None:
        if not self.window_full:
            return None
        *channel, price = self.prices
        low = min(channel)
        if price < low:
            return f"breakdown: {price} < {self.params.window}-tick low {low}"
        return None
