"""A backtest runs what the stages run: an installed plug-in kind, and the trading-day rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from alpha_panda.backtest.config import load_file
from alpha_panda.backtest.engine import BacktestSetup
from alpha_panda.backtest.runner import RandomWalkSource, run_backtest
from alpha_panda.backtest.sources import OnBadInput
from alpha_panda.settings import load_settings

INSTRUMENTS = "738561:RELIANCE:2900,408065:INFY:1500"
# The example plug-in package (examples/alpha_panda_example_strategy), installed by the
# Makefile, publishes the kind "breakout" through the alpha_panda.strategies entry point.
CONFIG = """
[[strategies]]
strategy_id = "brk"
kind = "breakout"
instruments = [[738561, "RELIANCE"], [408065, "INFY"]]
parameters = { window = 5, quantity = 10 }
"""
SATURDAY_NOON_IST = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
MONDAY_1000_IST = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)


def backtest(tmp_path: Path, start: datetime, *, enforce_sessions: bool) -> tuple:  # type: ignore[type-arg]
    path = tmp_path / "strategies.toml"
    path.write_text(CONFIG)
    settings = load_settings(market={"enforce_sessions": enforce_sessions})
    setup = BacktestSetup.from_settings(load_file(path), settings)
    source = RandomWalkSource(
        INSTRUMENTS, 7, Decimal("8"), 2_000, start, timedelta(milliseconds=500)
    )
    result, guard = run_backtest(source, setup, OnBadInput.REFUSE)
    assert guard.skipped == 0
    return result, setup


def test_the_example_plug_in_trades_in_a_backtest(tmp_path: Path) -> None:
    result, _ = backtest(tmp_path, MONDAY_1000_IST, enforce_sessions=True)
    assert result.fills, "the breakout plug-in made no fill in 2,000 ticks"
    assert {f.strategy_id for f in result.fills} == {"brk"}
    assert not any(reason == "market_closed" for _, reason in result.rejections)


def test_outside_the_session_a_backtest_rejects_as_the_risk_manager_does(tmp_path: Path) -> None:
    closed, setup = backtest(tmp_path, SATURDAY_NOON_IST, enforce_sessions=True)
    assert setup.sessions is not None
    assert closed.fills == []
    assert closed.rejections[("brk", "market_closed")] > 0

    any_hour, setup = backtest(tmp_path, SATURDAY_NOON_IST, enforce_sessions=False)
    assert setup.sessions is None
    assert any_hour.fills and ("brk", "market_closed") not in any_hour.rejections
