"""Pre-trade risk: each rule at its boundary, halts, rate window, duplicates, state."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alpha_panda.domain.risk_rules import RiskDecision, evaluate
from alpha_panda.settings import RiskSettings
from models.events import OrderType, RejectionReason, Side, TradingSignal
from tables.risk_state import (
    SEEN_SIGNALS_BOUND,
    KillSwitch,
    RiskConfigError,
    RiskLimits,
    StrategyRiskState,
)

D = Decimal
# 09:30 IST on Monday 2 March 2026.
T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
A = 738561
B = 408065
NO_KILL = KillSwitch()
R = RejectionReason


def limits(**overrides: Any) -> RiskLimits:
    base: dict[str, Any] = {
        "max_order_quantity": 1_000,
        "max_order_notional": D("10000000"),
        "max_position_quantity": 100_000,
        "max_gross_exposure": D("100000000"),
        "max_daily_loss": D("1000000"),
        "max_orders_per_minute": 1_000,
        "allowed_instruments": None,
        "allow_short": False,
    }
    base.update(overrides)
    return RiskLimits(**base)


def signal(
    side: Side = Side.BUY,
    quantity: int = 10,
    price: str = "1000",
    token: int = A,
    ts: datetime = T0,
    strategy_id: str = "momo",
    limit: str | None = None,
) -> TradingSignal:
    return TradingSignal(
        strategy_id=strategy_id,
        instrument_token=token,
        symbol="RELIANCE" if token == A else "INFY",
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=D(limit) if limit else None,
        reference_price=D(price),
        signal_ts=ts,
    )


class Book:
    """Feeds signals through `evaluate`, carrying the state, numbering event ids."""

    def __init__(self, risk: RiskLimits, strategy_id: str = "momo") -> None:
        self.limits = risk
        self.state = StrategyRiskState.new(strategy_id)
        self.kill_switch = NO_KILL
        self.count = 0

    def send(self, sig: TradingSignal, event_id: str | None = None) -> RiskDecision:
        self.count += 1
        decision = evaluate(
            sig, event_id or f"e{self.count}", self.limits, self.state, self.kill_switch
        )
        self.state = decision.new_state
        return decision

    def approve(self, sig: TradingSignal) -> None:
        decision = self.send(sig)
        assert decision.rejection is None, decision.rejection

    def reject(self, sig: TradingSignal, reason: RejectionReason) -> str:
        decision = self.send(sig)
        assert decision.rejection is not None, "expected a rejection"
        assert decision.rejection.reason is reason, decision.rejection
        return decision.rejection.detail


# --- one test per rule: approve at the boundary, reject just past it -----------------


def test_max_order_quantity() -> None:
    book = Book(limits(max_order_quantity=100))
    book.approve(signal(quantity=100))
    detail = book.reject(signal(quantity=101), R.MAX_ORDER_QUANTITY)
    assert detail == "quantity 101 > max 100"


def test_max_order_notional_at_reference_price() -> None:
    book = Book(limits(max_order_notional=D("100000")))
    book.approve(signal(quantity=40, price="2500"))  # 100000
    detail = book.reject(signal(quantity=40, price="2500.05"), R.MAX_ORDER_NOTIONAL)
    assert detail == "notional 100002.00 > max 100000"


def test_max_order_notional_uses_the_limit_price_of_a_limit_order() -> None:
    book = Book(limits(max_order_notional=D("100000")))
    # Reference 2600 would be 104000; the limit 2500 is what the order may pay.
    book.approve(signal(quantity=40, price="2600", limit="2500"))
    book.reject(signal(quantity=40, price="2400", limit="2500.05"), R.MAX_ORDER_NOTIONAL)


def test_max_position_long() -> None:
    book = Book(limits(max_position_quantity=500))
    book.approve(signal(quantity=400))
    book.approve(signal(quantity=100))  # exactly 500
    detail = book.reject(signal(quantity=1), R.MAX_POSITION)
    assert detail == "resulting position 501 exceeds max 500"


def test_max_position_short_side_is_absolute() -> None:
    book = Book(limits(max_position_quantity=500, allow_short=True))
    book.approve(signal(Side.SELL, quantity=500))
    book.reject(signal(Side.SELL, quantity=1), R.MAX_POSITION)


def test_max_position_never_blocks_an_order_that_shrinks_the_position() -> None:
    book = Book(limits(max_position_quantity=600))
    book.approve(signal(quantity=600))
    book.limits = limits(max_position_quantity=100)  # limit lowered under the holding
    book.approve(signal(Side.SELL, quantity=50))  # 550 is still over, but smaller
    book.reject(signal(quantity=1), R.MAX_POSITION)


def test_max_gross_exposure_after_the_order() -> None:
    book = Book(limits(max_gross_exposure=D("1000000")))
    book.approve(signal(quantity=200, price="2500", token=A))  # 500000
    book.approve(signal(quantity=200, price="2500", token=B))  # 1000000 exactly
    detail = book.reject(signal(quantity=1, price="2500", token=B), R.MAX_GROSS_EXPOSURE)
    assert detail == "gross exposure after order 1002500 > max 1000000"


def test_gross_exposure_is_marked_at_this_signals_reference_price() -> None:
    book = Book(limits(max_gross_exposure=D("1000000")))
    book.approve(signal(quantity=200, price="2500", token=A))  # 500000
    # The same 200 shares re-marked at 4995 are 999000; one more share makes 1003995.
    book.reject(signal(quantity=1, price="4995", token=A), R.MAX_GROSS_EXPOSURE)
    assert book.state.last_price[A] == D("4995")
    book.approve(signal(quantity=1, price="4970", token=A))  # 201 x 4970 = 998970


def test_short_selling_refused_unless_allowed() -> None:
    book = Book(limits())
    book.approve(signal(Side.BUY, quantity=100))
    book.approve(signal(Side.SELL, quantity=60))
    book.approve(signal(Side.SELL, quantity=40))  # down to exactly 0
    detail = book.reject(signal(Side.SELL, quantity=1), R.SHORT_SELLING_NOT_ALLOWED)
    assert detail == "sell 1 with position 0 would go short"
    book.limits = limits(allow_short=True)
    book.approve(signal(Side.SELL, quantity=1))
    assert book.state.positions[A] == -1


def test_instrument_allow_list() -> None:
    book = Book(limits(allowed_instruments=frozenset({A})))
    book.approve(signal(token=A))
    book.reject(signal(token=B), R.INSTRUMENT_NOT_ALLOWED)


def test_order_rate_window_is_the_60_seconds_ending_at_the_signal() -> None:
    book = Book(limits(max_orders_per_minute=3))
    for seconds in (0, 10, 20):
        book.approve(signal(ts=T0 + timedelta(seconds=seconds)))
    detail = book.reject(signal(ts=T0 + timedelta(seconds=59.999)), R.ORDER_RATE)
    assert detail.startswith("3 orders approved in the 60 s before")
    # At T0 + 60 s the order at T0 has left the window (T0, T0 + 60]; rejections never count.
    book.approve(signal(ts=T0 + timedelta(seconds=60)))
    assert book.state.recent_order_ts == (
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=20),
        T0 + timedelta(seconds=60),
    )
    book.reject(signal(ts=T0 + timedelta(seconds=61)), R.ORDER_RATE)


# --- evaluation order -------------------------------------------------------------------


def test_first_failing_rule_in_the_documented_order_wins() -> None:
    book = Book(limits(max_order_quantity=10, max_order_notional=D("1"), allowed_instruments={B}))
    # Breaks the allow-list, quantity and notional: the allow-list is checked first.
    book.reject(signal(quantity=11, token=A), R.INSTRUMENT_NOT_ALLOWED)
    # Quantity is checked before notional.
    book.reject(signal(quantity=11, token=B), R.MAX_ORDER_QUANTITY)


def test_rate_limit_is_checked_last() -> None:
    book = Book(limits(max_orders_per_minute=1, max_order_quantity=5))
    book.approve(signal(quantity=1))
    book.reject(signal(quantity=6), R.MAX_ORDER_QUANTITY)
    book.reject(signal(quantity=1), R.ORDER_RATE)


# --- kill switch ----------------------------------------------------------------------


def test_kill_switch_halts_one_strategy() -> None:
    halted = Book(limits(), "momo")
    other = Book(limits(), "meanrev")
    halted.kill_switch = other.kill_switch = KillSwitch(halted_strategies=frozenset({"momo"}))
    # Checked before everything else, even an oversize order.
    detail = halted.reject(signal(quantity=5000, strategy_id="momo"), R.KILL_SWITCH)
    assert detail == "strategy momo halted"
    other.approve(signal(strategy_id="meanrev"))


def test_kill_switch_halts_all() -> None:
    book = Book(limits(), "meanrev")
    book.kill_switch = KillSwitch(halt_all=True)
    book.reject(signal(strategy_id="meanrev"), R.KILL_SWITCH)
    assert KillSwitch(halt_all=True).halts("anything")
    assert not KillSwitch().halts("momo")


# --- daily loss halt ------------------------------------------------------------------


def test_daily_loss_on_unrealized_approves_at_the_boundary() -> None:
    book = Book(limits(max_daily_loss=D("10000")))
    book.approve(signal(quantity=100, price="1000"))
    # Marked at this signal's 900.01: (900.01 - 1000) x 100 = -9999 > -10000.
    book.approve(signal(quantity=1, price="900.01"))
    assert not book.state.halted_for_day


def test_daily_loss_on_unrealized_halts_for_the_rest_of_the_ist_day() -> None:
    book = Book(limits(max_daily_loss=D("10000")))
    book.approve(signal(quantity=100, price="1000"))
    # (900 - 1000) x 100 = -10000 reaches the limit: halt, and the state says so.
    detail = book.reject(
        signal(quantity=1, price="900", ts=T0 + timedelta(minutes=1)), R.DAILY_LOSS_HALT
    )
    assert detail == "daily P&L -10000 <= -10000; halted for 2026-03-02"
    assert book.state.halted_for_day
    # A recovery does not lift the halt, and a closing order is refused as well.
    book.reject(signal(Side.SELL, quantity=100, price="1100"), R.DAILY_LOSS_HALT)
    # 2026-03-02T18:29:59Z is 23:59:59 IST: still the same trading day.
    book.reject(
        signal(price="1100", ts=datetime(2026, 3, 2, 18, 29, 59, tzinfo=UTC)), R.DAILY_LOSS_HALT
    )
    # 18:30Z is midnight IST: a new day, though the UTC date is still 2 March.
    book.approve(signal(quantity=1, price="1100", ts=datetime(2026, 3, 2, 18, 30, tzinfo=UTC)))
    assert book.state.trading_day == date(2026, 3, 3)
    assert not book.state.halted_for_day
    assert book.state.positions[A] == 101  # positions survive the new day


def test_daily_loss_counts_realized_pnl_and_it_resets_next_day() -> None:
    book = Book(limits(max_daily_loss=D("5000")))
    book.approve(signal(quantity=100, price="1000", token=A))
    book.approve(signal(quantity=100, price="500", token=B))
    # An oversize order is refused but still marks B up: +10 x 100 unrealized.
    book.reject(signal(quantity=5000, price="510", token=B), R.MAX_ORDER_QUANTITY)
    # Selling A at 950 sees -5000 on A offset by +1000 on B: -4000, allowed.
    book.approve(signal(Side.SELL, quantity=100, price="950", token=A))
    assert book.state.realized_pnl_today == D("-5000")
    # B back at cost: realized -5000 + unrealized 0 reaches the limit.
    book.reject(signal(quantity=1, price="500", token=B), R.DAILY_LOSS_HALT)
    next_day = T0 + timedelta(days=1)
    book.approve(signal(quantity=1, price="500", token=B, ts=next_day))
    assert book.state.realized_pnl_today == 0
    assert book.state.trading_day == date(2026, 3, 3)


def test_a_late_signal_from_an_earlier_day_does_not_roll_the_day_back() -> None:
    book = Book(limits())
    book.approve(signal(ts=T0 + timedelta(days=1)))
    book.approve(signal(ts=T0))
    assert book.state.trading_day == date(2026, 3, 3)


# --- state transitions and duplicates --------------------------------------------------


def test_approval_applies_the_order_at_average_cost() -> None:
    book = Book(limits())
    book.approve(signal(quantity=100, price="1000"))
    book.approve(signal(quantity=50, price="1030"))
    assert book.state.avg_price[A] == D("1010")  # (100000 + 51500) / 150
    book.approve(signal(Side.SELL, quantity=60, price="1040"))
    assert book.state.positions[A] == 90
    assert book.state.avg_price[A] == D("1010")
    assert book.state.realized_pnl_today == D("1800")  # (1040 - 1010) x 60
    assert book.state.last_price[A] == D("1040")


def test_rejection_records_only_the_mark_and_the_seen_id() -> None:
    book = Book(limits(max_order_quantity=100))
    book.approve(signal(quantity=100, price="1000"))
    before = book.state
    book.send(signal(quantity=101, price="990"), "rejected-1")
    assert book.state.last_price[A] == D("990")
    assert book.state.seen_signal_ids[-1] == "rejected-1"
    unchanged = {"last_price", "seen_signals"}
    assert book.state.model_dump(exclude=unchanged) == before.model_dump(exclude=unchanged)


def test_duplicate_signal_changes_nothing_and_restates_the_decision() -> None:
    book = Book(limits(max_orders_per_minute=2, max_order_quantity=100))
    first = book.send(signal(quantity=10), "sig-1")
    assert first.rejection is None and not first.duplicate
    state = book.state
    again = book.send(signal(quantity=10), "sig-1")
    assert again.duplicate and again.rejection is None
    assert again.new_state == state  # no second position, no rate-limit slot used
    assert book.state.positions[A] == 10

    book.send(signal(quantity=500), "sig-2")
    replay = book.send(signal(quantity=500), "sig-2")
    assert replay.duplicate
    assert replay.rejection is not None and replay.rejection.reason is R.MAX_ORDER_QUANTITY
    book.approve(signal(quantity=10))  # the second rate slot was still free


def test_seen_signals_are_bounded_oldest_dropped() -> None:
    book = Book(limits())
    book.send(signal(), "first")
    book.state = book.state.model_copy(
        update={"seen_signals": book.state.seen_signals * SEEN_SIGNALS_BOUND}
    )
    book.send(signal(), "newest")
    assert len(book.state.seen_signals) == SEEN_SIGNALS_BOUND
    assert book.state.seen_signal_ids[-1] == "newest"


def test_state_of_another_strategy_is_a_bug() -> None:
    with pytest.raises(ValueError, match="strategy"):
        evaluate(signal(strategy_id="x"), "e", limits(), StrategyRiskState.new("momo"), NO_KILL)


def test_state_json_round_trip() -> None:
    book = Book(limits(max_order_quantity=100, allow_short=True))
    book.approve(signal(quantity=100, price="1000.05"))
    book.approve(signal(quantity=3, price="1000.10"))  # average 103003.20 / 103
    book.approve(signal(Side.SELL, quantity=7, price="1500", token=B))
    book.reject(signal(quantity=101), R.MAX_ORDER_QUANTITY)
    data = json.loads(json.dumps(book.state.to_json_dict()))
    assert data["realized_pnl_today"] == "0"
    assert data["avg_price"][str(A)] == str(book.state.avg_price[A])
    restored = StrategyRiskState.from_json_dict(data)
    assert restored == book.state
    assert restored.seen("e4") is not None


# --- limits configuration ---------------------------------------------------------------


def test_limits_from_settings() -> None:
    risk = RiskLimits.from_settings(RiskSettings(allowed_instruments=" 738561, 408065 ,"))
    assert risk.allowed_instruments == frozenset({A, B})
    assert risk.max_order_quantity == 1_000 and risk.max_daily_loss == D("50000")
    assert RiskLimits.from_settings(RiskSettings()).allowed_instruments is None


def test_limits_from_settings_refuses_a_bad_token() -> None:
    with pytest.raises(RiskConfigError, match=r"allowed_instruments: 'RELIANCE'"):
        RiskLimits.from_settings(RiskSettings(allowed_instruments="738561,RELIANCE"))


def test_overrides_apply_and_validate() -> None:
    base = RiskLimits.from_settings(RiskSettings())
    tuned = base.with_overrides({"max_order_quantity": 50, "allowed_instruments": "408065"})
    assert tuned.max_order_quantity == 50 and tuned.allowed_instruments == frozenset({B})
    assert tuned.max_position_quantity == base.max_position_quantity
    assert base.with_overrides({"allowed_instruments": None}).allowed_instruments is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_order_quantity": 0}, r"max_order_quantity: Input should be greater than 0"),
        ({"max_daily_loss": "-5"}, r"max_daily_loss: Input should be greater than 0"),
        ({"max_orders_per_minute": True}, r"max_orders_per_minute: .*not a boolean"),
        ({"max_order_qty": 5}, r"unknown risk limit field\(s\) max_order_qty"),
        ({"allowed_instruments": [0]}, r"allowed_instruments\.0: Input should be greater than 0"),
        ({"allowed_instruments": []}, r"allowed_instruments: an empty list would block"),
    ],
)
def test_bad_overrides_name_the_field_and_rule(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RiskConfigError, match=message):
        RiskLimits.from_settings(RiskSettings()).with_overrides(overrides)
