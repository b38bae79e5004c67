"""Paper fills: slippage, tick rounding, limit semantics, deterministic ids."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from alpha_panda.domain.paper_trader import PaperTrader, PendingLimitOrder
from alpha_panda.domain.products import StrategyProducts
from models.envelope import derived_event_id
from models.events import (
    ExecutionMode,
    OrderFill,
    Side,
)
from tests.factories import T0, signal, tick

D = Decimal
TOKEN = 738561
OTHER = 408065


def trader(bps: str = "5") -> PaperTrader:
    return PaperTrader(slippage_bps=D(bps), fees=StrategyProducts().fees_of)


def test_market_buy_slips_up_and_rounds_up_to_tick() -> None:
    # 2900.10 x 1.0005 = 2901.55005 -> ceiling to 0.05 = 2901.60.
    fill = trader().fill_market(signal(Side.BUY), "sig-1", D("2900.10"), T0)
    assert fill.fill_price == D("2901.60")
    # Intraday buy of 10 x 2901.60 = 29016: brokerage 8.7048 -> 8.70, exchange 0.8617752
    # -> 0.86, SEBI 0.029016 -> 0.03, stamp 0.87048 -> 0.87, GST 18% x 9.59 = 1.7262 -> 1.73.
    assert fill.fees == D("12.19")
    assert fill.fee_breakdown.stamp_duty == D("0.87")
    assert fill.execution_mode is ExecutionMode.PAPER
    assert fill.filled_ts == T0
    assert (fill.side, fill.quantity, fill.signal_event_id) == (Side.BUY, 10, "sig-1")


def test_market_sell_slips_down_and_rounds_down_to_tick() -> None:
    # 2900.10 x 0.9995 = 2898.64995 -> floor to 0.05 = 2898.60.
    fill = trader().fill_market(signal(Side.SELL), "sig-1", D("2900.10"), T0)
    assert fill.fill_price == D("2898.60")


def test_zero_slippage_still_rounds_off_tick_prices_against_the_trader() -> None:
    no_slip = trader("0")
    assert no_slip.fill_market(signal(Side.BUY), "a", D("1500.00"), T0).fill_price == D("1500.00")
    assert no_slip.fill_market(signal(Side.BUY), "a", D("1500.02"), T0).fill_price == D("1500.05")
    assert no_slip.fill_market(signal(Side.SELL), "a", D("1500.02"), T0).fill_price == D("1500.00")


def test_sell_never_floors_to_zero() -> None:
    assert trader("0").fill_market(signal(Side.SELL), "a", D("0.03"), T0).fill_price == D("0.05")


def test_ids_are_derived_from_the_signal_event_id() -> None:
    first = trader().fill_market(signal(Side.BUY), "sig-1", D("2900.10"), T0)
    again = trader().fill_market(signal(Side.BUY), "sig-1", D("2900.10"), T0)
    other = trader().fill_market(signal(Side.BUY), "sig-2", D("2900.10"), T0)
    assert first.fill_id == derived_event_id("sig-1", "fill")
    assert first.order_id == derived_event_id("sig-1", "order")
    assert first == again
    assert other.fill_id != first.fill_id
    assert first.fill_id != first.order_id


def test_fill_market_refuses_a_limit_order() -> None:
    with pytest.raises(ValueError, match="accept_limit"):
        trader().fill_market(signal(Side.BUY, limit="2901"), "a", D("2900.10"), T0)


def test_marketable_buy_limit_fills_no_worse_than_the_limit() -> None:
    # Slipped market price is 2901.60; a 2901.00 limit caps it, a 2905 limit does not.
    capped = trader().accept_limit(signal(Side.BUY, limit="2901.00"), "a", D("2900.10"), T0)
    loose = trader().accept_limit(signal(Side.BUY, limit="2905"), "b", D("2900.10"), T0)
    assert isinstance(capped, OrderFill) and capped.fill_price == D("2901.00")
    assert isinstance(loose, OrderFill) and loose.fill_price == D("2901.60")


def test_marketable_sell_limit_fills_no_worse_than_the_limit() -> None:
    # Slipped market price is 2898.60; a 2899.00 limit floors it, a 2890 limit does not.
    capped = trader().accept_limit(signal(Side.SELL, limit="2899.00"), "a", D("2900.10"), T0)
    loose = trader().accept_limit(signal(Side.SELL, limit="2890"), "b", D("2900.10"), T0)
    assert isinstance(capped, OrderFill) and capped.fill_price == D("2899.00")
    assert isinstance(loose, OrderFill) and loose.fill_price == D("2898.60")


def test_limit_at_last_price_is_marketable() -> None:
    fill = trader().accept_limit(signal(Side.BUY, limit="2900.10"), "a", D("2900.10"), T0)
    assert isinstance(fill, OrderFill) and fill.fill_price == D("2900.10")


def test_non_marketable_limits_rest() -> None:
    buy = trader().accept_limit(signal(Side.BUY, limit="2900.05"), "a", D("2900.10"), T0)
    sell = trader().accept_limit(signal(Side.SELL, limit="2900.15"), "b", D("2900.10"), T0)
    assert isinstance(buy, PendingLimitOrder) and buy.accepted_ts == T0
    assert isinstance(sell, PendingLimitOrder) and sell.limit_price == D("2900.15")


def rest(side: Side, limit: str, event_id: str, token: int = TOKEN) -> PendingLimitOrder:
    order = trader().accept_limit(signal(side, limit=limit, token=token), event_id, D("2900"), T0)
    assert isinstance(order, PendingLimitOrder)
    return order


def test_resting_buy_fills_at_its_limit_only_when_traded_through() -> None:
    order = rest(Side.BUY, "2899.95", "a")
    fills, left = trader().on_tick([order], tick("2899.95", 1))
    assert fills == [] and left == [order]
    later = T0 + timedelta(seconds=5)
    fills, left = trader().on_tick([order], tick("2899.90", ts=later))
    assert left == []
    [fill] = fills
    # Passive fill: the limit price, no slippage, at the tick's time, same derived ids.
    assert fill.fill_price == D("2899.95")
    assert fill.filled_ts == later
    assert fill.fill_id == derived_event_id("a", "fill")
    assert fill.order_id == order.order_id


def test_resting_sell_fills_at_its_limit_only_when_traded_through() -> None:
    order = rest(Side.SELL, "2905", "a")
    assert trader().on_tick([order], tick("2905", 1)) == ([], [order])
    fills, left = trader().on_tick([order], tick("2905.05", 1))
    assert left == [] and [f.fill_price for f in fills] == [D("2905")]


def test_on_tick_touches_only_the_ticks_instrument_and_keeps_order() -> None:
    a = rest(Side.BUY, "2890", "a")
    b = rest(Side.BUY, "2890", "b", token=OTHER)
    c = rest(Side.SELL, "2910", "c")
    d = rest(Side.BUY, "2895", "d")
    fills, left = trader().on_tick([a, b, c, d], tick("2889", 1))
    assert [f.signal_event_id for f in fills] == ["a", "d"]
    assert left == [b, c]


def test_a_tick_older_than_the_order_does_not_fill_it() -> None:
    order = rest(Side.BUY, "2890", "a")
    assert trader().on_tick([order], tick("2880", -1)) == ([], [order])


def test_pending_order_json_round_trip() -> None:
    order = rest(Side.BUY, "2899.95", "a")
    data = json.loads(json.dumps(order.to_json_dict()))
    assert data["signal"]["limit_price"] == "2899.95"
    assert PendingLimitOrder.from_json_dict(data) == order


def test_execute_routes_by_order_type() -> None:
    assert isinstance(trader().execute(signal(Side.BUY), "a", D("2900"), T0), OrderFill)
    resting = trader().execute(signal(Side.BUY, limit="2800"), "b", D("2900"), T0)
    assert isinstance(resting, PendingLimitOrder)


def test_invalid_trader_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="slippage"):
        PaperTrader(slippage_bps=D("-1"), fees=StrategyProducts().fees_of)
    with pytest.raises(ValueError, match="tick_size"):
        PaperTrader(slippage_bps=D("1"), fees=StrategyProducts().fees_of, tick_size=D("0"))
