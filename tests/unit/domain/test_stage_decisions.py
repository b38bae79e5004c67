"""The stages' decisions as pure functions (called by the agents and by the backtest)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from functools import partial

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.domain.engine_rules import EngineRejection, execute_validated, tick_is_stale
from alpha_panda.domain.paper_trader import PaperTrader, PendingLimitOrder
from alpha_panda.domain.products import StrategyProducts
from alpha_panda.domain.risk_policy import RiskPolicy
from alpha_panda.settings import RiskSettings
from models.events import (
    ExecutionMode,
    OrderFill,
    RejectionReason,
    Side,
    TradingSignal,
    ValidatedSignal,
)
from tables.portfolio import Portfolio, book_fill
from tables.risk_state import RiskLimits, StrategyRiskState
from tests.factories import T0, fill, tick
from tests.factories import signal as stub_signal

D = Decimal
A = 738561
# Strategy "s" on RELIANCE, deciding at a reference price of 100.
signal = partial(stub_signal, price="100", strategy_id="s")
TRADER = PaperTrader(slippage_bps=D("0"), fees=StrategyProducts().fees_of)


def policy(*, enabled: bool = True, risk: dict[str, object] | None = None) -> RiskPolicy:
    record = db.validated_strategy(
        "s", "momentum", [(A, "RELIANCE")], enabled=enabled, updated_at=T0
    )
    if risk is not None:  # as a store would hold a value the risk manager then refuses
        record = record.model_copy(update={"risk_limits": risk})
    p = RiskPolicy(RiskLimits.from_settings(RiskSettings()))
    invalid = p.configure(runtime_config([record]))
    assert invalid == ([] if risk is None else invalid)
    return p


def test_policy_decides_and_returns_the_state_to_store() -> None:
    decision = policy().decide(signal(), "sig-1", StrategyRiskState.new("s"))
    assert decision.approved
    assert decision.new_state is not None and decision.new_state.position(A) == 10
    again = policy().decide(signal(), "sig-1", decision.new_state)
    assert again.approved and again.new_state is None  # a replay: nothing new to store


def test_policy_precheck_rejections_store_nothing() -> None:
    unknown = policy().decide(signal(strategy_id="other"), "sig-1", StrategyRiskState.new("other"))
    assert unknown.rejection is not None
    assert unknown.rejection.reason is RejectionReason.STRATEGY_UNKNOWN
    assert unknown.new_state is None
    disabled = policy(enabled=False).decide(signal(), "sig-1", StrategyRiskState.new("s"))
    assert disabled.rejection is not None
    assert disabled.rejection.reason is RejectionReason.KILL_SWITCH
    assert disabled.rejection.detail == "strategy is disabled"


def test_policy_reports_invalid_limits_and_refuses_the_strategy() -> None:
    p = RiskPolicy(RiskLimits.from_settings(RiskSettings()))
    record = db.validated_strategy("s", "momentum", [(A, "RELIANCE")], updated_at=T0)
    invalid = p.configure(runtime_config([record.model_copy(update={"risk_limits": {"x": 1}})]))
    assert [sid for sid, _ in invalid] == ["s"] and "unknown risk limit field(s) x" in invalid[0][1]
    decision = p.decide(signal(), "sig-1", StrategyRiskState.new("s"))
    assert decision.rejection is not None and decision.rejection.detail.startswith(
        "risk limits invalid"
    )


def test_tick_is_stale_only_when_older_than_the_last() -> None:
    assert not tick_is_stale(None, tick("1"))
    assert not tick_is_stale(T0, tick("1"))
    assert tick_is_stale(T0 + timedelta(seconds=1), tick("1"))


def validated(s: TradingSignal) -> ValidatedSignal:
    return ValidatedSignal(signal_event_id="sig-1", signal=s, validated_ts=s.signal_ts)


def test_execute_validated_outcomes() -> None:
    later = T0 + timedelta(seconds=2)
    fill = execute_validated(TRADER, validated(signal()), D("101"), later, [])
    assert isinstance(fill, OrderFill)
    assert (fill.fill_price, fill.filled_ts) == (D("101"), later)  # the later of the two times

    live = execute_validated(TRADER, validated(signal(mode=ExecutionMode.LIVE)), D("1"), T0, [])
    assert isinstance(live, EngineRejection)
    assert live.reason is RejectionReason.LIVE_TRADING_NOT_CONFIGURED

    no_price = execute_validated(TRADER, validated(signal()), None, None, [])
    assert isinstance(no_price, EngineRejection)
    assert no_price.reason is RejectionReason.NO_MARKET_PRICE

    resting = execute_validated(TRADER, validated(signal(limit="99")), D("100"), T0, [])
    assert isinstance(resting, PendingLimitOrder)
    assert execute_validated(TRADER, validated(signal(limit="99")), D("100"), T0, ["sig-1"]) is None


def test_book_fill_redelivery_and_duplicates() -> None:
    portfolio = Portfolio.new("s", D("1000"))
    filled = fill("f1", Side.BUY, 1, "10", strategy_id="s")
    booking = book_fill(portfolio, filled, ("orders.filled.paper:0", 5))
    assert booking is not None and booking.booked
    assert booking.portfolio.cash == D("990")
    assert booking.portfolio.source_offsets == {"orders.filled.paper:0": 5}
    assert book_fill(booking.portfolio, filled, ("orders.filled.paper:0", 5)) is None
    again = book_fill(booking.portfolio, filled, ("orders.filled.paper:0", 6))
    assert again is not None and not again.booked and again.portfolio.cash == D("990")
    unlogged = book_fill(portfolio, filled, None)
    assert unlogged is not None and unlogged.portfolio.source_offsets == {}
