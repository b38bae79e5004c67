"""Live execution's pure part: tags, Kite order forms, Kite trades -> fills (hand-computed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alpha_panda.domain.live_orders import (
    TAG_LENGTH,
    LiveOrder,
    fills_for_trades,
    is_ours,
    order_form,
    order_tag,
)
from alpha_panda.zerodha.models import KiteOrder, KiteTrade
from models.events import ExecutionMode, OrderType, Side, TradingSignal

D = Decimal
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def signal(side: Side = Side.BUY, quantity: int = 100, limit: str | None = None) -> TradingSignal:
    return TradingSignal(
        strategy_id="live-momo",
        instrument_token=738561,
        symbol="RELIANCE",
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=D(limit) if limit else None,
        reference_price=D("1250"),
        execution_mode=ExecutionMode.LIVE,
        signal_ts=T0,
    )


def live_order(product: str = "MIS", side: Side = Side.BUY) -> LiveOrder:
    return LiveOrder(
        tag=order_tag("sig-1"),
        order_id="2603020000000001",
        signal_event_id="sig-1",
        signal=signal(side),
        product=product,
        placed_ts=T0,
    )


def trade(trade_id: str, qty: int, price: str, at: int, side: str = "BUY") -> KiteTrade:
    return KiteTrade(
        trade_id=trade_id,
        order_id="2603020000000001",
        exchange="NSE",
        tradingsymbol="RELIANCE",
        product="MIS",
        transaction_type=side,  # type: ignore[arg-type]
        average_price=D(price),
        quantity=qty,
        fill_timestamp=T0 + timedelta(seconds=at),
    )


def test_the_tag_is_derived_short_alphanumeric_and_ours() -> None:
    tag = order_tag("sig-1")
    assert tag == order_tag("sig-1") != order_tag("sig-2")
    assert len(tag) == TAG_LENGTH and tag.isalnum() and tag.startswith("ap")
    base = {
        "order_id": "1",
        "status": "OPEN",
        "exchange": "NSE",
        "tradingsymbol": "RELIANCE",
        "transaction_type": "BUY",
        "order_type": "MARKET",
        "product": "MIS",
        "quantity": 1,
    }
    assert is_ours(KiteOrder.model_validate({**base, "tag": tag}))
    assert is_ours(KiteOrder.model_validate({**base, "tags": ["x", tag]}))
    assert not is_ours(KiteOrder.model_validate(base))  # placed by hand: no tag
    assert not is_ours(KiteOrder.model_validate({**base, "tag": "myscript"}))


def test_a_market_order_carries_market_protection_and_a_limit_its_price() -> None:
    market = order_form(
        signal(),
        tradingsymbol="RELIANCE",
        exchange="NSE",
        product="MIS",
        market_protection=-1,
        tag="ap123",
    )
    assert market.form() == {
        "tradingsymbol": "RELIANCE",
        "exchange": "NSE",
        "transaction_type": "BUY",
        "quantity": "100",
        "product": "MIS",
        "order_type": "MARKET",
        "validity": "DAY",
        "market_protection": "-1",
        "tag": "ap123",
    }
    limit = order_form(
        signal(Side.SELL, 5, limit="1251.05"),
        tradingsymbol="RELIANCE",
        exchange="NSE",
        product="CNC",
        market_protection=-1,
        tag="ap123",
    )
    assert limit.form()["order_type"] == "LIMIT" and limit.form()["price"] == "1251.05"
    assert "market_protection" not in limit.form()
    with pytest.raises(ValueError, match="market_protection"):
        order_form(
            signal(), tradingsymbol="R", exchange="NSE", product="MIS", market_protection=0, tag="a"
        )


def test_each_trade_is_one_fill_with_the_trade_id_and_the_cap_per_order() -> None:
    # Out of order on purpose: fills follow fill time.
    trades = [trade("10000002", 40, "1250.05", at=2), trade("10000001", 60, "1250.00", at=1)]
    first, second = fills_for_trades(live_order(), trades)
    assert (first.fill_id, first.quantity, first.fill_price) == ("10000001", 60, D("1250.00"))
    assert (second.fill_id, second.quantity, second.fill_price) == ("10000002", 40, D("1250.05"))
    assert first.order_id == second.order_id == "2603020000000001"
    assert first.execution_mode is ExecutionMode.LIVE
    assert (first.strategy_id, first.signal_event_id) == ("live-momo", "sig-1")
    assert first.filled_ts == T0 + timedelta(seconds=1)
    # 60 x 1250 = 75000: brokerage 22.50 -> capped 20.00; exchange 2.2275 -> 2.23;
    # SEBI 0.075 -> 0.08; stamp 2.25; GST 18% x 22.31 = 4.0158 -> 4.02; total 28.58.
    assert first.fee_breakdown.brokerage == D("20.00")
    assert first.fees == D("28.58")
    # 40 x 1250.05 = 50002: cap used up, brokerage 0; exchange 1.4850594 -> 1.49;
    # SEBI 0.050002 -> 0.05; stamp 1.50006 -> 1.50; GST 18% x 1.54 = 0.2772 -> 0.28.
    assert second.fee_breakdown.brokerage == D("0")
    assert second.fees == D("3.32")
    assert fills_for_trades(live_order(), list(reversed(trades))) == [first, second]


def test_delivery_orders_pay_the_delivery_schedule() -> None:
    (fill,) = fills_for_trades(live_order("CNC", Side.SELL), [trade("9", 10, "1000", 1, "SELL")])
    # 10 x 1000 = 10000 sold on delivery: STT 0.1% = 10.00, exchange 0.297 -> 0.30,
    # SEBI 0.01, no stamp on a sell, GST 18% x 0.31 = 0.0558 -> 0.06; total 10.37.
    assert fill.fee_breakdown.stt == D("10.00")
    assert fill.fees == D("10.37")


def test_a_trade_of_the_wrong_side_is_refused() -> None:
    with pytest.raises(ValueError, match="SELL"):
        fills_for_trades(live_order(), [trade("1", 1, "1", 1, "SELL")])


def test_trades_of_other_orders_are_ignored() -> None:
    other = trade("5", 1, "1250", 1).model_copy(update={"order_id": "999"})
    assert fills_for_trades(live_order(), [other]) == []
