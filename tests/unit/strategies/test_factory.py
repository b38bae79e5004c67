"""StrategyFactory: kinds, parameter validation messages, construction, defaults."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from strategies.base import StrategyConfig
from strategies.factory import STRATEGY_REGISTRY, StrategyConfigError, StrategyFactory
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from strategies.momentum import MomentumParams, SimpleMomentumStrategy
from tests.unit.strategies import SYMBOL, TOKEN, fired

CONFIG = StrategyConfig(strategy_id="mom-1", instrument_token=TOKEN, symbol=SYMBOL)
MOMENTUM_OK: dict[str, Any] = {"lookback": 3, "threshold_pct": "2", "quantity": 7}
MR_OK: dict[str, Any] = {"window": 4, "entry_z": "1", "exit_z": "0", "quantity": 4}


def config_error(kind: str, params: dict[str, Any]) -> StrategyConfigError:
    with pytest.raises(StrategyConfigError) as caught:
        StrategyFactory.validate_params(kind, params, strategy_id="mom-1")
    return caught.value


def test_known_kinds() -> None:
    # The built-ins, plus the example plug-in the test venv installs (Makefile).
    assert StrategyFactory.known_kinds() == ["breakout", "mean_reversion", "momentum"]
    assert sorted(STRATEGY_REGISTRY) == ["mean_reversion", "momentum"]
    assert STRATEGY_REGISTRY["momentum"] is SimpleMomentumStrategy
    assert STRATEGY_REGISTRY["mean_reversion"] is MeanReversionStrategy


def test_unknown_kind_names_the_known_ones() -> None:
    error = config_error("martingale", {})
    assert error.strategy_id == "mom-1"
    assert error.field == "kind"
    # Installed plug-ins (the example package in the test venv) are known kinds too.
    known = ", ".join(StrategyFactory.known_kinds())
    assert "mean_reversion, momentum" in known
    assert str(error) == (
        "strategy 'mom-1': parameter 'kind': unknown strategy kind 'martingale' "
        f"(known: {known}; or module:Class)"
    )
    assert isinstance(error, ValueError)


def test_bad_value_names_the_parameter_and_the_rule() -> None:
    error = config_error("momentum", {**MOMENTUM_OK, "lookback": 0})
    assert error.field == "lookback"
    assert error.message == "Input should be greater than or equal to 1"
    assert str(error) == (
        "strategy 'mom-1': parameter 'lookback': Input should be greater than or equal to 1"
    )


@pytest.mark.parametrize(
    ("kind", "change", "field", "rule"),
    [
        ("momentum", {"threshold_pct": "0"}, "threshold_pct", "greater than 0"),
        ("momentum", {"threshold_pct": "100"}, "threshold_pct", "less than 100"),
        ("momentum", {"threshold_pct": "abc"}, "threshold_pct", "valid decimal"),
        ("momentum", {"quantity": 0}, "quantity", "greater than 0"),
        ("momentum", {"quantity": 1.5}, "quantity", "fractional part"),
        ("momentum", {"quantity": True}, "quantity", "not a boolean"),
        ("momentum", {"lookback": 10_001}, "lookback", "less than or equal to 10000"),
        ("mean_reversion", {"window": 1}, "window", "greater than or equal to 2"),
        ("mean_reversion", {"entry_z": "0"}, "entry_z", "greater than 0"),
        ("mean_reversion", {"exit_z": "-0.1"}, "exit_z", "greater than or equal to 0"),
        ("mean_reversion", {"exit_z": "1"}, "exit_z", "must be less than entry_z (1)"),
        ("mean_reversion", {"exit_z": "2"}, "exit_z", "exit_z (2) must be less than entry_z"),
    ],
)
def test_each_rule_is_reported_against_its_parameter(
    kind: str, change: dict[str, Any], field: str, rule: str
) -> None:
    base = MOMENTUM_OK if kind == "momentum" else MR_OK
    error = config_error(kind, {**base, **change})
    assert error.field == field
    assert rule in error.message


def test_extra_parameter_is_named_with_the_known_ones() -> None:
    error = config_error("momentum", {**MOMENTUM_OK, "stop_loss": "1"})
    assert error.field == "stop_loss"
    assert str(error) == (
        "strategy 'mom-1': parameter 'stop_loss': unknown parameter "
        "(known: lookback, quantity, threshold_pct)"
    )


def test_missing_parameters_report_the_first_and_count_the_rest() -> None:
    error = config_error("momentum", {"quantity": 1})
    assert error.field == "lookback"
    assert error.message == "Field required (and 1 more problem)"


def test_params_that_are_not_a_mapping() -> None:
    error = config_error("momentum", ["lookback", 3])  # type: ignore[arg-type]
    assert error.field is None
    assert str(error) == "strategy 'mom-1': parameters must be a mapping, got list"


def test_validate_params_accepts_json_style_values() -> None:
    params = StrategyFactory.validate_params(
        "momentum", {"lookback": "3", "threshold_pct": 0.5, "quantity": 7}
    )
    assert params == MomentumParams(lookback=3, threshold_pct=Decimal("0.5"), quantity=7)


def test_create_builds_a_working_strategy() -> None:
    strategy = StrategyFactory.create("momentum", CONFIG, MOMENTUM_OK)
    assert isinstance(strategy, SimpleMomentumStrategy)
    assert strategy.config == CONFIG
    assert strategy.params == MomentumParams(lookback=3, threshold_pct=Decimal("2"), quantity=7)
    # lookback 3, +2% exactly on the 4th tick.
    assert fired(strategy, ["100", "100", "100", "102"]) == [(3, "BUY")]

    mr_config = StrategyConfig(strategy_id="mr-1", instrument_token=TOKEN, symbol=SYMBOL)
    mr = StrategyFactory.create("mean_reversion", mr_config, MR_OK)
    assert isinstance(mr, MeanReversionStrategy)
    assert isinstance(mr.params, MeanReversionParams)


def test_create_reports_errors_against_the_configured_strategy_id() -> None:
    config = StrategyConfig(strategy_id="mr-7", instrument_token=TOKEN, symbol=SYMBOL)
    with pytest.raises(StrategyConfigError) as caught:
        StrategyFactory.create("mean_reversion", config, {**MR_OK, "window": 0})
    assert caught.value.strategy_id == "mr-7"
    assert str(caught.value).startswith("strategy 'mr-7': parameter 'window': ")


@pytest.mark.parametrize("kind", StrategyFactory.known_kinds())
def test_default_params_are_json_safe_and_valid(kind: str) -> None:
    defaults = StrategyFactory.default_params(kind)
    assert json.loads(json.dumps(defaults)) == defaults
    StrategyFactory.validate_params(kind, defaults)
    # A copy: callers may edit it without changing the next caller's defaults.
    defaults["quantity"] = 999
    assert StrategyFactory.default_params(kind)["quantity"] != 999


def test_default_params_of_unknown_kind() -> None:
    with pytest.raises(StrategyConfigError) as caught:
        StrategyFactory.default_params("nope")
    assert caught.value.field == "kind"


def test_strategy_config_is_validated() -> None:
    with pytest.raises(ValueError, match="strategy_id"):
        StrategyConfig(strategy_id="has space", instrument_token=TOKEN, symbol=SYMBOL)
    with pytest.raises(ValueError, match="instrument_token"):
        StrategyConfig(strategy_id="ok", instrument_token=0, symbol=SYMBOL)
