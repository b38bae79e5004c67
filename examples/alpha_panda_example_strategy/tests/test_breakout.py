"""The example plug-in's own tests: a hand-computed tick sequence, and the contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alpha_panda_example_strategy import BreakoutStrategy

from models.events import MarketTick, Side
from strategies import StrategyConfig, StrategyConfigError, StrategyFactory

# Its own clock and tick, not tests/factories.py: a plug-in is built against the installed
# alpha-panda, which does not ship the project's tests/ (docs/TESTING.md).
T0 = datetime(2026, 3, 2, 3, 45, tzinfo=UTC)  # 09:15 IST
TOKEN = 738561


def tick(price: str, second: int) -> MarketTick:
    return MarketTick(
        instrument_token=TOKEN,
        symbol="RELIANCE",
        last_price=Decimal(price),
        volume=second + 1,
        exchange_ts=T0 + timedelta(seconds=second),
    )


def make(**params: object) -> BreakoutStrategy:
    config = StrategyConfig(strategy_id="bo-1", instrument_token=TOKEN, symbol="RELIANCE")
    strategy = StrategyFactory.create("breakout", config, {"window": 3, "quantity": 7, **params})
    assert isinstance(strategy, BreakoutStrategy)
    return strategy


def test_breaks_out_above_the_channel_and_down_below_it() -> None:
    strategy = make()
    prices = ["100", "101", "99", "101", "101.05", "100", "98.9", "98.95"]
    fired = [
        (i, s.side, s.quantity, s.reason)
        for i, p in enumerate(prices)
        for s in strategy.on_tick(tick(p, i))
    ]
    assert fired == [
        # tick 3: 101 is not above the high 101 of [100, 101, 99]; tick 4 is.
        (4, Side.BUY, 7, "breakout: 101.05 > 3-tick high 101"),
        # tick 6: 98.9 < low 100 of [101, 101.05, 100].
        (6, Side.SELL, 7, "breakdown: 98.9 < 3-tick low 100"),
    ]


def test_the_kind_is_found_through_the_entry_point() -> None:
    assert "breakout" in StrategyFactory.known_kinds()
    assert StrategyFactory.strategy_class("breakout") is BreakoutStrategy
    assert StrategyFactory.default_params("breakout") == {"window": 10, "quantity": 10}


def test_parameters_are_validated_like_a_built_in() -> None:
    with pytest.raises(StrategyConfigError) as error:
        StrategyFactory.validate_params("breakout", {"window": 0, "quantity": 1}, "bo-1")
    assert error.value.field == "window"
    with pytest.raises(StrategyConfigError, match="unknown parameter"):
        StrategyFactory.validate_params("breakout", {"window": 3, "quantity": 1, "x": 1}, "bo-1")


def test_state_export_and_restore_round_trip() -> None:
    strategy = make()
    for i, p in enumerate(["100", "101", "99", "102"]):
        strategy.on_tick(tick(p, i))
    restored = make()
    restored.restore_state(strategy.export_state())
    assert restored.export_state() == strategy.export_state()
    assert restored.on_tick(tick("95", 9)) == strategy.on_tick(tick("95", 9))
