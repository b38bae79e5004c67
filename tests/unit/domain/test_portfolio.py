"""Portfolio accounting: cash, average cost, shorts, duplicates, valuation, persistence."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from decimal import Decimal

import pytest

from models.events import OrderFill, Side
from tables.portfolio import RECENT_FILL_IDS_BOUND, Portfolio
from tests.factories import T0, fill

D = Decimal
A = 738561
B = 408065
START = D("1000000")


def apply(portfolio: Portfolio, *fills: OrderFill) -> Portfolio:
    for f in fills:
        applied = portfolio.apply_fill(f)
        assert applied is not None, f"{f.fill_id} unexpectedly treated as a duplicate"
        portfolio = applied
    return portfolio


def test_buy_spends_cash_and_fees() -> None:
    p = apply(Portfolio.new("momo", START), fill("f1", Side.BUY, 100, "2500", fees="30.22"))
    # 1000000 - 100 x 2500 - 30.22
    assert p.cash == D("749969.78")
    assert p.fees_paid == D("30.22")
    assert p.trade_count == 1
    assert p.positions[A].quantity == 100 and p.positions[A].avg_price == D("2500")
    assert p.realized_pnl == 0


def test_sell_adds_cash_and_realizes_against_average_cost() -> None:
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 100, "2500", fees="30.22"),
        fill("f2", Side.SELL, 40, "2600", fees="20"),
    )
    # 749969.78 + 40 x 2600 - 20
    assert p.cash == D("853949.78")
    # (2600 - 2500) x 40; fees are not part of realized P&L
    assert p.realized_pnl == D("4000")
    assert p.positions[A].realized_pnl == D("4000")
    assert p.positions[A].quantity == 60 and p.positions[A].avg_price == D("2500")
    assert p.fees_paid == D("50.22")


def test_adding_re_averages_and_partial_close_keeps_the_average() -> None:
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 100, "2500"),
        fill("f2", Side.BUY, 50, "2530"),
    )
    # (100 x 2500 + 50 x 2530) / 150 = 376500 / 150
    assert p.positions[A].avg_price == D("2510")
    p = apply(p, fill("f3", Side.SELL, 90, "2540"))
    assert p.positions[A].quantity == 60
    assert p.positions[A].avg_price == D("2510")
    assert p.realized_pnl == D("2700")  # (2540 - 2510) x 90


def test_full_close_goes_flat_with_zero_average_and_keeps_realized() -> None:
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 10, "100"),
        fill("f2", Side.SELL, 10, "95.50"),
    )
    assert p.positions[A].quantity == 0
    assert p.positions[A].avg_price == 0
    assert p.positions[A].realized_pnl == D("-45.00")  # (95.50 - 100) x 10
    assert p.cash == START - D("45.00")


def test_sell_through_zero_flips_long_to_short() -> None:
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 60, "2510"),
        fill("f2", Side.SELL, 100, "2450"),
    )
    # Closes 60 at a loss of (2450 - 2510) x 60, opens 40 short at the fill price.
    assert p.realized_pnl == D("-3600")
    assert p.positions[A].quantity == -40
    assert p.positions[A].avg_price == D("2450")
    assert p.cash == START - 60 * D("2510") + 100 * D("2450")


def test_shorts_average_cover_and_flip_back_to_long() -> None:
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.SELL, 40, "1500", token=B),
        fill("f2", Side.SELL, 20, "1530", token=B),
    )
    # (40 x 1500 + 20 x 1530) / 60 = 90600 / 60
    assert p.positions[B].quantity == -60 and p.positions[B].avg_price == D("1510")
    p = apply(p, fill("f3", Side.BUY, 10, "1450", token=B))
    assert p.realized_pnl == D("600")  # (1510 - 1450) x 10: a short gains when price falls
    assert p.positions[B].quantity == -50 and p.positions[B].avg_price == D("1510")
    p = apply(p, fill("f4", Side.BUY, 70, "1520", token=B))
    # Covers 50 at (1510 - 1520) x 50 = -500, then 20 long at 1520.
    assert p.realized_pnl == D("100")
    assert p.positions[B].quantity == 20 and p.positions[B].avg_price == D("1520")


def test_duplicate_fill_is_ignored() -> None:
    p = apply(Portfolio.new("momo", START), fill("f1", Side.BUY, 100, "2500", fees="30.22"))
    assert p.apply_fill(fill("f1", Side.BUY, 100, "2500", fees="30.22")) is None
    assert p.cash == D("749969.78") and p.trade_count == 1


def test_fill_ids_are_remembered_up_to_the_bound_oldest_dropped() -> None:
    ids = tuple(f"old-{i}" for i in range(RECENT_FILL_IDS_BOUND))
    p = Portfolio.new("momo", START).model_copy(update={"recent_fill_ids": ids})
    p = apply(p, fill("new", Side.BUY, 1, "10"))
    assert len(p.recent_fill_ids) == RECENT_FILL_IDS_BOUND
    assert p.recent_fill_ids[0] == "old-1" and p.recent_fill_ids[-1] == "new"
    assert p.apply_fill(fill("old-1", Side.BUY, 1, "10")) is None
    assert p.apply_fill(fill("old-0", Side.BUY, 1, "10")) is not None


def test_fill_of_another_strategy_is_a_bug() -> None:
    with pytest.raises(ValueError, match="routed to portfolio"):
        Portfolio.new("momo", START).apply_fill(fill("f1", Side.BUY, 1, "10", strategy_id="x"))


def test_last_fill_ts_never_moves_backwards() -> None:
    later = T0 + timedelta(minutes=5)
    p = apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 1, "10", ts=later),
        fill("f2", Side.BUY, 1, "10", ts=T0),
    )
    assert p.last_fill_ts == later


def booked() -> Portfolio:
    return apply(
        Portfolio.new("momo", START),
        fill("f1", Side.BUY, 100, "2500", fees="30.22"),
        fill("f2", Side.BUY, 50, "2530", fees="10"),
        fill("f3", Side.SELL, 90, "2540", fees="25"),
        fill("f4", Side.SELL, 40, "1500", fees="5", token=B),
    )


def test_booked_sequence_by_hand() -> None:
    p = booked()
    # 1000000 - 250030.22 - 126510 + 228575 + 59995
    assert p.cash == D("912029.78")
    assert p.fees_paid == D("70.22")
    assert p.realized_pnl == D("2700")
    assert p.trade_count == 4


def test_valuation_marks_known_prices_and_flags_unknown_ones() -> None:
    v = booked().valuation({A: D("2550")})
    # Rows come in token order: B (408065) before A (738561).
    b, a = v.positions
    assert (a.instrument_token, a.priced, a.market_value, a.unrealized_pnl) == (
        A,
        True,
        D("153000"),  # 60 x 2550
        D("2400"),  # (2550 - 2510) x 60
    )
    # No price for B: marked at cost, so no unrealized P&L, and flagged.
    assert (b.priced, b.mark_price, b.market_value, b.unrealized_pnl) == (
        False,
        D("1500"),
        D("-60000"),
        D("0"),
    )
    assert v.market_value == D("93000")
    assert v.equity == D("1005029.78")  # 912029.78 + 93000
    assert v.net_pnl == D("5029.78")
    assert v.net_pnl == v.realized_pnl + v.unrealized_pnl - v.fees_paid


def test_valuation_of_a_short_gains_when_the_price_falls() -> None:
    v = booked().valuation({A: D("2550"), B: D("1490")})
    b = v.positions[0]
    assert b.instrument_token == B
    assert b.priced and b.market_value == D("-59600")  # -40 x 1490
    assert b.unrealized_pnl == D("400")  # (1490 - 1500) x -40
    assert v.equity == D("1005429.78")  # 912029.78 + 153000 - 59600
    assert v.net_pnl == D("5429.78")  # 2700 + 2800 - 70.22


def test_json_round_trip_keeps_decimals_exact() -> None:
    p = booked()
    p = apply(p, fill("f5", Side.BUY, 1, "2515.05"))  # average becomes 153015.05 / 61
    data = json.loads(json.dumps(p.to_json_dict()))
    assert data["cash"] == str(p.cash)
    assert data["positions"][str(A)]["avg_price"] == str(p.positions[A].avg_price)
    restored = Portfolio.from_json_dict(data)
    assert restored == p
    assert restored.apply_fill(fill("f1", Side.BUY, 1, "1")) is None


def test_from_json_refuses_corrupt_data() -> None:
    data = booked().to_json_dict()
    data["cash"] = "not money"
    with pytest.raises(ValueError):
        Portfolio.from_json_dict(data)


@pytest.mark.parametrize("seed", range(25))
def test_random_fills_keep_the_accounting_identities(seed: int) -> None:
    rng = random.Random(seed)
    tokens = [A, B, 2953217]
    portfolio = Portfolio.new("momo", START)
    # Independent bookkeeping: cash flows and quantities only, no average cost.
    cash = START
    quantity = dict.fromkeys(tokens, 0)
    sold_minus_bought = D("0")
    fees = D("0")
    for i in range(150):
        token = rng.choice(tokens)
        side = rng.choice([Side.BUY, Side.SELL])
        qty = rng.randint(1, 300)
        price = D(rng.randint(2000, 60000)) * D("0.05")
        fee = D(rng.randint(0, 5000)) * D("0.01")
        f = fill(f"f{i}", side, qty, str(price), fees=str(fee), token=token)
        portfolio = apply(portfolio, f)
        flow = qty * price if side is Side.SELL else -qty * price
        cash += flow - fee
        sold_minus_bought += flow
        fees += fee
        quantity[token] += qty if side is Side.BUY else -qty
        if rng.random() < 0.1:  # a duplicate redelivery changes nothing
            assert portfolio.apply_fill(f) is None

    marks = {t: D(rng.randint(2000, 60000)) * D("0.05") for t in tokens}
    market_value = sum((quantity[t] * marks[t] for t in tokens), D("0"))
    v = portfolio.valuation(marks)

    assert portfolio.cash == cash
    assert portfolio.fees_paid == fees
    assert {t: p.quantity for t, p in portfolio.positions.items()} == {
        t: q for t, q in quantity.items() if t in portfolio.positions
    }
    assert v.market_value == market_value
    assert v.equity == cash + market_value
    assert v.net_pnl == cash + market_value - START
    # Average cost splits the trading P&L (sales - purchases + what is still held) into
    # realized and unrealized; exact up to the 28-digit quotient of re-averaging.
    trading_pnl = sold_minus_bought + market_value
    assert abs(v.realized_pnl + v.unrealized_pnl - trading_pnl) < D("1e-12")
    assert abs(v.net_pnl - (v.realized_pnl + v.unrealized_pnl - v.fees_paid)) < D("1e-12")
