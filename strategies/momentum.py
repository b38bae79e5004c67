"""Simple momentum: buy after a large enough rise over N ticks, sell after a fall."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact
from typing import ClassVar

from pydantic import Field

from models.events import MarketTick
from strategies.base import (
    MAX_WINDOW,
    BaseStrategy,
    StrategyConfig,
    StrategyParams,
    WholeNumber,
    format_decimal,
)

# Enough digits that products of tick prices (<= 18 digits) and the threshold
# (<= 12 digits) are exact; Inexact is trapped so that guarantee is checked, not hoped.
_EXACT = Context(prec=80, traps=[Inexact])
# Only for the human-readable return in `reason`; decisions never use it.
_DISPLAY = Context(prec=28)
_HUNDRED = Decimal(100)


class MomentumParams(StrategyParams):
    lookback: WholeNumber = Field(ge=1, le=MAX_WINDOW, description="Ticks back to compare with.")
    threshold_pct: Decimal = Field(
        gt=0,
        lt=100,
        max_digits=12,
        decimal_places=6,
        description="Return, in percent, that triggers a BUY (and, negated, a SELL).",
    )


class SimpleMomentumStrategy(BaseStrategy[MomentumParams]):
    """Return over the last ``lookback`` ticks versus a symmetric percent threshold.

    ret = (p_now - p_lookback_ago) / p_lookback_ago * 100. Flat and ret >= threshold:
    BUY. Long and ret <= -threshold: SELL. Nothing until lookback + 1 prices are seen.
    Only ticks count: a time gap between ticks does not reset or age the window.
    """

    kind: ClassVar[str] = "momentum"
    params_model: ClassVar[type[StrategyParams]] = MomentumParams

    def __init__(self, config: StrategyConfig, params: MomentumParams) -> None:
        super().__init__(config, params)
        # ret >= threshold  <=>  100 * (p_now - p_then) >= threshold * p_then
        #                   <=>  100 * p_now >= (100 + threshold) * p_then   (p_then > 0),
        # and ret <= -threshold  <=>  100 * p_now <= (100 - threshold) * p_then: the same
        # exact comparisons with one product per side, the factors computed once.
        self._up = _EXACT.add(_HUNDRED, params.threshold_pct)
        self._down = _EXACT.subtract(_HUNDRED, params.threshold_pct)

    def _history_size(self) -> int:
        return self.params.lookback + 1

    def _reason(self, comparison: str) -> str:
        p_then, p_now = self._prices[0], self._prices[-1]
        ret = _DISPLAY.multiply(_DISPLAY.divide(_DISPLAY.subtract(p_now, p_then), p_then), 100)
        threshold = self.params.threshold_pct
        bound = threshold if comparison == ">=" else _DISPLAY.minus(threshold)
        return (
            f"return {format_decimal(ret, threshold)}% over {self.params.lookback} ticks "
            f"{comparison} {format_decimal(bound, threshold)}%"
        )

    def _entry_reason(self, tick: MarketTick) -> str | None:
        prices = self._prices
        if len(prices) != self._window:  # window_full, inlined: once per tick
            return None
        if _EXACT.multiply(prices[-1], _HUNDRED) >= _EXACT.multiply(prices[0], self._up):
            return self._reason(">=")
        return None

    def _exit_reason(self, tick: MarketTick) -> str | None:
        prices = self._prices
        if len(prices) != self._window:
            return None
        if _EXACT.multiply(prices[-1], _HUNDRED) <= _EXACT.multiply(prices[0], self._down):
            return self._reason("<=")
        return None
