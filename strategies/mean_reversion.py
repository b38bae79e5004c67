"""Mean reversion: buy a price stretched far below its rolling mean, sell on reversion."""

from __future__ import annotations

from collections import deque
from decimal import Context, Decimal, Inexact
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from models.events import MarketTick
from strategies.base import (
    MAX_WINDOW,
    BaseStrategy,
    StrategyConfig,
    StrategyParams,
    WholeNumber,
    format_decimal,
)

# Decisions use sums of prices and of squared prices (<= ~50 digits for 18-digit prices
# over MAX_WINDOW ticks) times z^2 (<= 24 digits), so 120 digits keeps them exact.
# Inexact is trapped so that guarantee is checked, not hoped.
_EXACT = Context(prec=120, traps=[Inexact])
# 28 significant digits for the mean/std/z quoted in `reason`; decisions never use it.
_DISPLAY = Context(prec=28)


class MeanReversionParams(StrategyParams):
    window: WholeNumber = Field(ge=2, le=MAX_WINDOW, description="Ticks in the rolling window.")
    entry_z: Decimal = Field(
        gt=0, max_digits=12, decimal_places=6, description="BUY when z <= -entry_z."
    )
    exit_z: Decimal = Field(
        ge=0, max_digits=12, decimal_places=6, description="SELL when z >= -exit_z."
    )

    @field_validator("exit_z")
    @classmethod
    def _exit_inside_entry(cls, exit_z: Decimal, info: ValidationInfo) -> Decimal:
        entry_z = info.data.get("entry_z")
        # Absent when entry_z itself failed validation; that error is reported already.
        if entry_z is not None and exit_z >= entry_z:
            raise ValueError(
                f"exit_z ({exit_z}) must be less than entry_z ({entry_z}), otherwise a "
                "position would be sold on the same tick that bought it"
            )
        return exit_z


class MeanReversionStrategy(BaseStrategy[MeanReversionParams]):
    """z-score of the current price against the last ``window`` prices (itself included).

    mean and population std are over those ``window`` prices; z = (p - mean) / std.
    Flat and z <= -entry_z: BUY. Long and z >= -exit_z: SELL. std == 0 (all prices
    equal): no signal either way. Nothing until ``window`` prices are seen. Only ticks
    count: a time gap between ticks does not reset or age the window.
    """

    kind: ClassVar[str] = "mean_reversion"
    params_model: ClassVar[type[StrategyParams]] = MeanReversionParams

    def __init__(self, config: StrategyConfig, params: MeanReversionParams) -> None:
        super().__init__(config, params)
        # Running sum and sum of squares of the window: exact (see _EXACT), so always equal
        # to summing the window afresh, at two additions a tick instead of 2 * window.
        self._total = Decimal(0)
        self._squares = Decimal(0)
        # The window's squares, beside it, so the one leaving need not be squared again.
        self._window_squares: deque[Decimal] = deque(maxlen=self._window)
        # The thresholds squared once: every full-window tick compares d^2 with z^2 * V.
        self._entry_z2 = _EXACT.multiply(params.entry_z, params.entry_z)
        self._exit_z2 = _EXACT.multiply(params.exit_z, params.exit_z)

    def _history_size(self) -> int:
        return self.params.window

    def _push_price(self, price: Decimal) -> None:
        prices = self._prices
        square = _EXACT.multiply(price, price)
        if len(prices) == self._window:  # window_full, inlined: once per tick
            self._total = _EXACT.add(_EXACT.subtract(self._total, prices[0]), price)
            self._squares = _EXACT.add(
                _EXACT.subtract(self._squares, self._window_squares[0]), square
            )
        else:
            self._total = _EXACT.add(self._total, price)
            self._squares = _EXACT.add(self._squares, square)
        # The base class's _push_price, inlined (the deques drop their oldest when full).
        prices.append(price)
        self._window_squares.append(square)

    def _window_restored(self) -> None:
        total = Decimal(0)
        squares = Decimal(0)
        self._window_squares = deque(maxlen=self._window)
        for price in self._prices:
            square = _EXACT.multiply(price, price)
            total = _EXACT.add(total, price)
            squares = _EXACT.add(squares, square)
            self._window_squares.append(square)
        self._total, self._squares = total, squares

    def _moments(self) -> tuple[Decimal, Decimal] | None:
        """(D, V) with z = D / sqrt(V), or None if the window is not full or std == 0.

        With n prices, sum S and sum of squares Q: p - mean = (n*p - S) / n and
        std = sqrt(n*Q - S^2) / n, so D = n*p - S and V = n*Q - S^2. Both are exact,
        which lets the thresholds be tested by squaring instead of by an irrational
        sqrt that could round a z sitting exactly on a threshold to either side.
        """
        d = self._deviation()
        if d is None:
            return None
        v = self._variance_n2()
        if v == 0:
            return None
        return d, v

    def _deviation(self) -> Decimal | None:
        """D = n*p - S, or None while the window is not full."""
        prices = self._prices
        n = len(prices)
        if n != self._window:  # window_full, inlined: once per tick
            return None
        return _EXACT.subtract(_EXACT.multiply(n, prices[-1]), self._total)

    def _variance_n2(self) -> Decimal:
        """V = n*Q - S^2 (n^2 times the population variance; 0 iff all prices are equal)."""
        total = self._total
        return _EXACT.subtract(
            _EXACT.multiply(len(self._prices), self._squares), _EXACT.multiply(total, total)
        )

    def _reason(self, d: Decimal, v: Decimal, comparison: str, bound: Decimal) -> str:
        n = len(self._prices)
        std_n = _DISPLAY.sqrt(v)
        z = _DISPLAY.divide(d, std_n)
        mean = _DISPLAY.divide(_DISPLAY.subtract(_DISPLAY.multiply(n, self._prices[-1]), d), n)
        std = _DISPLAY.divide(std_n, n)
        return (
            f"z {format_decimal(z, bound)} {comparison} {format_decimal(bound, bound)} "
            f"(price {self._prices[-1]}, mean {format_decimal(mean, Decimal(0), 4)}, "
            f"std {format_decimal(std, Decimal(0), 4)}, {n} ticks)"
        )

    def _entry_reason(self, tick: MarketTick) -> str | None:
        # z <= -entry_z  <=>  d <= -entry_z * sqrt(v)  <=>  d < 0 and d^2 >= entry_z^2 * v.
        # V is only needed when d < 0, and then V > 0 (V = 0 means every price is equal,
        # so d = 0): most ticks decide on d alone, exactly as the full test would.
        d = self._deviation()
        if d is None or d >= 0:
            return None
        v = self._variance_n2()
        if _EXACT.multiply(d, d) >= _EXACT.multiply(self._entry_z2, v):
            return self._reason(d, v, "<=", _DISPLAY.minus(self.params.entry_z))
        return None

    def _exit_reason(self, tick: MarketTick) -> str | None:
        moments = self._moments()
        if moments is None:
            return None
        d, v = moments
        # z >= -exit_z  <=>  d >= -exit_z * sqrt(v)  <=>  d >= 0 or d^2 <= exit_z^2 * v
        if d >= 0 or _EXACT.multiply(d, d) <= _EXACT.multiply(self._exit_z2, v):
            return self._reason(d, v, ">=", _DISPLAY.minus(self.params.exit_z))
        return None
