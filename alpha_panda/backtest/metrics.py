"""Per-strategy bookkeeping for a backtest's report: equity, drawdown, trades, exposure.

Pure: no clock, no I/O. The money figures come from the portfolio the backtest booked
with :mod:`tables.portfolio` (the portfolio manager's accounting); this module only
watches them change. Definitions (also in docs/BACKTESTING.md):

- equity = cash + sum(quantity * last tick price), after every tick and every fill;
- max drawdown = the largest fall of equity from its running peak (the peak starts at the
  starting cash), in rupees and as a percentage of that peak;
- the equity series is sampled at the close of each event-time bar (default one minute)
  that had a tick; the Sharpe-like ratio is mean / sample standard deviation of the
  bar-to-bar returns, times sqrt(bars per year), with a year of 252 sessions of 375 NSE
  minutes and no risk-free rate. It is a float: a ratio, not money;
- a closed trade is a fill that reduces a position; it wins when the P&L it realizes
  (average cost, before fees) is positive. Win rate = wins / closed trades;
- exposure = the share of the run's event time (first tick to last tick) during which
  the strategy held any open position.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from tables.portfolio import Portfolio

ZERO = Decimal("0")
HUNDRED = Decimal("100")
TRADING_DAYS_PER_YEAR = 252
SESSION_SECONDS = 375 * 60  # NSE continuous session 09:15-15:30 IST


@dataclass(frozen=True)
class EquityPoint:
    ts: datetime
    equity: Decimal
    drawdown: Decimal  # peak so far - equity, >= 0


@dataclass
class Ledger:
    """One strategy's running equity and trade statistics."""

    strategy_id: str
    starting_cash: Decimal
    cash: Decimal = ZERO
    quantities: dict[int, int] = field(default_factory=dict)  # open positions only
    market_value: Decimal = ZERO
    peak: Decimal = ZERO
    max_drawdown: Decimal = ZERO
    max_drawdown_pct: Decimal = ZERO
    fills: int = 0
    closed_trades: int = 0
    winning_trades: int = 0
    open_since: datetime | None = None
    time_in_market: timedelta = timedelta(0)
    series: list[EquityPoint] = field(default_factory=list)
    # The deepest drawdown since the peak was last raised: a drawdown no deeper cannot set
    # a new maximum, in rupees or percent (see _watch), so most ticks skip the division.
    _deepest_under_peak: Decimal = field(default=ZERO, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.cash = self.starting_cash
        self.peak = self.starting_cash

    @property
    def equity(self) -> Decimal:
        return self.cash + self.market_value

    def remark(self, token: int, old_price: Decimal, new_price: Decimal) -> None:
        """The price of ``token``, which this strategy holds, moved."""
        self.market_value += self.quantities[token] * (new_price - old_price)
        self._watch()

    def on_fill(
        self,
        before: Portfolio,
        after: Portfolio,
        token: int,
        marks: dict[int, Decimal],
        ts: datetime,
    ) -> None:
        """A fill on ``token`` took the portfolio from ``before`` to ``after``."""
        self.fills += 1
        previous = before.positions.get(token)
        held = previous.quantity if previous is not None else 0
        now = after.positions[token].quantity
        if (held != 0 and abs(now) < abs(held)) or held > 0 > now or held < 0 < now:
            self.closed_trades += 1
            if after.realized_pnl - before.realized_pnl > 0:
                self.winning_trades += 1
        was_open = bool(self.quantities)
        if now:
            self.quantities[token] = now
        else:
            self.quantities.pop(token, None)
        self.cash = after.cash
        self.market_value = sum((q * marks[t] for t, q in self.quantities.items()), ZERO)
        if not was_open and self.quantities:
            self.open_since = ts
        elif was_open and not self.quantities and self.open_since is not None:
            self.time_in_market += ts - self.open_since
            self.open_since = None
        self._watch()

    def close_bar(self, ts: datetime) -> None:
        equity = self.equity
        self.series.append(EquityPoint(ts, equity, self.peak - equity))

    def _watch(self) -> None:
        equity = self.cash + self.market_value
        if equity > self.peak:
            self.peak = equity
            self._deepest_under_peak = ZERO
            return
        drawdown = self.peak - equity
        # Under one peak the percentage grows with the drawdown (the division rounds
        # monotonically), and an earlier, deeper drawdown under this peak was already
        # compared: one no deeper changes neither maximum.
        if drawdown <= self._deepest_under_peak:
            return
        self._deepest_under_peak = drawdown
        if drawdown > self.max_drawdown:
            self.max_drawdown = drawdown
        if self.peak > 0:
            pct = drawdown * HUNDRED / self.peak
            if pct > self.max_drawdown_pct:
                self.max_drawdown_pct = pct

    def exposure(self, first_ts: datetime | None, last_ts: datetime | None) -> Decimal:
        """Share of [first_ts, last_ts] spent with an open position, in percent."""
        if first_ts is None or last_ts is None or last_ts <= first_ts:
            return ZERO
        in_market = self.time_in_market
        if self.open_since is not None:
            in_market += last_ts - self.open_since
        return (
            Decimal(in_market / timedelta(microseconds=1))
            * HUNDRED
            / Decimal((last_ts - first_ts) / timedelta(microseconds=1))
        )


def sharpe_like(equities: list[Decimal], bar: timedelta) -> float:
    """mean / stdev of bar-to-bar returns * sqrt(bars a year); 0.0 when undefined."""
    returns = [
        float(current / previous - 1)
        for previous, current in itertools.pairwise(equities)
        if previous != 0
    ]
    if len(returns) < 2:
        return 0.0
    deviation = statistics.stdev(returns)
    if deviation == 0:
        return 0.0
    bars_per_year = TRADING_DAYS_PER_YEAR * SESSION_SECONDS / bar.total_seconds()
    return statistics.fmean(returns) / deviation * math.sqrt(bars_per_year)
