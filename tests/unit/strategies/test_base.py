"""Behaviour every strategy shares: instrument check, tick ordering, state round-trip."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from models.events import TradingSignal
from strategies.base import BaseStrategy, StrategyConfig
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from strategies.momentum import MomentumParams, SimpleMomentumStrategy
from tests.unit.strategies import SYMBOL, TOKEN, run, tick
from tests.unit.strategies.test_mean_reversion import SEQUENCE as MR_SEQUENCE
from tests.unit.strategies.test_momentum import SEQUENCE as MOM_SEQUENCE

Factory = Callable[[], BaseStrategy[Any]]


def momentum() -> BaseStrategy[Any]:
    config = StrategyConfig(strategy_id="mom-1", instrument_token=TOKEN, symbol=SYMBOL)
    params = MomentumParams(lookback=3, threshold_pct=Decimal("2"), quantity=7)
    return SimpleMomentumStrategy(config, params)


def mean_reversion() -> BaseStrategy[Any]:
    config = StrategyConfig(strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL)
    params = MeanReversionParams(window=4, entry_z=Decimal("1"), exit_z=Decimal("0"), quantity=4)
    return MeanReversionStrategy(config, params)


# Each strategy with its pinned sequence (both contain a BUY and a SELL), so splitting
# anywhere exercises restore while flat, while long, and mid warm-up.
CASES = [
    pytest.param(momentum, MOM_SEQUENCE, id="momentum"),
    pytest.param(mean_reversion, MR_SEQUENCE, id="mean_reversion"),
]
STRATEGIES = [pytest.param(momentum, id="momentum"), pytest.param(mean_reversion, id="mr")]


@pytest.mark.parametrize("make", STRATEGIES)
def test_tick_for_another_instrument_raises(make: Factory) -> None:
    strategy = make()
    with pytest.raises(ValueError, match=f"serves instrument {TOKEN}, got a tick for 738561"):
        strategy.on_tick(tick("100", 0, token=738561))


@pytest.mark.parametrize(("make", "prices"), CASES)
def test_duplicate_and_out_of_order_ticks_are_ignored(make: Factory, prices: list[str]) -> None:
    clean = run(make(), prices)

    noisy = make()
    out: list[tuple[int, TradingSignal]] = []
    for i, price in enumerate(prices):
        out.extend((i, s) for s in noisy.on_tick(tick(price, i)))
        before = noisy.export_state()
        # Same timestamp again (a re-delivery, even with a different price), then an
        # older one: both must return [] and leave the state untouched.
        assert noisy.on_tick(tick("150", i)) == []
        assert noisy.on_tick(tick("50", i - 1)) == []
        assert noisy.export_state() == before
    assert out == clean
    assert [i for i, _ in clean]  # the sequence does signal, so the comparison means something


@pytest.mark.parametrize(("make", "prices"), CASES)
def test_export_restore_round_trip_at_every_split(make: Factory, prices: list[str]) -> None:
    uninterrupted = run(make(), prices)
    assert len(uninterrupted) >= 2

    for split in range(len(prices) + 1):
        first = make()
        before = run(first, prices[:split])
        # Through real JSON, as it would be stored in a Faust table.
        state = json.loads(json.dumps(first.export_state()))

        restored = make()
        restored.restore_state(state)
        assert restored.export_state() == state
        # The runner replays from the last committed offset, so the restored instance may
        # see the last couple of ticks again first; those must be ignored.
        replay_from = max(0, split - 2)
        after = run(restored, prices[replay_from:], start=replay_from)
        assert before + after == uninterrupted, f"split at tick {split}"


@pytest.mark.parametrize("make", STRATEGIES)
def test_export_state_is_plain_json_with_decimals_as_strings(make: Factory) -> None:
    strategy = make()
    run(strategy, ["100.05", "100.10"])
    state = strategy.export_state()
    assert json.loads(json.dumps(state)) == state
    assert state["prices"] == ["100.05", "100.10"]
    assert state["last_exchange_ts"] == "2026-03-02T04:00:01Z"
    assert state["position"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strategy_id": "other"}, "belongs to"),
        ({"instrument_token": 1}, "belongs to"),
        ({"kind": "something_else"}, "belongs to"),
        ({"version": 99}, "version 99 is not supported"),
        ({"position": -1}, "invalid strategy state"),
        ({"prices": ["-1"]}, "invalid strategy state"),
        ({"surprise": 1}, "invalid strategy state"),
    ],
)
def test_restore_rejects_foreign_or_malformed_state_without_changing_anything(
    change: dict[str, Any], message: str
) -> None:
    strategy = momentum()
    run(strategy, MOM_SEQUENCE[:5])  # long after the BUY on tick 4
    before = strategy.export_state()
    bad = {**before, **change}
    with pytest.raises(ValueError, match=message):
        strategy.restore_state(bad)
    assert strategy.export_state() == before


def test_restore_into_a_smaller_window_keeps_the_newest_prices() -> None:
    wide = mean_reversion()
    run(wide, ["1", "2", "3", "4"])
    config = StrategyConfig(strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL)
    params = MeanReversionParams(window=2, entry_z=Decimal("1"), exit_z=Decimal("0"), quantity=4)
    narrow = MeanReversionStrategy(config, params)
    narrow.restore_state(wide.export_state())
    assert narrow.prices == (Decimal("3"), Decimal("4"))


def test_params_of_the_wrong_strategy_are_refused() -> None:
    config = StrategyConfig(strategy_id="mom-1", instrument_token=TOKEN, symbol=SYMBOL)
    params = MeanReversionParams(window=4, entry_z=Decimal("1"), exit_z=Decimal("0"), quantity=1)
    with pytest.raises(TypeError, match="needs MomentumParams"):
        SimpleMomentumStrategy(config, params)  # type: ignore[arg-type]
