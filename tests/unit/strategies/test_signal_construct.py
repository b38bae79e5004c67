"""Signals are built with model_construct on the hot path; they must equal validated ones."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from models.events import ExecutionMode, Side, TradingSignal
from strategies.base import BaseStrategy, StrategyConfig
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from strategies.momentum import MomentumParams, SimpleMomentumStrategy
from tests.unit.strategies import SYMBOL, TOKEN, run, tick
from tests.unit.strategies.test_mean_reversion import SEQUENCE as MR_SEQUENCE
from tests.unit.strategies.test_momentum import SEQUENCE as MOM_SEQUENCE


def momentum(mode: ExecutionMode) -> BaseStrategy[Any]:
    config = StrategyConfig(
        strategy_id="mom-1", instrument_token=TOKEN, symbol=SYMBOL, execution_mode=mode
    )
    return SimpleMomentumStrategy(
        config, MomentumParams(lookback=3, threshold_pct=Decimal("2"), quantity=7)
    )


def mean_reversion(mode: ExecutionMode) -> BaseStrategy[Any]:
    config = StrategyConfig(
        strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL, execution_mode=mode
    )
    params = MeanReversionParams(window=4, entry_z=Decimal("1"), exit_z=Decimal("0"), quantity=4)
    return MeanReversionStrategy(config, params)


@pytest.mark.parametrize("mode", list(ExecutionMode))
@pytest.mark.parametrize(
    ("make", "prices"), [(momentum, MOM_SEQUENCE), (mean_reversion, MR_SEQUENCE)]
)
def test_constructed_signal_equals_the_validated_one(
    make: Any, prices: list[str], mode: ExecutionMode
) -> None:
    signals = [signal for _, signal in run(make(mode), prices)]
    assert {s.side for s in signals} == {"BUY", "SELL"}  # both paths of _signal ran
    for signal in signals:
        validated = TradingSignal.model_validate(signal.model_dump())
        assert signal == validated
        assert signal.model_dump_json() == validated.model_dump_json()
        assert signal.model_fields_set == validated.model_fields_set
        # And through the wire: what a consumer decodes is the same signal.
        assert TradingSignal.model_validate_json(signal.model_dump_json()) == signal


def test_a_non_positive_quantity_is_refused_not_constructed() -> None:
    strategy = momentum(ExecutionMode.PAPER)
    with pytest.raises(ValueError, match="quantity must be positive"):
        strategy._signal(tick("100", 0), Side.SELL, 0, "would not validate")
