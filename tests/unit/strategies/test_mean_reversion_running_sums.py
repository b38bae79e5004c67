"""Mean reversion keeps running sums of its window: they must equal summing it afresh,
after any number of ticks and after a state restore (so its signals are unchanged)."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from strategies.base import StrategyConfig
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from tests.unit.strategies import SYMBOL, TOKEN, tick

CONFIG = StrategyConfig(strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL)


def make(window: int) -> MeanReversionStrategy:
    params = MeanReversionParams(
        window=window, entry_z=Decimal("1.2"), exit_z=Decimal("0.2"), quantity=1
    )
    return MeanReversionStrategy(CONFIG, params)


def fresh_sums(strategy: MeanReversionStrategy) -> tuple[Decimal, Decimal]:
    return sum(strategy.prices, Decimal(0)), sum((p * p for p in strategy.prices), Decimal(0))


def walk(seed: int, n: int) -> list[Decimal]:
    rng = random.Random(seed)
    price = Decimal("1000")
    out = []
    for _ in range(n):
        price = max(Decimal("0.05"), price + Decimal(rng.randint(-40, 40)) * Decimal("0.05"))
        out.append(price)
    return out


@pytest.mark.parametrize("window", [3, 5, 20])
def test_running_sums_equal_fresh_sums_and_signals_match_a_restored_copy(window: int) -> None:
    strategy = make(window)
    signals = []
    for n, price in enumerate(walk(window, 400)):
        signals += strategy.on_tick(tick(price, n))
        assert (strategy._total, strategy._squares) == fresh_sums(strategy)
        assert list(strategy._window_squares) == [p * p for p in strategy.prices]
        if n == 200:
            restored = make(window)
            restored.restore_state(strategy.export_state())
            assert (restored._total, restored._squares) == fresh_sums(strategy)
            assert list(restored._window_squares) == [p * p for p in strategy.prices]
            strategy = restored
    assert signals, "the walk should trade"


def test_restore_into_a_smaller_window_recomputes_the_sums() -> None:
    big = make(10)
    for n, price in enumerate(walk(1, 30)):
        big.on_tick(tick(price, n))
    small = make(4)
    small.restore_state(big.export_state())
    assert small.prices == big.prices[-4:]
    assert (small._total, small._squares) == fresh_sums(small)
