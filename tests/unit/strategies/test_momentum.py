"""SimpleMomentumStrategy against hand-computed tick sequences."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from models.events import ExecutionMode, OrderType, Side
from strategies.base import StrategyConfig
from strategies.momentum import MomentumParams, SimpleMomentumStrategy
from tests.factories import T0
from tests.unit.strategies import SYMBOL, TOKEN, fired, run, tick


def make(
    lookback: int = 3,
    threshold_pct: str = "2",
    quantity: int = 7,
    mode: ExecutionMode = ExecutionMode.PAPER,
) -> SimpleMomentumStrategy:
    config = StrategyConfig(
        strategy_id="mom-1", instrument_token=TOKEN, symbol=SYMBOL, execution_mode=mode
    )
    params = MomentumParams(
        lookback=lookback, threshold_pct=Decimal(threshold_pct), quantity=quantity
    )
    return SimpleMomentumStrategy(config, params)


# lookback 3, threshold 2%: each tick compares with the price 3 ticks earlier.
SEQUENCE = [
    "100",  # 0  warming up
    "101",  # 1  warming up
    "100.5",  # 2  warming up
    "101.9",  # 3  vs 100:    +1.90%            < 2%    -> nothing
    "103.02",  # 4  vs 101:    +2.02/101 = +2.00% >= 2% -> BUY (exactly on the threshold)
    "105",  # 5  vs 100.5:  +4.48%, but long          -> nothing (no second BUY)
    "104",  # 6  vs 101.9:  +2.06%, long              -> nothing
    "101",  # 7  vs 103.02: -1.96%            > -2%   -> hold
    "102.9",  # 8  vs 105:    -2.1/105 = -2.00% <= -2% -> SELL (exactly on the threshold)
    "99",  # 9  vs 104:    -4.81%, flat              -> nothing (never sells while flat)
    "95",  # 10 vs 101:    -5.94%, flat              -> nothing
    "97",  # 11 vs 102.9:  -5.73%, flat              -> nothing
    "99",  # 12 vs 99:      0.00%                    -> nothing
    "97.5",  # 13 vs 95:    +2.63%            >= 2%   -> BUY
]


def test_pinned_sequence_fires_on_exactly_these_ticks() -> None:
    assert fired(make(), SEQUENCE) == [(4, "BUY"), (8, "SELL"), (13, "BUY")]


def test_signal_fields_come_from_config_params_and_tick() -> None:
    strategy = make(mode=ExecutionMode.LIVE)
    (i, buy), (j, sell), _ = run(strategy, SEQUENCE)
    assert (i, j) == (4, 8)
    assert buy.strategy_id == "mom-1"
    assert buy.instrument_token == TOKEN
    assert buy.symbol == SYMBOL
    assert buy.side is Side.BUY
    assert buy.quantity == 7
    assert buy.order_type is OrderType.MARKET
    assert buy.limit_price is None
    assert buy.reference_price == Decimal("103.02")
    assert buy.execution_mode is ExecutionMode.LIVE
    assert buy.signal_ts == T0 + timedelta(seconds=4)
    assert buy.reason == "return 2.00% over 3 ticks >= 2.00%"
    assert sell.side is Side.SELL
    assert sell.quantity == 7
    assert sell.reference_price == Decimal("102.9")
    assert sell.signal_ts == T0 + timedelta(seconds=8)
    assert sell.reason == "return -2.00% over 3 ticks <= -2.00%"


def test_reason_shows_as_many_decimals_as_the_threshold() -> None:
    # vs 100: +1.2345% >= 1.234%; printed to the threshold's 3 places, not rounded to 1.23.
    [(_, buy)] = run(make(lookback=1, threshold_pct="1.234"), ["100", "101.2345"])
    assert buy.reason == "return 1.234% over 1 ticks >= 1.234%"


@pytest.mark.parametrize(
    ("second_price", "expected"),
    [("101.9999", []), ("102", [(1, "BUY")]), ("102.0001", [(1, "BUY")])],
)
def test_buy_boundary(second_price: str, expected: list[tuple[int, str]]) -> None:
    assert fired(make(lookback=1), ["100", second_price]) == expected


@pytest.mark.parametrize(
    ("third_price", "expected"),
    [
        # vs 102: -0.0399/102 = -0.0391% short of -2%: hold
        ("99.9601", [(1, "BUY")]),
        # vs 102: -2.04/102 = exactly -2%: SELL
        ("99.96", [(1, "BUY"), (2, "SELL")]),
    ],
)
def test_sell_boundary(third_price: str, expected: list[tuple[int, str]]) -> None:
    assert fired(make(lookback=1), ["100", "102", third_price]) == expected


def test_nothing_before_the_window_is_full() -> None:
    # lookback 3 needs 4 prices; +10% per tick is ignored until the 4th tick.
    assert fired(make(), ["100", "110", "120"]) == []
    assert fired(make(), ["100", "110", "120", "130"]) == [(3, "BUY")]


def test_flat_prices_never_signal() -> None:
    assert fired(make(lookback=1, threshold_pct="0.000001"), ["100"] * 20) == []


def test_no_repeated_buy_while_long_and_no_sell_while_flat() -> None:
    # Rises of 5% per tick satisfy the BUY rule on every tick from 1 on: only one BUY.
    rising = ["100", "105", "110.25", "115.7625", "121.5506"]
    assert fired(make(lookback=1), rising) == [(1, "BUY")]
    # Falls of 5% per tick satisfy the SELL rule on every tick, but it is never long.
    falling = ["100", "95", "90.25", "85.7375"]
    assert fired(make(lookback=1), falling) == []


def test_time_gap_does_not_reset_the_window() -> None:
    # Tick 1 arrives 3 hours after tick 0; only ticks count, so it is still compared
    # with tick 0.
    strategy = make(lookback=1)
    assert strategy.on_tick(tick("100", 0)) == []
    [signal] = strategy.on_tick(tick("103", 3 * 3600))
    assert signal.side is Side.BUY
    assert signal.signal_ts == T0 + timedelta(hours=3)
