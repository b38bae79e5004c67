"""The trading day in risk and in the strategy host: market hours, MIS cut-off, square-off,
and the daily counters rolling at the IST day. All in event time."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest

from alpha_panda.db import InstrumentRef, RuntimeConfig, StrategyConfigRecord
from alpha_panda.domain.paper_trader import PaperTrader
from alpha_panda.domain.products import StrategyProducts
from alpha_panda.domain.risk_rules import evaluate
from alpha_panda.domain.session_rules import (
    SQUARE_OFF_REASON,
    SessionRules,
    feed_pause,
    square_off_due,
)
from alpha_panda.domain.strategy_host import StrategyHost
from alpha_panda.market_calendar import IST, NseCalendar
from alpha_panda.settings import RiskSettings
from models.events import (
    ExecutionMode,
    MarketTick,
    OrderFill,
    RejectionReason,
    Side,
    TradingSignal,
)
from tables.risk_state import KillSwitch, RiskLimits, StrategyRiskState
from tests.factories import signal as stub_signal

D = Decimal
R = RejectionReason
RULES = SessionRules(NseCalendar.default(), timedelta(minutes=10))
MONDAY = date(2026, 3, 2)
WEDNESDAY = date(2026, 3, 4)  # Tuesday 3 March is Holi
TOKEN = 738561
# The MIS strategy every test here trades as.
signal = partial(stub_signal, strategy_id="mis-1")


def ist(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=IST).astimezone(UTC)


class Book:
    def __init__(self, **overrides: Any) -> None:
        self.limits = RiskLimits.from_settings(RiskSettings()).with_overrides(overrides)
        self.state = StrategyRiskState.new("mis-1")
        self.n = 0

    def send(self, sig: TradingSignal) -> RejectionReason | None:
        self.n += 1
        decision = evaluate(sig, f"e{self.n}", self.limits, self.state, KillSwitch(), RULES)
        self.state = decision.new_state
        return decision.rejection.reason if decision.rejection else None


@pytest.mark.parametrize(
    ("hh", "mm", "expected"),
    [
        (9, 14, R.MARKET_CLOSED),
        (9, 15, None),
        (15, 19, None),
        (15, 29, None),
        (15, 30, R.MARKET_CLOSED),
        (15, 45, R.MARKET_CLOSED),  # the closing session trades at the close price only
        (9, 5, R.MARKET_CLOSED),  # pre-open, not allowed by default
        (3, 0, R.MARKET_CLOSED),
    ],
)
def test_an_exit_is_judged_by_market_hours_alone(hh: int, mm: int, expected: Any) -> None:
    # A CNC SELL from flat (shorts allowed): only the market-hours rule applies.
    book = Book(allow_short=True, product="CNC")
    assert book.send(signal(Side.SELL, ts=ist(MONDAY, hh, mm))) is expected


def test_weekend_and_holiday_signals_are_market_closed_with_the_reason() -> None:
    book = Book()
    decision = evaluate(
        signal(Side.BUY, ts=ist(date(2026, 3, 3), 10, 0)),
        "x",
        book.limits,
        book.state,
        KillSwitch(),
        RULES,
    )
    assert decision.rejection is not None
    assert decision.rejection.reason is R.MARKET_CLOSED
    assert "holiday: Holi" in decision.rejection.detail
    assert book.send(signal(Side.BUY, ts=ist(date(2026, 3, 7), 10, 0))) is R.MARKET_CLOSED


def test_pre_open_is_admitted_per_strategy() -> None:
    assert Book().send(signal(Side.BUY, ts=ist(MONDAY, 9, 3))) is R.MARKET_CLOSED
    assert Book(allow_pre_open=True).send(signal(Side.BUY, ts=ist(MONDAY, 9, 3))) is None
    # ... but not the gap between pre-open and the open.
    assert (
        Book(allow_pre_open=True).send(signal(Side.BUY, ts=ist(MONDAY, 9, 10))) is R.MARKET_CLOSED
    )


def test_no_new_mis_entry_after_square_off_but_exits_pass() -> None:
    book = Book()
    assert book.send(signal(Side.BUY, ts=ist(MONDAY, 15, 19, 59))) is None
    assert book.send(signal(Side.BUY, ts=ist(MONDAY, 15, 20))) is R.MIS_CUTOFF
    assert book.state.positions[TOKEN] == 10
    assert book.send(signal(Side.SELL, ts=ist(MONDAY, 15, 21))) is None
    assert book.state.positions[TOKEN] == 0


def test_cnc_entries_are_not_cut_off() -> None:
    assert Book(product="CNC").send(signal(Side.BUY, ts=ist(MONDAY, 15, 25))) is None


def test_without_session_rules_any_hour_is_judged_as_before() -> None:
    book = Book()
    decision = evaluate(
        signal(Side.BUY, ts=ist(MONDAY, 3, 0)), "x", book.limits, book.state, KillSwitch()
    )
    assert decision.approved


def test_counters_roll_at_the_ist_day_in_session_time() -> None:
    # Monday: a loss halt at 15:00 IST. The next trading day's open (Wednesday 09:15 IST,
    # 03:45Z) starts afresh: halt lifted, realized P&L and the rate window reset.
    book = Book(max_daily_loss="1000")
    assert book.send(signal(Side.BUY, ts=ist(MONDAY, 15, 0), quantity=100, price="100")) is None
    assert book.send(signal(Side.SELL, ts=ist(MONDAY, 15, 0, 1), quantity=100, price="95")) is None
    assert book.send(signal(Side.BUY, ts=ist(MONDAY, 15, 0, 2), quantity=100, price="95")) is None
    assert book.state.realized_pnl_today == D("-500")
    # -500 realized and (90 - 95) x 100 unrealized reach -1000: halted for Monday.
    assert book.send(signal(Side.BUY, ts=ist(MONDAY, 15, 1), quantity=1, price="90")) is (
        R.DAILY_LOSS_HALT
    )
    assert book.state.halted_for_day
    wednesday_open = ist(WEDNESDAY, 9, 15)
    assert wednesday_open == datetime(2026, 3, 4, 3, 45, tzinfo=UTC)
    assert book.send(signal(Side.SELL, ts=wednesday_open, quantity=100, price="95")) is None
    assert book.state.trading_day == WEDNESDAY
    assert book.state.realized_pnl_today == 0  # sold at cost; Monday's -500 is gone
    assert len(book.state.recent_order_ts) == 1
    assert not book.state.halted_for_day


def test_square_off_due_only_in_the_regular_session() -> None:
    opened = ist(MONDAY, 10, 0)
    assert not square_off_due(RULES, ist(MONDAY, 15, 19, 59), opened)
    assert square_off_due(RULES, ist(MONDAY, 15, 20), opened)
    assert square_off_due(RULES, ist(MONDAY, 15, 29, 59), opened)
    assert not square_off_due(RULES, ist(MONDAY, 15, 45), opened)  # closing session
    # A position carried into a later trading day goes at that day's first regular tick.
    assert square_off_due(RULES, ist(WEDNESDAY, 9, 15), opened)
    assert not square_off_due(RULES, ist(WEDNESDAY, 9, 5), opened)  # pre-open: wait


def test_feed_pause_waits_for_the_next_session() -> None:
    assert feed_pause(RULES.calendar, ist(MONDAY, 10, 0)) == 0
    assert feed_pause(RULES.calendar, ist(MONDAY, 9, 7, 58), longest=60) == 0
    assert feed_pause(RULES.calendar, ist(MONDAY, 9, 8), longest=60) == 60  # gap to 09:15
    assert feed_pause(RULES.calendar, ist(MONDAY, 9, 14, 58), longest=60) == 2
    assert feed_pause(RULES.calendar, ist(MONDAY, 16, 0)) == 5


# --- the strategy host -----------------------------------------------------------------


def host_with(product: str | None, rules: SessionRules | None = RULES) -> StrategyHost:
    host = StrategyHost(sessions=rules)
    host.configure(
        RuntimeConfig(
            strategies=(
                StrategyConfigRecord(
                    strategy_id="mis-1",
                    kind="momentum",
                    instruments=(InstrumentRef(token=TOKEN, symbol="RELIANCE"),),
                    parameters={"lookback": 1, "threshold_pct": "0.5", "quantity": 5},
                    enabled=True,
                    execution_mode=ExecutionMode.PAPER,
                    risk_limits={} if product is None else {"product": product},
                    updated_at=datetime(2026, 1, 1, tzinfo=UTC),
                ),
            ),
            halt_all=False,
            halted_strategies=frozenset(),
            halt_reasons={},
        )
    )
    return host


def drive(host: StrategyHost, ticks: list[tuple[datetime, str]]) -> list[TradingSignal]:
    [assignment] = host.assignments_for(TOKEN)
    entry = None
    out: list[TradingSignal] = []
    for offset, (ts, price) in enumerate(ticks):
        tick = MarketTick(
            instrument_token=TOKEN, symbol="RELIANCE", last_price=D(price), volume=1, exchange_ts=ts
        )
        outcome = host.on_tick(assignment, tick, f"t{offset}", offset, entry)
        out += [s for _, s in outcome.signals]
        entry = outcome.new_entry or entry
    return out


RISE_THEN_HOLD = [
    (ist(MONDAY, 15, 0), "100"),
    (ist(MONDAY, 15, 1), "101"),  # +1% >= 0.5%: BUY 5
    (ist(MONDAY, 15, 10), "101"),  # no move: hold
    (ist(MONDAY, 15, 20), "101.2"),  # square-off time: SELL 5
    (ist(MONDAY, 15, 21), "103"),  # +1.8%: would BUY, but the MIS cut-off refuses it
    (ist(MONDAY, 15, 22), "103"),
]


def test_host_squares_off_an_mis_position_at_the_configured_time() -> None:
    signals = drive(host_with(None), RISE_THEN_HOLD)  # product from the default: MIS
    assert [(s.side, s.quantity, s.signal_ts) for s in signals] == [
        (Side.BUY, 5, ist(MONDAY, 15, 1)),
        (Side.SELL, 5, ist(MONDAY, 15, 20)),
        (Side.BUY, 5, ist(MONDAY, 15, 21)),  # goes out and is refused by risk
    ]
    assert signals[1].reason.startswith(SQUARE_OFF_REASON)
    assert "15:20 IST" in signals[1].reason
    # The refused entry did not leave the strategy believing it is long: nothing to
    # square off at 15:22.


def test_host_square_off_and_risk_agree_end_to_end() -> None:
    book = Book()
    outcomes = [book.send(s) for s in drive(host_with("MIS"), RISE_THEN_HOLD)]
    assert outcomes == [None, None, R.MIS_CUTOFF]
    assert book.state.positions[TOKEN] == 0


def test_host_leaves_cnc_positions_alone() -> None:
    signals = drive(host_with("CNC"), RISE_THEN_HOLD)
    assert [(s.side, s.signal_ts) for s in signals] == [(Side.BUY, ist(MONDAY, 15, 1))]


def test_host_without_session_rules_never_squares_off() -> None:
    signals = drive(host_with("MIS", rules=None), RISE_THEN_HOLD)
    assert [s.side for s in signals] == [Side.BUY]


def test_host_squares_off_a_position_carried_overnight_at_the_next_open() -> None:
    ticks = [
        (ist(MONDAY, 15, 0), "100"),
        (ist(MONDAY, 15, 1), "101"),  # BUY; then no tick before the close
        (ist(WEDNESDAY, 9, 5), "101"),  # pre-open: not yet
        (ist(WEDNESDAY, 9, 15), "101"),  # first regular tick: square off
    ]
    signals = drive(host_with("MIS"), ticks)
    assert [(s.side, s.signal_ts) for s in signals] == [
        (Side.BUY, ist(MONDAY, 15, 1)),
        (Side.SELL, ist(WEDNESDAY, 9, 15)),
    ]


def test_host_state_survives_export_with_the_opening_time() -> None:
    host = host_with("MIS")
    [assignment] = host.assignments_for(TOKEN)
    ticks = RISE_THEN_HOLD[:2]
    entry = None
    for offset, (ts, price) in enumerate(ticks):
        tick = MarketTick(
            instrument_token=TOKEN, symbol="RELIANCE", last_price=D(price), volume=1, exchange_ts=ts
        )
        entry = host.on_tick(assignment, tick, f"t{offset}", offset, entry).new_entry
    assert entry is not None
    assert entry.state["opened_ts"] == "2026-03-02T09:31:00Z"
    # A fresh host (a restart) restores it and squares off at 15:20.
    fresh = host_with("MIS")
    tick = MarketTick(
        instrument_token=TOKEN,
        symbol="RELIANCE",
        last_price=D("101"),
        volume=1,
        exchange_ts=ist(MONDAY, 15, 20),
    )
    outcome = fresh.on_tick(fresh.assignments_for(TOKEN)[0], tick, "t9", 9, entry)
    assert [s.side for _, s in outcome.signals] == [Side.SELL]


def test_a_square_off_fill_carries_its_reason_and_plain_fills_encode_as_before() -> None:
    trader = PaperTrader(slippage_bps=D("0"), fees=StrategyProducts().fees_of)
    exit_signal = signal(Side.SELL, ts=ist(MONDAY, 15, 20)).model_copy(
        update={"reason": f"{SQUARE_OFF_REASON}: intraday (MIS) position closed at 15:20 IST"}
    )
    fill = trader.fill_market(exit_signal, "sig-1", D("1000"), exit_signal.signal_ts)
    encoded = json.loads(fill.model_dump_json())
    assert encoded["reason"].startswith(SQUARE_OFF_REASON)
    assert OrderFill.model_validate_json(fill.model_dump_json()) == fill
    plain = trader.fill_market(
        signal(Side.BUY, ts=ist(MONDAY, 10, 0)), "sig-2", D("1000"), ist(MONDAY, 10, 0)
    )
    assert "reason" not in json.loads(plain.model_dump_json())


def test_close_position_and_set_position_on_the_strategy_itself() -> None:
    host = host_with("MIS")
    [assignment] = host.assignments_for(TOKEN)
    strategy = host._strategy_for(assignment, None)  # a fresh instance: flat
    tick = MarketTick(
        instrument_token=TOKEN,
        symbol="RELIANCE",
        last_price=D("100"),
        volume=1,
        exchange_ts=ist(MONDAY, 15, 25),
    )
    assert strategy.close_position(tick, "x") is None  # nothing to close
    strategy.set_position(5, ist(MONDAY, 10, 0))
    assert (strategy.position, strategy.opened_ts) == (5, ist(MONDAY, 10, 0))
    exit_signal = strategy.close_position(tick, "forced")
    assert exit_signal is not None
    assert (exit_signal.side, exit_signal.quantity, exit_signal.reason) == (Side.SELL, 5, "forced")
    assert (strategy.position, strategy.opened_ts) == (0, None)
    with pytest.raises(ValueError, match="long-only"):
        strategy.set_position(-1, None)
