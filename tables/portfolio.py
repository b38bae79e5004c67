"""Portfolio accounting for one strategy: cash, positions, average cost, realized P&L.

Pure domain logic: no Faust, no I/O, no clock. The portfolio manager keeps one
:class:`Portfolio` per strategy (fills are keyed by strategy, so all of a portfolio's
fills arrive in order from one partition) in its `portfolios` table (tables/specs.py).

Money stays exact ``Decimal``: fills are already at tick prices and fees already in paise,
so cash is exact. The one inexact step is re-averaging (a quotient such as ``/3``), which
``Decimal`` carries to 28 significant digits; realized + unrealized - fees therefore matches
``net_pnl`` to ~1e-20 rupees, while ``equity = cash + market_value`` is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.events import InstrumentToken, OrderFill, Side, StrategyId, UtcDatetime
from tables.indexed_log import IndexedLog

# Two kinds of duplicate reach a portfolio. Redelivery after a crash or rebalance re-reads
# records at or below an offset already applied: `source_offsets` (the last applied offset
# per source topic-partition) recognises those, however many. A fill the engine produced
# twice (it crashed after producing, before committing) arrives again at a *later* offset
# with the same fill id, within the engine's commit window: the last 500 fill ids cover
# that, and keep every changelog record of a portfolio small.
RECENT_FILL_IDS_BOUND = 500

ZERO = Decimal("0")


def average_cost_step(
    quantity: int, avg_price: Decimal, signed_quantity: int, price: Decimal
) -> tuple[int, Decimal, Decimal]:
    """Apply a trade of ``signed_quantity`` (+buy / -sell) at ``price`` to a position.

    Returns ``(new_quantity, new_avg_price, realized_pnl)`` under the average-cost method:
    adding in the same direction re-averages; reducing realizes ``(price - avg) * closed``
    for a long (``(avg - price) * closed`` for a short) and keeps the average; crossing
    through zero realizes the closed part and opens the remainder at ``price``; flat has
    average 0. Shared by the portfolio (booked fills) and pre-trade risk (assumed fills) so
    both agree on P&L.
    """
    if signed_quantity == 0:
        raise ValueError("a trade must have a non-zero quantity")
    new_quantity = quantity + signed_quantity
    if quantity == 0:
        return new_quantity, price, ZERO
    if (quantity > 0) == (signed_quantity > 0):
        new_avg = (avg_price * abs(quantity) + price * abs(signed_quantity)) / abs(new_quantity)
        return new_quantity, new_avg, ZERO
    closed = min(abs(quantity), abs(signed_quantity))
    direction = 1 if quantity > 0 else -1
    realized = (price - avg_price) * closed * direction
    if new_quantity == 0:
        return 0, ZERO, realized
    if (new_quantity > 0) == (quantity > 0):
        return new_quantity, avg_price, realized
    return new_quantity, price, realized


class _Frozen(BaseModel):
    # Containers inside are plain dicts/tuples; every transition builds new ones and never
    # mutates an existing instance, so a stored state can be shared safely.
    model_config = ConfigDict(frozen=True, extra="forbid")


class Position(_Frozen):
    symbol: str = Field(min_length=1, max_length=64)
    quantity: int = Field(description="Signed: negative is a short.")
    avg_price: Decimal = Field(ge=0, description="Average cost; 0 when flat.")
    realized_pnl: Decimal = Field(description="Realized on this instrument, fees excluded.")


class PositionValuation(_Frozen):
    instrument_token: InstrumentToken
    symbol: str
    quantity: int
    avg_price: Decimal
    mark_price: Decimal
    priced: bool = Field(description="False when no market price was known (marked at cost).")
    market_value: Decimal = Field(description="Signed: quantity * mark_price.")
    unrealized_pnl: Decimal
    realized_pnl: Decimal


class PortfolioValuation(_Frozen):
    strategy_id: StrategyId
    positions: tuple[PositionValuation, ...]
    cash: Decimal
    market_value: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    equity: Decimal = Field(description="cash + market_value.")
    net_pnl: Decimal = Field(description="equity - starting_cash.")


class Portfolio(_Frozen):
    strategy_id: StrategyId
    starting_cash: Decimal
    cash: Decimal
    positions: dict[InstrumentToken, Position] = Field(default_factory=dict)
    realized_pnl: Decimal = Field(default=ZERO, description="Total realized, fees excluded.")
    fees_paid: Decimal = Field(default=ZERO, ge=0)
    trade_count: int = Field(default=0, ge=0)
    last_fill_ts: UtcDatetime | None = None
    recent_fill_ids: tuple[str, ...] = Field(
        default=(), description=f"Last {RECENT_FILL_IDS_BOUND} applied fill ids, oldest first."
    )
    source_offsets: dict[str, int] = Field(
        default_factory=dict, description="'topic:partition' -> last applied offset."
    )

    def already_applied(self, source: str, offset: int) -> bool:
        """True for a record at or below the last offset applied from `source`."""
        last = self.source_offsets.get(source)
        return last is not None and offset <= last

    def after_source(self, source: str, offset: int) -> Portfolio:
        return self.model_copy(update={"source_offsets": {**self.source_offsets, source: offset}})

    @classmethod
    def new(cls, strategy_id: str, starting_cash: Decimal) -> Portfolio:
        return cls(strategy_id=strategy_id, starting_cash=starting_cash, cash=starting_cash)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Portfolio:
        return cls.model_validate(dict(data))

    def apply_fill(self, fill: OrderFill) -> Portfolio | None:
        """The portfolio after ``fill``, or None if this fill id was already applied."""
        if fill.strategy_id != self.strategy_id:
            raise ValueError(
                f"fill {fill.fill_id} of strategy {fill.strategy_id!r} "
                f"routed to portfolio {self.strategy_id!r}"
            )
        if _holds(self.recent_fill_ids, fill.fill_id):
            return None
        signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
        previous = self.positions.get(fill.instrument_token)
        quantity, avg_price, realized = average_cost_step(
            previous.quantity if previous else 0,
            previous.avg_price if previous else ZERO,
            signed,
            fill.fill_price,
        )
        # Flat positions are kept so the per-instrument realized P&L stays visible.
        position = Position(
            symbol=fill.symbol,
            quantity=quantity,
            avg_price=avg_price,
            realized_pnl=(previous.realized_pnl if previous else ZERO) + realized,
        )
        cash_flow = -fill.notional if fill.side is Side.BUY else fill.notional
        last_fill_ts = (
            fill.filled_ts if self.last_fill_ts is None else max(self.last_fill_ts, fill.filled_ts)
        )
        return self.model_copy(
            update={
                "cash": self.cash + cash_flow - fill.fees,
                "positions": {**self.positions, fill.instrument_token: position},
                "realized_pnl": self.realized_pnl + realized,
                "fees_paid": self.fees_paid + fill.fees,
                "trade_count": self.trade_count + 1,
                "last_fill_ts": last_fill_ts,
                # model_copy does not validate, so the indexed tuple is kept as it is.
                "recent_fill_ids": IndexedLog.appended(
                    self.recent_fill_ids, fill.fill_id, _itself, RECENT_FILL_IDS_BOUND
                ),
            }
        )

    def valuation(self, prices: Mapping[int, Decimal]) -> PortfolioValuation:
        """Mark every position at ``prices[token]``; unknown prices mark at cost (unpriced)."""
        rows: list[PositionValuation] = []
        for token, position in sorted(self.positions.items()):
            known = prices.get(token)
            mark = known if known is not None else position.avg_price
            rows.append(
                PositionValuation(
                    instrument_token=token,
                    symbol=position.symbol,
                    quantity=position.quantity,
                    avg_price=position.avg_price,
                    mark_price=mark,
                    priced=known is not None,
                    market_value=mark * position.quantity,
                    unrealized_pnl=(mark - position.avg_price) * position.quantity,
                    realized_pnl=position.realized_pnl,
                )
            )
        market_value = sum((row.market_value for row in rows), ZERO)
        equity = self.cash + market_value
        return PortfolioValuation(
            strategy_id=self.strategy_id,
            positions=tuple(rows),
            cash=self.cash,
            market_value=market_value,
            unrealized_pnl=sum((row.unrealized_pnl for row in rows), ZERO),
            realized_pnl=self.realized_pnl,
            fees_paid=self.fees_paid,
            equity=equity,
            net_pnl=equity - self.starting_cash,
        )


def _itself(fill_id: str) -> str:
    return fill_id


def _holds(fill_ids: tuple[str, ...], fill_id: str) -> bool:
    """Whether ``fill_id`` is among the recent ids: one dict lookup once the portfolio has
    booked a fill (the ids are then an IndexedLog), a scan for one read from JSON."""
    if isinstance(fill_ids, IndexedLog):
        return fill_ids.find(fill_id) is not None
    return fill_id in fill_ids


@dataclass(frozen=True)
class Booking:
    """What booking one fill record did. ``portfolio`` is the value to store."""

    portfolio: Portfolio
    booked: bool  # False: this fill id was already applied (the engine produced it twice)


def book_fill(portfolio: Portfolio, fill: OrderFill, at: tuple[str, int] | None) -> Booking | None:
    """The portfolio manager's booking of one fill record, read at ``at`` (source, offset).

    None for a record at or below the last offset applied from its source (redelivered:
    nothing to store). The backtest books with ``at=None``: it reads no log.
    """
    if at is not None and portfolio.already_applied(*at):
        return None
    updated = portfolio.apply_fill(fill)
    booked = updated is not None
    result = updated if updated is not None else portfolio
    return Booking(result.after_source(*at) if at is not None else result, booked)
