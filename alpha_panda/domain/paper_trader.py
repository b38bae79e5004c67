"""Paper execution: simulated fills for validated signals.

Pure domain logic: the trading engine supplies the last traded price and the time (from
ticks); nothing here reads a clock or does I/O. Order and fill ids are derived from the
signal's event id, so reprocessing a signal after a crash yields the same ids and the
portfolio drops the duplicate fill.

Semantics (docs/TRADING_RULES.md):
- MARKET: last price moved against the trader by ``slippage_bps``, then rounded to the
  tick against the trader (BUY up, SELL down).
- LIMIT, marketable on arrival (BUY limit >= last, SELL limit <= last): fills now at the
  slipped market price, but never worse than the limit.
- LIMIT, not marketable: rests, and fills at the limit (passive, no slippage) on the
  first later tick that trades through it (BUY: last < limit, SELL: last > limit).
- MARKET when the instrument's last tick carried depth: walks the opposite side of the
  book level by level, one fill per level at that level's price; what the book cannot
  absorb fills at the last level's price plus slippage, or stays unfilled when
  ``leave_rest_unfilled`` is set. The first fill keeps the single-fill id, so an order
  that one level absorbs produces exactly the fill it produced before depth existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from alpha_panda.domain.fees import FeeSchedule
from models.envelope import derived_event_id
from models.events import (
    DepthLevel,
    ExecutionMode,
    MarketDepth,
    MarketTick,
    OrderFill,
    OrderType,
    Side,
    TradingSignal,
    UtcDatetime,
)

BPS = Decimal("10000")


def fill_id_for(signal_event_id: str, index: int = 0) -> str:
    """The id of an order's ``index``-th fill; the first is the single-fill id."""
    if index == 0:
        return derived_event_id(signal_event_id, "fill")
    return derived_event_id(signal_event_id, "fill", index)


def order_id_for(signal_event_id: str) -> str:
    return derived_event_id(signal_event_id, "order")


