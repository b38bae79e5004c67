"""The kill switch at execution (alpha_panda/domain/engine_rules.py): the engine refuses a
halted strategy's approved signals and cancels its resting LIMIT orders, with the risk
manager's wording."""

from __future__ import annotations

from alpha_panda.domain.engine_rules import cancel_halted, halt_refusal
from alpha_panda.domain.paper_trader import PendingLimitOrder
from alpha_panda.domain.risk_rules import check_kill_switch
from alpha_panda.settings import load_settings
from models.config import RuntimeConfig
from models.events import ExecutionMode, RejectionReason
from tables.risk_state import KillSwitch
from tests.factories import T0
from tests.factories import signal as stub_signal


def resting(sid: str, event_id: str) -> PendingLimitOrder:
    return PendingLimitOrder(
        signal_event_id=event_id, signal=stub_signal(strategy_id=sid, limit="990"), accepted_ts=T0
    )


def test_no_halt_executes() -> None:
    assert halt_refusal(stub_signal(strategy_id="momo"), KillSwitch()) is None
    other = KillSwitch(halted_strategies=frozenset({"other"}))
    assert halt_refusal(stub_signal(strategy_id="momo"), other) is None


def test_a_halt_refuses_paper_and_live_alike_with_the_risk_managers_reason() -> None:
    for mode in ExecutionMode:
        sig = stub_signal(strategy_id="momo", mode=mode)
        for switch in (
            KillSwitch(halt_all=True),
            KillSwitch(halted_strategies=frozenset({"momo"})),
        ):
            refusal = halt_refusal(sig, switch)
            risk = check_kill_switch(sig, switch)
            assert refusal is not None and risk is not None
            assert refusal.reason is RejectionReason.KILL_SWITCH
            assert refusal.detail.startswith(risk.detail)  # one wording for both stages
            assert "not executed" in refusal.detail


def test_cancel_halted_cancels_only_the_halted_strategys_orders_in_order() -> None:
    orders = [resting("momo", "a"), resting("calm", "b"), resting("momo", "c")]
    kept, cancelled = cancel_halted(orders, KillSwitch(halted_strategies=frozenset({"momo"})))
    assert [o.signal_event_id for o in kept] == ["b"]
    assert [o.signal_event_id for o, _ in cancelled] == ["a", "c"]
    for _, rejection in cancelled:
        assert rejection.reason is RejectionReason.KILL_SWITCH
        assert rejection.detail == "strategy momo halted: resting LIMIT order cancelled"


def test_cancel_halted_under_a_global_halt_cancels_all_and_without_a_halt_none() -> None:
    orders = [resting("momo", "a"), resting("calm", "b")]
    kept, cancelled = cancel_halted(orders, KillSwitch(halt_all=True))
    assert kept == [] and [o for o, _ in cancelled] == orders
    assert cancelled[0][1].detail == "all trading halted: resting LIMIT order cancelled"
    assert cancel_halted(orders, KillSwitch()) == (orders, [])


def test_the_kill_switch_of_a_configuration() -> None:
    config = RuntimeConfig(
        strategies=(),
        halt_all=False,
        halted_strategies=frozenset({"momo"}),
        halt_reasons={"momo": "why"},
    )
    assert KillSwitch.of(config) == KillSwitch(halted_strategies=frozenset({"momo"}))


def test_live_trading_is_refused_on_the_embedded_broker_unless_accepted() -> None:
    refusal = load_settings(broker={"kind": "embedded"}).live_trading_refusal
    assert refusal is not None and "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER" in refusal
    accepted = load_settings(broker={"kind": "embedded"}, zerodha={"allow_embedded_broker": True})
    assert accepted.live_trading_refusal is None
    assert load_settings(broker={"kind": "redpanda"}).live_trading_refusal is None
