"""A strategy's product: resolved once (alpha_panda/domain/products.py), and the fees it picks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.backtest.engine import BacktestSetup
from alpha_panda.backtest.runner import RandomWalkSource, run_backtest
from alpha_panda.backtest.sources import OnBadInput
from alpha_panda.domain.fees import FeeSchedule
from alpha_panda.domain.products import StrategyProducts, fees_for_product, strategy_product
from alpha_panda.domain.risk_policy import RiskPolicy
from alpha_panda.domain.strategy_host import StrategyHost
from alpha_panda.settings import load_settings
from tables.risk_state import RiskLimits
from tests.factories import RELIANCE, T0, strategy

D = Decimal
# Signals on a 0.05 % move: the random walk's small steps trade.
record = partial(strategy, params={"lookback": 1, "threshold_pct": "0.05", "quantity": 10})


def raw(sid: str, product: object) -> db.StrategyConfigRecord:
    """A row as the store could hold it if written around the CLI's checks."""
    return record(sid).model_copy(update={"risk_limits": {"product": product}})


@pytest.mark.parametrize(
    ("limits", "default", "expected"),
    [
        ({"product": "CNC"}, "MIS", "CNC"),
        ({"product": "MIS"}, "CNC", "MIS"),
        ({"product": "NRML"}, "MIS", "NRML"),
        ({}, "CNC", "CNC"),
        ({"max_order_quantity": 5}, "MIS", "MIS"),
    ],
)
def test_the_strategys_own_product_else_the_default(
    limits: dict[str, Any], default: str, expected: str
) -> None:
    assert strategy_product(limits, default) == expected


@pytest.mark.parametrize("bad", ["cnc", "MTF", "", None, 1])
def test_anything_but_mis_cnc_nrml_is_refused_naming_the_value(bad: object) -> None:
    with pytest.raises(ValueError, match="MIS, CNC, NRML"):
        strategy_product({"product": bad}, "MIS")


def test_cnc_pays_delivery_charges_and_mis_and_nrml_intraday() -> None:
    assert fees_for_product("CNC") == FeeSchedule.delivery()
    assert fees_for_product("MIS") == FeeSchedule.intraday()
    assert fees_for_product("NRML") == FeeSchedule.intraday()


def test_products_of_a_configuration_cover_every_strategy_enabled_or_not() -> None:
    config = runtime_config(
        [
            record("cnc", product="CNC"),
            record("plain"),
            record("off", enabled=False, product="CNC"),
            raw("broken", "MTF"),
        ]
    )
    products = StrategyProducts.from_config(config, "MIS")
    assert products.product_of("cnc") == "CNC"
    assert products.product_of("plain") == "MIS"
    assert products.product_of("off") == "CNC"  # its approved signals still execute
    # Invalid: the risk manager refuses its signals; the engine has no product for it.
    assert products.product_of("broken") is None
    assert products.product_of("never-configured") is None
    assert products.fees_of("cnc") == FeeSchedule.delivery()
    assert products.fees_of("plain") == FeeSchedule.intraday()
    # A strategy no longer configured: its paper fill is still booked, at the default's fees.
    assert StrategyProducts.from_config(config, "CNC").fees_of("gone") == FeeSchedule.delivery()
    assert StrategyProducts.from_config(config, "CNC").fees_of("plain") == FeeSchedule.delivery()


def test_runner_risk_and_engine_resolve_the_same_product() -> None:
    config = runtime_config([record("cnc", product="CNC"), record("plain")])
    for default in ("MIS", "CNC"):
        host = StrategyHost(default_product=default)
        assert host.configure(config) == []
        by_host = {a.strategy_id: a.product for a in host.assignments_for(RELIANCE)}
        policy = RiskPolicy(RiskLimits.from_settings(load_settings(risk={"product": default}).risk))
        policy.configure(config)
        by_risk = {sid: limits.product for sid, limits in policy.limits.items()}
        products = StrategyProducts.from_config(config, default)
        by_engine = {sid: products.product_of(sid) for sid in ("cnc", "plain")}
        assert by_host == by_risk == by_engine == {"cnc": "CNC", "plain": default}


def test_the_runner_skips_a_strategy_whose_product_is_invalid_naming_it() -> None:
    host = StrategyHost()
    (problem,) = host.configure(runtime_config([raw("broken", "MTF"), record("ok")]))
    assert "'broken'" in problem and "'MTF'" in problem
    assert [a.strategy_id for a in host.assignments_for(RELIANCE)] == ["ok"]


def test_a_backtest_charges_each_strategy_by_its_product() -> None:
    config = runtime_config([record("cnc", product="CNC"), record("mis")])
    settings = load_settings(market={"enforce_sessions": False})
    setup = BacktestSetup.from_settings(config, settings)
    source = RandomWalkSource(
        "738561:RELIANCE:2900", 7, D("8"), 600, T0, timedelta(milliseconds=500)
    )
    result, _ = run_backtest(source, setup, OnBadInput.REFUSE)
    by_strategy = {sid: [f for f in result.fills if f.strategy_id == sid] for sid in ("cnc", "mis")}
    assert all(by_strategy.values()), "both strategies must trade for the comparison"
    for sid, product in (("cnc", "CNC"), ("mis", "MIS")):
        for fill in by_strategy[sid]:
            notional = fill.fill_price * fill.quantity
            assert fill.fee_breakdown == fees_for_product(product).compute(fill.side, notional)