class PendingLimitOrder(BaseModel):
    """A LIMIT order resting until the market trades through its price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal_event_id: str
    signal: TradingSignal
    accepted_ts: UtcDatetime

    @model_validator(mode="after")
    def _must_be_limit(self) -> PendingLimitOrder:
        if self.signal.order_type is not OrderType.LIMIT:
            raise ValueError("only a LIMIT order can rest")
        return self

    @property
    def order_id(self) -> str:
        return order_id_for(self.signal_event_id)

    @property
    def limit_price(self) -> Decimal:
        # The TradingSignal validator guarantees a LIMIT order carries a limit price.
        assert self.signal.limit_price is not None
        return self.signal.limit_price

    @property
    def instrument_token(self) -> int:
        return self.signal.instrument_token

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> PendingLimitOrder:
        return cls.model_validate(dict(data))


@dataclass(frozen=True)
class MarketFills:
    """A MARKET order filled against depth: one fill per level, best level first."""

    fills: tuple[OrderFill, ...]
    unfilled: int = 0

    @property
    def filled(self) -> int:
        return sum(f.quantity for f in self.fills)


@dataclass(frozen=True)
class PaperTrader:
    slippage_bps: Decimal
    # The charges of a strategy's fills, by strategy id: those of its product
    # (alpha_panda/domain/products.py, StrategyProducts.fees_of), so a CNC strategy pays
    # delivery charges and an MIS one intraday charges, in the same engine.
    fees: Callable[[str], FeeSchedule]
    tick_size: Decimal = field(default=Decimal("0.05"))
    # What the book's five levels cannot absorb: False fills it at the last level's price
    # plus slippage; True leaves it unfilled (reported as MarketFills.unfilled).
    leave_rest_unfilled: bool = False

    def __post_init__(self) -> None:
        if self.slippage_bps < 0:
            raise ValueError(f"slippage_bps must be >= 0, got {self.slippage_bps}")
        if self.tick_size <= 0:
            raise ValueError(f"tick_size must be > 0, got {self.tick_size}")

    def execute(
        self,
        signal: TradingSignal,
        signal_event_id: str,
        last_price: Decimal,
        ts: datetime,
        depth: MarketDepth | None = None,
    ) -> OrderFill | PendingLimitOrder | MarketFills:
        """Route by order type: a MARKET order fills (against ``depth`` when the last tick
        carried a book with levels on the side it takes); a LIMIT order fills or rests."""
        if signal.order_type is OrderType.MARKET:
            if depth is not None and self._opposite(signal.side, depth):
                return self.fill_market_depth(signal, signal_event_id, depth, ts)
            return self.fill_market(signal, signal_event_id, last_price, ts)
        return self.accept_limit(signal, signal_event_id, last_price, ts)

    @staticmethod
    def _opposite(side: Side, depth: MarketDepth) -> tuple[DepthLevel, ...]:
        return depth.asks if side is Side.BUY else depth.bids

    def fill_market_depth(
        self,
        signal: TradingSignal,
        signal_event_id: str,
        depth: MarketDepth,
        filled_ts: datetime,
    ) -> MarketFills:
        """Walk the opposite side best level first: a fill per level at its price.

        The level prices are the book's, so they carry no slippage; only the rest beyond
        the last level, which the visible book cannot price, pays the slippage.
        """
        if signal.order_type is not OrderType.MARKET:
            raise ValueError(f"fill_market_depth got a {signal.order_type} order")
        levels = self._opposite(signal.side, depth)
        if not levels:
            raise ValueError(f"no {'asks' if signal.side is Side.BUY else 'bids'} to fill against")
        lots: list[tuple[int, Decimal]] = []
        remaining = signal.quantity
        for level in levels:
            if remaining == 0:
                break
            take = min(remaining, level.quantity)
            lots.append((take, level.price))
            remaining -= take
        unfilled = 0
        if remaining:
            if self.leave_rest_unfilled:
                unfilled = remaining
            else:
                lots.append((remaining, self.slipped_price(signal.side, levels[-1].price)))
        fills: list[OrderFill] = []
        brokerage = Decimal("0")
        for index, (quantity, price) in enumerate(lots):
            fill = self._fill(
                signal,
                signal_event_id,
                price,
                filled_ts,
                quantity=quantity,
                index=index,
                brokerage_charged=brokerage,
            )
            brokerage += fill.fee_breakdown.brokerage
            fills.append(fill)
        return MarketFills(tuple(fills), unfilled)

    def slipped_price(self, side: Side, last_price: Decimal) -> Decimal:
        """``last_price`` moved against the trader and rounded to the tick against them."""
        if side is Side.BUY:
            return self._to_tick(last_price * (BPS + self.slippage_bps) / BPS, ROUND_CEILING)
        slipped = self._to_tick(last_price * (BPS - self.slippage_bps) / BPS, ROUND_FLOOR)
        # Flooring a sub-tick price would give 0, which is no price; one tick is the floor.
        return max(slipped, self.tick_size)

    def fill_market(
        self,
        signal: TradingSignal,
        signal_event_id: str,
        last_price: Decimal,
        filled_ts: datetime,
    ) -> OrderFill:
        if signal.order_type is not OrderType.MARKET:
            raise ValueError(f"fill_market got a {signal.order_type} order; use accept_limit")
        price = self.slipped_price(signal.side, last_price)
        return self._fill(signal, signal_event_id, price, filled_ts)

    def accept_limit(
        self, signal: TradingSignal, signal_event_id: str, last_price: Decimal, ts: datetime
    ) -> OrderFill | PendingLimitOrder:
        if signal.order_type is not OrderType.LIMIT or signal.limit_price is None:
            raise ValueError(f"accept_limit got a {signal.order_type} order; use fill_market")
        limit = signal.limit_price
        slipped = self.slipped_price(signal.side, last_price)
        if signal.side is Side.BUY and limit >= last_price:
            return self._fill(signal, signal_event_id, min(limit, slipped), ts)
        if signal.side is Side.SELL and limit <= last_price:
            return self._fill(signal, signal_event_id, max(limit, slipped), ts)
        return PendingLimitOrder(signal_event_id=signal_event_id, signal=signal, accepted_ts=ts)

    def on_tick(
        self, pending: Sequence[PendingLimitOrder], tick: MarketTick
    ) -> tuple[list[OrderFill], list[PendingLimitOrder]]:
        """Fill the resting orders ``tick`` trades through; the rest stay, in order.

        Only orders on the tick's instrument are considered, and a tick older than an
        order's acceptance (a redelivered or late tick) never fills it: that price was
        already history when the order arrived.
        """
        fills: list[OrderFill] = []
        still_resting: list[PendingLimitOrder] = []
        for order in pending:
            if order.instrument_token == tick.instrument_token and order.accepted_ts <= (
                tick.exchange_ts
            ):
                crossed = (
                    tick.last_price < order.limit_price
                    if order.signal.side is Side.BUY
                    else tick.last_price > order.limit_price
                )
                if crossed:
                    fills.append(
                        self._fill(
                            order.signal, order.signal_event_id, order.limit_price, tick.exchange_ts
                        )
                    )
                    continue
            still_resting.append(order)
        return fills, still_resting

    def _to_tick(self, price: Decimal, rounding: str) -> Decimal:
        return (price / self.tick_size).to_integral_value(rounding=rounding) * self.tick_size

    def _fill(
        self,
        signal: TradingSignal,
        signal_event_id: str,
        price: Decimal,
        filled_ts: datetime,
        *,
        quantity: int | None = None,
        index: int = 0,
        brokerage_charged: Decimal = Decimal("0"),
    ) -> OrderFill:
        quantity = signal.quantity if quantity is None else quantity
        fees = self.fees(signal.strategy_id)
        breakdown = fees.compute(signal.side, price * quantity, brokerage_charged)
        return OrderFill(
            fill_id=fill_id_for(signal_event_id, index),
            order_id=order_id_for(signal_event_id),
            signal_event_id=signal_event_id,
            strategy_id=signal.strategy_id,
            instrument_token=signal.instrument_token,
            symbol=signal.symbol,
            side=signal.side,
            quantity=quantity,
            fill_price=price,
            fees=breakdown.total,
            fee_breakdown=breakdown,
            execution_mode=ExecutionMode.PAPER,
            filled_ts=filled_ts,
            reason=signal.reason or None,
        )
