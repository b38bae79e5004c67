"""Live execution, the pure part: signal -> Kite order form, Kite trades -> fills.

No I/O and no clock here (alpha_panda/zerodha_trader.py does the talking to Kite):

- :func:`order_tag` derives Kite's ``tag`` from the signal's event id. A restarted engine
  that meets the same signal again finds the order it already placed by this tag in
  ``GET /orders`` instead of placing it twice.
- :func:`order_form` builds the order: MARKET with market protection (required non-zero
  under the 2026 rules), or LIMIT at the signal's limit price.
- :func:`fills_for_trades` turns the order's Kite trades into fills: one fill per trade,
  ``fill_id`` = Kite's trade id, fees from the fee model with the brokerage cap per order
  (trades in fill order, so a re-run gives the same fees).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from alpha_panda.domain.products import fees_for_product
from alpha_panda.zerodha.models import KiteOrder, KiteTrade, PlaceOrder
from models.envelope import derived_event_id
from models.events import ExecutionMode, OrderFill, OrderType, Side, TradingSignal, UtcDatetime

TAG_PREFIX = "ap"
TAG_LENGTH = 20  # Kite's limit for a tag
# Terminal states: nothing more will fill. CANCELLED can still carry fills (IOC, a partly
# filled order cancelled), so its trades are collected before it is dropped.
TERMINAL_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})


def order_tag(signal_event_id: str) -> str:
    """Kite's tag for the order of this signal: 20 letters and digits, same input same tag."""
    digest = derived_event_id(signal_event_id, "kite-order")
    return (TAG_PREFIX + digest)[:TAG_LENGTH]


def is_ours(order: KiteOrder) -> bool:
    """Placed by an Alpha Panda engine (any tag of ours), not by hand on Kite web/mobile."""
    tags = [order.tag, *(order.tags or ())]
    return any(t is not None and len(t) == TAG_LENGTH and t.startswith(TAG_PREFIX) for t in tags)


class LiveOrder(BaseModel):
    """An order this engine placed at Kite, with the signal it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    order_id: str
    signal_event_id: str
    signal: TradingSignal
    product: str
    placed_ts: UtcDatetime

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> LiveOrder:
        return cls.model_validate(dict(data))


def order_form(
    signal: TradingSignal,
    *,
    tradingsymbol: str,
    exchange: str,
    product: str,
    market_protection: int,
    tag: str,
) -> PlaceOrder:
    """The Kite order for ``signal``. Raises ValueError for an order Kite would refuse."""
    if signal.order_type is OrderType.MARKET:
        return PlaceOrder(
            tradingsymbol=tradingsymbol,
            exchange=exchange,
            transaction_type=signal.side.value,
            quantity=signal.quantity,
            product=product,  # type: ignore[arg-type]  # checked by the model
            order_type="MARKET",
            market_protection=Decimal(market_protection),
            tag=tag,
        )
    return PlaceOrder(
        tradingsymbol=tradingsymbol,
        exchange=exchange,
        transaction_type=signal.side.value,
        quantity=signal.quantity,
        product=product,  # type: ignore[arg-type]
        order_type="LIMIT",
        price=signal.limit_price,
        tag=tag,
    )


def _trade_time(trade: KiteTrade, fallback: datetime) -> datetime:
    return trade.fill_timestamp or trade.exchange_timestamp or trade.order_timestamp or fallback


def fills_for_trades(order: LiveOrder, trades: Iterable[KiteTrade]) -> list[OrderFill]:
    """One fill per Kite trade of ``order``, in fill order (time, then trade id).

    The brokerage cap is per order, so each trade pays what the cap has left after the
    earlier ones; the same trades always give the same fills, whoever computes them.
    """
    fees = fees_for_product(order.product)
    signal = order.signal
    ordered = sorted(
        (t for t in trades if t.order_id == order.order_id),
        key=lambda t: (_trade_time(t, order.placed_ts), t.trade_id.zfill(24)),
    )
    fills: list[OrderFill] = []
    brokerage = Decimal("0")
    for trade in ordered:
        if trade.transaction_type != signal.side.value:
            raise ValueError(
                f"trade {trade.trade_id} is a {trade.transaction_type}, order {order.order_id} "
                f"a {signal.side.value}"
            )
        breakdown = fees.compute(
            Side(trade.transaction_type), trade.average_price * trade.quantity, brokerage
        )
        brokerage += breakdown.brokerage
        fills.append(
            OrderFill(
                fill_id=trade.trade_id,
                order_id=order.order_id,
                signal_event_id=order.signal_event_id,
                strategy_id=signal.strategy_id,
                instrument_token=signal.instrument_token,
                symbol=signal.symbol,
                side=signal.side,
                quantity=trade.quantity,
                fill_price=trade.average_price,
                fees=breakdown.total,
                fee_breakdown=breakdown,
                execution_mode=ExecutionMode.LIVE,
                filled_ts=_trade_time(trade, order.placed_ts),
                reason=signal.reason or None,  # as paper fills: a square-off shows as one
            )
        )
    return fills
