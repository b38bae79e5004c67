"""Paper MARKET fills against the order book: one fill per level, the rest priced or left.

Every expected value is computed by hand in the comments (intraday schedule, docs/TRADING_RULES.md).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from alpha_panda.domain.paper_trader import MarketFills, PaperTrader, PendingLimitOrder, fill_id_for
from alpha_panda.domain.products import StrategyProducts
from models.envelope import derived_event_id
from models.events import DepthLevel, MarketDepth, OrderFill, Side
from tables.portfolio import Portfolio
from tests.factories import T0, signal

D = Decimal
TOKEN = 738561


def book(
    bids: list[tuple[int, str]] | None = None, asks: list[tuple[int, str]] | None = None
) -> MarketDepth:
    return MarketDepth(
        bids=tuple(DepthLevel(quantity=q, price=D(p), orders=1) for q, p in bids or []),
        asks=tuple(DepthLevel(quantity=q, price=D(p), orders=1) for q, p in asks or []),
    )


def trader(leave_rest_unfilled: bool = False) -> PaperTrader:
    return PaperTrader(
        slippage_bps=D("5"),
        fees=StrategyProducts().fees_of,
        leave_rest_unfilled=leave_rest_unfilled,
    )


def walk(outcome: object) -> MarketFills:
    assert isinstance(outcome, MarketFills)
    return outcome


def test_buy_walks_the_asks_one_fill_per_level_with_the_cap_per_order() -> None:
    depth = book(bids=[(500, "2901.30")], asks=[(60, "2901.40"), (200, "2901.45"), (9, "2902")])
    result = walk(trader().execute(signal(Side.BUY, 100), "sig-1", D("2901.35"), T0, depth))
    assert [(f.quantity, f.fill_price) for f in result.fills] == [
        (60, D("2901.40")),
        (40, D("2901.45")),
    ]
    assert (result.filled, result.unfilled) == (100, 0)
    first, second = result.fills
    # 60 x 2901.40 = 174084: brokerage 52.2252 capped at 20.00; exchange 5.1702948 -> 5.17;
    # SEBI 0.174084 -> 0.17; stamp 5.22252 -> 5.22; GST 18% x 25.34 = 4.5612 -> 4.56.
    assert first.fee_breakdown.brokerage == D("20.00")
    assert first.fees == D("35.12")
    # 40 x 2901.45 = 116058: the order's Rs 20 cap is used up, brokerage 0; exchange
    # 3.4469226 -> 3.45; SEBI 0.116058 -> 0.12; stamp 3.48174 -> 3.48; GST 18% x 3.57 -> 0.64.
    assert second.fee_breakdown.brokerage == D("0")
    assert second.fees == D("7.69")
    assert first.fill_id == derived_event_id("sig-1", "fill") == fill_id_for("sig-1")
    assert second.fill_id == derived_event_id("sig-1", "fill", 1)
    assert first.order_id == second.order_id == derived_event_id("sig-1", "order")
    assert {f.filled_ts for f in result.fills} == {T0}


def test_sell_walks_the_bids_and_splits_the_brokerage_cap() -> None:
    depth = book(bids=[(100, "400.00"), (300, "399.95")], asks=[(10, "400.05")])
    result = walk(trader().execute(signal(Side.SELL, 200), "s", D("400"), T0, depth))
    first, second = result.fills
    assert [(f.quantity, f.fill_price) for f in result.fills] == [
        (100, D("400.00")),
        (100, D("399.95")),
    ]
    # 100 x 400 = 40000: brokerage 12.00, STT 10.00, exchange 1.188 -> 1.19, SEBI 0.04,
    # GST 18% x 13.23 = 2.3814 -> 2.38; total 25.61.
    assert first.fee_breakdown.brokerage == D("12.00")
    assert first.fees == D("25.61")
    # 100 x 399.95 = 39995: brokerage 11.9985 but only 8.00 of the cap is left; STT
    # 9.99875 -> 10.00; exchange 1.1878515 -> 1.19; SEBI 0.04; GST 18% x 9.23 -> 1.66.
    assert second.fee_breakdown.brokerage == D("8.00")
    assert second.fees == D("20.89")


def test_the_rest_beyond_the_book_fills_at_the_last_level_plus_slippage() -> None:
    depth = book(asks=[(30, "2901.40"), (20, "2901.55")])
    result = walk(trader().execute(signal(Side.BUY, 100), "r", D("2901.35"), T0, depth))
    # 2901.55 x 1.0005 = 2903.000775 -> up to the tick: 2903.05.
    assert [(f.quantity, f.fill_price) for f in result.fills] == [
        (30, D("2901.40")),
        (20, D("2901.55")),
        (50, D("2903.05")),
    ]
    assert [f.fill_id for f in result.fills] == [
        fill_id_for("r"),
        fill_id_for("r", 1),
        fill_id_for("r", 2),
    ]
    assert len({f.fill_id for f in result.fills}) == 3
    assert result.unfilled == 0


def test_a_sell_rest_slips_down_from_the_last_bid() -> None:
    depth = book(bids=[(10, "1500.00")])
    result = walk(trader().execute(signal(Side.SELL, 25), "r", D("1500"), T0, depth))
    # 1500.00 x 0.9995 = 1499.25 (on the tick already).
    assert [(f.quantity, f.fill_price) for f in result.fills] == [
        (10, D("1500.00")),
        (15, D("1499.25")),
    ]


def test_the_rest_stays_unfilled_when_the_setting_says_so() -> None:
    depth = book(asks=[(30, "2901.40"), (20, "2901.55")])
    result = walk(
        trader(leave_rest_unfilled=True).execute(signal(Side.BUY, 100), "u", D("1"), T0, depth)
    )
    assert [(f.quantity, f.fill_price) for f in result.fills] == [
        (30, D("2901.40")),
        (20, D("2901.55")),
    ]
    assert (result.filled, result.unfilled) == (50, 50)


def test_one_level_absorbing_the_order_gives_the_single_fill_id_and_no_empty_fill() -> None:
    depth = book(asks=[(100, "2901.40"), (200, "2901.45")])
    result = walk(trader().execute(signal(Side.BUY, 100), "sig-1", D("2901.35"), T0, depth))
    assert len(result.fills) == 1
    (only,) = result.fills
    assert (only.quantity, only.fill_price) == (100, D("2901.40"))
    assert only.fill_id == fill_id_for("sig-1") == derived_event_id("sig-1", "fill")


def test_the_walk_is_deterministic() -> None:
    depth = book(asks=[(30, "2901.40"), (20, "2901.55")])
    again = [trader().execute(signal(Side.BUY, 70), "d", D("1"), T0, depth) for _ in range(2)]
    assert again[0] == again[1]


def test_without_depth_or_without_the_opposite_side_a_market_order_fills_as_before() -> None:
    plain = trader().execute(signal(Side.BUY, 10), "p", D("2900.10"), T0)
    assert isinstance(plain, OrderFill)
    # No asks to take: the book cannot price a BUY, so the last price does (as today).
    one_sided = trader().execute(
        signal(Side.BUY, 10), "p", D("2900.10"), T0, book(bids=[(5, "2900")])
    )
    assert one_sided == plain
    assert plain.fill_price == D("2901.60")  # 2900.10 x 1.0005 = 2901.55005 -> 2901.60


def test_limit_orders_ignore_depth() -> None:
    depth = book(asks=[(1, "2899.00")])
    with_depth = trader().execute(signal(Side.BUY, 10, limit="2800"), "l", D("2900"), T0, depth)
    assert isinstance(with_depth, PendingLimitOrder)
    filled = trader().execute(signal(Side.BUY, 10, limit="2905"), "m", D("2900.10"), T0, depth)
    assert filled == trader().execute(signal(Side.BUY, 10, limit="2905"), "m", D("2900.10"), T0)


def test_fill_market_depth_refuses_an_empty_side_and_a_limit_order() -> None:
    with pytest.raises(ValueError, match="no asks"):
        trader().fill_market_depth(signal(Side.BUY, 1), "x", book(bids=[(1, "1")]), T0)
    with pytest.raises(ValueError, match="LIMIT"):
        trader().fill_market_depth(signal(Side.BUY, 1, limit="1"), "x", book(asks=[(1, "1")]), T0)


def test_the_portfolio_books_each_partial_fill_once() -> None:
    depth = book(asks=[(60, "2901.40"), (200, "2901.45")])
    first, second = walk(trader().execute(signal(Side.BUY, 100), "sig-1", D("1"), T0, depth)).fills
    start = Portfolio.new("momo", D("1000000"))
    after_first = start.apply_fill(first)
    assert after_first is not None
    booked = after_first.apply_fill(second)
    assert booked is not None
    position = booked.positions[TOKEN]
    # (174084 + 116058) / 100 = 2901.42 average; cash 1,000,000 - 290142 - 35.12 - 7.69.
    assert (position.quantity, position.avg_price) == (100, D("2901.42"))
    assert booked.cash == D("709815.19")
    assert booked.fees_paid == D("42.81")
    assert booked.trade_count == 2
    assert booked.apply_fill(second) is None  # the same partial fill again: dropped
