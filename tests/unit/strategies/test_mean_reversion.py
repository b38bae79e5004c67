"""MeanReversionStrategy against hand-computed tick sequences."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from models.events import Side
from strategies.base import StrategyConfig
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from tests.factories import T0
from tests.unit.strategies import SYMBOL, TOKEN, fired, run, tick

CONFIG = StrategyConfig(strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL)


def make(
    window: int = 4, entry_z: str = "1", exit_z: str = "0", quantity: int = 4
) -> MeanReversionStrategy:
    params = MeanReversionParams(
        window=window, entry_z=Decimal(entry_z), exit_z=Decimal(exit_z), quantity=quantity
    )
    return MeanReversionStrategy(CONFIG, params)


# window 4, entry_z 1, exit_z 0. Population std over the 4 latest prices, current included.
SEQUENCE = [
    "100",  # 0  warming up (1 price)
    "100",  # 1  warming up
    "100",  # 2  warming up
    "100",  # 3  [100 100 100 100]   std 0                          -> nothing
    "108",  # 4  [100 100 100 108]   mean 102, z = +1.73            -> nothing
    "97.5",  # 5 [100 100 108 97.5]  mean 101.375, var 15.671875,
    #                                z = -3.875/3.9588 = -0.98 > -1  -> nothing (near miss)
    "95.5",  # 6 [100 108 97.5 95.5] mean 100.25, devs -.25 7.75 -2.75 -4.75,
    #                                var 90.25/4 = 22.5625, std 4.75,
    #                                z = -4.75/4.75 = -1 exactly     -> BUY
    "90",  # 7   [108 97.5 95.5 90]  mean 97.75, var 42.5625,
    #                                z = -7.75/6.524 = -1.19, long   -> nothing (no second BUY)
    "90.5",  # 8 [97.5 95.5 90 90.5] mean 93.375, var 10.296875,
    #                                z = -2.875/3.209 = -0.90 < 0    -> hold
    "92",  # 9   [95.5 90 90.5 92]   mean 368/4 = 92 = price, z = 0  -> SELL (exactly on exit)
    "92.5",  # 10 [90 90.5 92 92.5]  mean 91.25, z = +1.21, flat     -> nothing
]


def test_pinned_sequence_fires_on_exactly_these_ticks() -> None:
    assert fired(make(), SEQUENCE) == [(6, "BUY"), (9, "SELL")]


def test_signal_fields_and_reasons() -> None:
    (i, buy), (j, sell) = run(make(), SEQUENCE)
    assert (i, j) == (6, 9)
    assert (buy.side, buy.quantity, buy.reference_price) == (Side.BUY, 4, Decimal("95.5"))
    assert buy.signal_ts == T0 + timedelta(seconds=6)
    assert buy.strategy_id == "mr-1"
    assert buy.reason == "z -1.00 <= -1.00 (price 95.5, mean 100.2500, std 4.7500, 4 ticks)"
    assert (sell.side, sell.quantity, sell.reference_price) == (Side.SELL, 4, Decimal("92"))
    assert sell.signal_ts == T0 + timedelta(seconds=9)
    assert sell.reason == "z 0.00 >= 0.00 (price 92, mean 92.0000, std 2.1506, 4 ticks)"


def test_entry_boundary_just_above_minus_entry_z_does_not_buy() -> None:
    # 95.51 instead of 95.5 at tick 6: mean 100.2525, z = -4.7425/4.7426 > -1.
    prices = [*SEQUENCE[:6], "95.51"]
    assert fired(make(), prices) == []


@pytest.mark.parametrize(
    ("exit_z", "last_price", "expected"),
    [
        # [108 97.5 95.5 97.02]: mean 99.505, var 24.600075, z = -2.485/4.9598 = -0.5010
        ("0.5", "97.02", [(6, "BUY")]),
        # [108 97.5 95.5 97.03]: mean 99.5075, var 24.58765625, z = -2.4775/4.9586 = -0.4996
        ("0.5", "97.03", [(6, "BUY"), (7, "SELL")]),
        # Same -0.4996 is still below the mean, so exit_z 0 holds.
        ("0", "97.03", [(6, "BUY")]),
    ],
)
def test_exit_threshold_between_zero_and_entry(
    exit_z: str, last_price: str, expected: list[tuple[int, str]]
) -> None:
    prices = [*SEQUENCE[:7], last_price]
    assert fired(make(exit_z=exit_z), prices) == expected


def test_nothing_before_the_window_is_full() -> None:
    # With window 4, the first 3 ticks cannot signal however far the price falls.
    assert fired(make(), ["100", "100", "50"]) == []
    # The 4th tick completes [100 100 50 50]: mean 75, std 25, z = -1 -> BUY.
    assert fired(make(), ["100", "100", "50", "50"]) == [(3, "BUY")]


def test_flat_prices_have_zero_std_and_never_signal() -> None:
    assert fired(make(), ["101.25"] * 12) == []


def test_zero_std_while_long_does_not_sell() -> None:
    # window 2: [100 98] mean 99, std 1, z = -1 -> BUY; [98 98] std 0 -> no decision,
    # even though the price now equals the mean; [98 99] z = +1 -> SELL.
    strategy = make(window=2)
    assert fired(strategy, ["100", "98", "98", "99"]) == [(1, "BUY"), (3, "SELL")]


def test_exact_threshold_where_28_digit_arithmetic_would_round_the_wrong_way() -> None:
    # Window 9, sum S = 903, sum of squares Q = 90857. With D = 9*p - S and
    # V = 9*Q - S^2, z = D/sqrt(V) = (819 - 903)/sqrt(2304) = -84/48 = -1.75 exactly.
    # But mean = 100.333... is not a finite decimal, so mean/std/z in a 28-digit context
    # give -1.749999999999999999999999994 and would miss the BUY.
    prices = ["97", "100", "97", "98", "100", "109", "108", "103", "91"]
    assert fired(make(window=9, entry_z="1.75", exit_z="0"), prices) == [(8, "BUY")]


def test_exact_exit_threshold_where_28_digit_arithmetic_would_round_the_wrong_way() -> None:
    # Window 9 ending in 92: S = 888, Q = 87872, z = (828 - 888)/sqrt(2304) = -60/48
    # = -1.25 exactly; 28-digit mean/std/z give -1.250000000000000000000000001 and would
    # hold instead of selling.
    # Start long with the first 8 prices already in the window, then feed the 9th.
    strategy = make(window=9, entry_z="2", exit_z="1.25")
    prefix = ["104", "92", "105", "91", "101", "104", "101", "98"]
    state: dict[str, Any] = {
        "version": 1,
        "kind": "mean_reversion",
        "strategy_id": "mr-1",
        "instrument_token": TOKEN,
        "last_exchange_ts": (T0 + timedelta(seconds=7)).isoformat(),
        "position": 4,
        "prices": prefix,
        "extra": {},
    }
    strategy.restore_state(state)
    [signal] = strategy.on_tick(tick("92", 8))
    assert signal.side is Side.SELL
    assert signal.reason.startswith("z -1.25 >= -1.25 ")


def test_time_gap_does_not_reset_the_window() -> None:
    strategy = make(window=2)
    assert strategy.on_tick(tick("100", 0)) == []
    # A full day later the window is still [100, 98]: z = -1 -> BUY.
    [signal] = strategy.on_tick(tick("98", 86_400))
    assert signal.side is Side.BUY


def test_params_reject_exit_not_below_entry() -> None:
    with pytest.raises(ValueError, match=r"exit_z \(1\.5\) must be less than entry_z \(1\.5\)"):
        MeanReversionParams(window=5, entry_z=Decimal("1.5"), exit_z=Decimal("1.5"), quantity=1)
