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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from agents.fees import FeeSchedule
from models.envelope import derived_event_id
from models.events import (
    ExecutionMode,
    MarketTick,
    OrderFill,
    OrderType,
    Side,
    TradingSignal,
    UtcDatetime,
)

BPS = Decimal("10000")


def fill_id_for(signal_event_id: str) -> str:
    return derived_event_id(signal_event_id, "fill")


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
class PaperTrader:
    slippage_bps: Decimal
    fees: FeeSchedule
    tick_size: Decimal = field(default=Decimal("0.05"))

    def __post_init__(self) -> None:
        if self.slippage_bps < 0:
            raise ValueError(f"slippage_bps must be >= 0, got {self.slippage_bps}")
        if self.tick_size <= 0:
            raise ValueError(f"tick_size must be > 0, got {self.tick_size}")

    def execute(
        self, signal: TradingSignal, signal_event_id: str, last_price: Decimal, ts: datetime
    ) -> OrderFill | PendingLimitOrder:
        """Route by order type: a MARKET order fills; a LIMIT order fills or rests."""
        if signal.order_type is OrderType.MARKET:
            return self.fill_market(signal, signal_event_id, last_price, ts)
        return self.accept_limit(signal, signal_event_id, last_price, ts)

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
        self, signal: TradingSignal, signal_event_id: str, price: Decimal, filled_ts: datetime
    ) -> OrderFill:
        breakdown = self.fees.compute(signal.side, price * signal.quantity)
        return OrderFill(
            fill_id=fill_id_for(signal_event_id),
            order_id=order_id_for(signal_event_id),
            signal_event_id=signal_event_id,
            strategy_id=signal.strategy_id,
            instrument_token=signal.instrument_token,
            symbol=signal.symbol,
            side=signal.side,
            quantity=signal.quantity,
            fill_price=price,
            fees=breakdown.total,
            fee_breakdown=breakdown,
            execution_mode=ExecutionMode.PAPER,
            filled_ts=filled_ts,
            reason=signal.reason or None,
        )
