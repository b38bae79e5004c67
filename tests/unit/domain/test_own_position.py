"""A strategy's own position as booked (issue 16): the booking of fills and rejections,
the host handing it to the strategy, and the MIS square-off taking refused orders out."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from alpha_panda.domain.own_position import NOTHING_BOOKED, RECENT_FILLS_BOUND, OwnPosition
from alpha_panda.domain.session_rules import SQUARE_OFF_REASON
from alpha_panda.domain.strategy_host import StrategyHost, StrategyStateEntry
from models.events import (
    MarketTick,
    OrderFill,
    RejectedSignal,
    RejectionReason,
    Side,
    TradingSignal,
)
from strategies.base import StrategyConfig
from strategies.momentum import MomentumParams, SimpleMomentumStrategy
from tests.factories import T0, fill, rejection, signal
from tests.unit.domain.test_session_rules import (
    MONDAY,
    RISE_THEN_HOLD,
    TOKEN,
    WEDNESDAY,
    drive,
    host_with,
    ist,
)

D = Decimal


def booked(*events: OrderFill | RejectedSignal, onto: OwnPosition = NOTHING_BOOKED) -> OwnPosition:
    """``onto`` after each of ``events``, none of them a duplicate."""
    own = onto
    for event in events:
        after = own.book_fill(event) if isinstance(event, OrderFill) else own.book_rejection(event)
        assert after is not None
        own = after
    return own


# --- booking -------------------------------------------------------------------------


def test_a_buy_then_a_partial_sell_then_the_rest() -> None:
    own = booked(fill("f1", Side.BUY, 10, "100", "2.50", ts=T0))
    assert (own.quantity, own.avg_price, own.opened_ts, own.fill_count) == (10, D("100"), T0, 1)
    later = T0 + timedelta(minutes=1)
    own = booked(fill("f2", Side.SELL, 4, "103", "1.25", ts=later), onto=own)
    assert (own.quantity, own.avg_price, own.realized_pnl) == (6, D("100"), D("12"))
    assert own.opened_ts == T0  # still the position the first fill opened
    own = booked(fill("f3", Side.SELL, 6, "99", ts=later), onto=own)
    assert (own.quantity, own.avg_price, own.opened_ts) == (0, D("0"), None)
    assert own.realized_pnl == D("6")  # 12 - 6
    assert own.fees_paid == D("3.75")
    assert [f.fill_id for f in own.recent_fills] == ["f1", "f2", "f3"]


def test_partial_fills_of_one_order_average_exactly() -> None:
    own = booked(fill("p1", Side.BUY, 1, "100"), fill("p2", Side.BUY, 2, "101"))
    assert own.quantity == 3
    assert own.avg_price == (D("100") + 2 * D("101")) / 3  # as the portfolio averages


def test_a_fill_or_a_rejection_delivered_twice_is_booked_once() -> None:
    once = booked(fill("f1", Side.BUY, 10, "100"))
    assert once.book_fill(fill("f1", Side.BUY, 10, "100")) is None
    refused = rejection(signal(Side.BUY, 5), RejectionReason.MAX_POSITION, signal_event_id="s9")
    after = once.book_rejection(refused)
    assert after is not None and after.book_rejection(refused) is None
    assert (after.quantity, after.rejection_count, after.refused_buy_shares) == (10, 1, 5)


def test_a_record_read_again_from_its_source_is_not_booked_again_whatever_its_id() -> None:
    paper = "orders.filled.paper:1"
    own = NOTHING_BOOKED.book_fill(fill("f1", Side.BUY, 10, "100"), (paper, 41))
    assert own is not None and own.source_offsets == {paper: 41}
    # Another fill id at or below that offset of the same partition: read before.
    assert own.book_fill(fill("f0", Side.BUY, 10, "100"), (paper, 40)) is None
    refused = rejection(signal(Side.BUY, 5), RejectionReason.MAX_POSITION, signal_event_id="s1")
    assert own.book_rejection(refused, (paper, 41)) is None
    # Other partitions, and later offsets, are new.
    live = own.book_fill(fill("f2", Side.SELL, 4, "101"), ("orders.filled.live:1", 3))
    assert live is not None and live.quantity == 6
    rejected = own.book_rejection(refused, ("trading.signals.rejected:4", 0))
    assert rejected is not None and rejected.source_offsets == {
        paper: 41,
        "trading.signals.rejected:4": 0,
    }
    assert OwnPosition.from_json_dict(rejected.to_json_dict()) == rejected


def test_rejections_count_and_only_the_unforeseen_ones_are_refused_shares() -> None:
    own = booked(
        rejection(signal(Side.BUY, 5), RejectionReason.MAX_POSITION, signal_event_id="a"),
        rejection(signal(Side.SELL, 3), RejectionReason.KILL_SWITCH, signal_event_id="b"),
        # The host takes the trading day's refusals out itself, when it emits them.
        rejection(signal(Side.BUY, 7), RejectionReason.MIS_CUTOFF, signal_event_id="c"),
        rejection(signal(Side.BUY, 7), RejectionReason.MARKET_CLOSED, signal_event_id="d"),
    )
    assert own.rejection_count == 4
    assert (own.refused_buy_shares, own.refused_sell_shares) == (5, 3)
    assert own.last_rejection is not None and own.last_rejection.signal_event_id == "d"
    assert own.quantity == 0


def test_the_view_is_read_only_bounded_and_survives_its_table_encoding() -> None:
    fills = [fill(f"f{i}", Side.BUY, 1, "100.05", "0.01") for i in range(RECENT_FILLS_BOUND + 2)]
    own = booked(*fills, rejection(signal(), RejectionReason.MAX_POSITION))
    with pytest.raises(dataclasses.FrozenInstanceError):
        own.quantity = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        own.source_offsets["orders.filled.paper:0"] = 0  # type: ignore[index]
    assert len(own.recent_fills) == RECENT_FILLS_BOUND
    assert own.recent_fills[-1].fill_id == fills[-1].fill_id
    assert OwnPosition.from_json_dict(own.to_json_dict()) == own
    assert OwnPosition.from_json_dict(NOTHING_BOOKED.to_json_dict()) == NOTHING_BOOKED


# --- the host --------------------------------------------------------------------------


def drive_with(
    host: StrategyHost, ticks: list[tuple[datetime, str]], own: dict[int, OwnPosition]
) -> tuple[list[TradingSignal], list[OwnPosition | None]]:
    """Feed ``ticks``; tick i is handed ``own`` at the latest index <= i (a view that
    changes when a fill or rejection arrives). Returns the signals and what the strategy
    saw on each tick."""
    [assignment] = host.assignments_for(TOKEN)
    entry = None
    out: list[TradingSignal] = []
    seen: list[OwnPosition | None] = []
    view = NOTHING_BOOKED
    for offset, (ts, price) in enumerate(ticks):
        view = own.get(offset, view)
        tick = MarketTick(
            instrument_token=TOKEN, symbol="RELIANCE", last_price=D(price), volume=1, exchange_ts=ts
        )
        outcome = host.on_tick(assignment, tick, f"t{offset}", offset, entry, view)
        out += [s for _, s in outcome.signals]
        entry = outcome.new_entry or entry
        seen.append(host._cache[assignment.key].strategy.own_position)
    return out, seen


def refused_buy(reason: RejectionReason = RejectionReason.MAX_POSITION) -> OwnPosition:
    buy = signal(Side.BUY, 5, "101", TOKEN, ts=ist(MONDAY, 15, 1), strategy_id="mis-1")
    return booked(rejection(buy, reason, signal_event_id="buy-1"))


def test_the_host_hands_the_strategy_its_view_with_each_tick() -> None:
    bought = booked(fill("f1", Side.BUY, 5, "101", strategy_id="mis-1", token=TOKEN))
    _, seen = drive_with(host_with("CNC"), RISE_THEN_HOLD, {2: bought})
    assert seen[:2] == [NOTHING_BOOKED, NOTHING_BOOKED]
    assert seen[2:] == [bought] * (len(RISE_THEN_HOLD) - 2)


def test_a_buy_refused_by_risk_is_not_sold_at_the_square_off() -> None:
    signals, _ = drive_with(host_with("MIS"), RISE_THEN_HOLD, {2: refused_buy()})
    assert [(s.side, s.signal_ts) for s in signals] == [
        (Side.BUY, ist(MONDAY, 15, 1)),  # refused by risk; its rejection arrives at 15:10
        # no SELL at 15:20: the host took the refused BUY out of the implied position,
        (Side.BUY, ist(MONDAY, 15, 21)),  # so the strategy is flat and tries again
    ]


def test_a_refused_buy_still_in_flight_at_the_square_off_is_taken_out_when_it_arrives() -> None:
    # Its rejection reaches the runner only after the square-off tick (a slow pipeline):
    # that square-off sold 5; the strategy then is flat, and the late rejection of the
    # BUY does not turn into a negative position or a second exit.
    signals, _ = drive_with(host_with("MIS"), RISE_THEN_HOLD, {4: refused_buy()})
    sides = [(s.side, s.signal_ts) for s in signals]
    assert sides[:2] == [(Side.BUY, ist(MONDAY, 15, 1)), (Side.SELL, ist(MONDAY, 15, 20))]
    assert all(s.side is Side.BUY for s in signals[2:])


def test_a_fill_still_in_flight_at_the_square_off_is_still_squared_off() -> None:
    # The booked position lags (its fill has not arrived): the square-off sells what the
    # strategy bought all the same, as without a view.
    signals, _ = drive_with(host_with("MIS"), RISE_THEN_HOLD, {})
    assert [(s.side, s.quantity) for s in signals[:2]] == [(Side.BUY, 5), (Side.SELL, 5)]
    assert signals[1].reason.startswith(SQUARE_OFF_REASON)


def test_a_refused_exit_is_squared_off_and_the_trading_days_refusals_are_not_taken_twice() -> None:
    ticks = [
        (ist(MONDAY, 15, 0), "100"),
        (ist(MONDAY, 15, 1), "101"),  # BUY 5, filled
        (ist(MONDAY, 15, 2), "100"),  # -1 %: SELL 5, refused (kill switch)
        (ist(MONDAY, 15, 10), "100"),
        (ist(MONDAY, 15, 20), "100"),  # square-off: it still holds the 5
        (ist(MONDAY, 15, 21), "101"),  # BUY: refused for the cut-off (foreseen)
        (ist(MONDAY, 15, 22), "101"),
    ]
    sell = signal(Side.SELL, 5, "100", TOKEN, ts=ist(MONDAY, 15, 2), strategy_id="mis-1")
    after_fill = booked(fill("f1", Side.BUY, 5, "101", strategy_id="mis-1", token=TOKEN))
    refused_exit = booked(
        rejection(sell, RejectionReason.KILL_SWITCH, signal_event_id="sell-1"), onto=after_fill
    )
    late_buy = signal(Side.BUY, 5, "101", TOKEN, ts=ist(MONDAY, 15, 21), strategy_id="mis-1")
    cut_off = booked(
        rejection(late_buy, RejectionReason.MIS_CUTOFF, signal_event_id="buy-2"), onto=refused_exit
    )
    signals, _ = drive_with(host_with("MIS"), ticks, {2: after_fill, 3: refused_exit, 6: cut_off})
    assert [(s.side, s.quantity, s.signal_ts) for s in signals] == [
        (Side.BUY, 5, ist(MONDAY, 15, 1)),
        (Side.SELL, 5, ist(MONDAY, 15, 2)),
        (Side.SELL, 5, ist(MONDAY, 15, 20)),  # the refused exit's shares, squared off
        (Side.BUY, 5, ist(MONDAY, 15, 21)),
        # nothing at 15:22: the cut-off's refusal was taken out when the BUY went out
    ]


def test_refused_shares_taken_out_survive_a_restart_through_the_entry() -> None:
    host = host_with("MIS")
    [assignment] = host.assignments_for(TOKEN)
    own = refused_buy()
    entry = None
    for offset, (ts, price) in enumerate(RISE_THEN_HOLD[:4]):
        tick = MarketTick(
            instrument_token=TOKEN, symbol="RELIANCE", last_price=D(price), volume=1, exchange_ts=ts
        )
        outcome = host.on_tick(assignment, tick, f"t{offset}", offset, entry, own)
        entry = outcome.new_entry or entry
    assert entry is not None and entry.refused == (5, 0)
    # As the table stores it: its changelog JSON, read back by a restarted runner.
    assert entry.to_json_dict()["rf"] == [5, 0]
    entry = StrategyStateEntry.from_json_dict(entry.to_json_dict())
    # A restarted runner's host, fed the next trading day: a BUY filled, then the
    # square-off. The BUY refused on Monday was taken out then, not a second time now.
    restarted = host_with("MIS")
    [assignment] = restarted.assignments_for(TOKEN)
    wednesday = [
        (ist(WEDNESDAY, 9, 15), "100"),
        (ist(WEDNESDAY, 9, 16), "101"),  # BUY 5
        (ist(WEDNESDAY, 15, 20), "101"),  # square-off: SELL 5
    ]
    out: list[TradingSignal] = []
    for offset, (ts, price) in enumerate(wednesday, start=4):
        tick = MarketTick(
            instrument_token=TOKEN, symbol="RELIANCE", last_price=D(price), volume=1, exchange_ts=ts
        )
        outcome = restarted.on_tick(assignment, tick, f"t{offset}", offset, entry, own)
        out += [s for _, s in outcome.signals]
        entry = outcome.new_entry or entry
    assert [(s.side, s.quantity, s.signal_ts) for s in out] == [
        (Side.BUY, 5, ist(WEDNESDAY, 9, 16)),
        (Side.SELL, 5, ist(WEDNESDAY, 15, 20)),
    ]


def test_without_a_view_the_host_squares_off_as_before() -> None:
    signals = drive(host_with("MIS"), RISE_THEN_HOLD)
    assert [s.side for s in signals] == [Side.BUY, Side.SELL, Side.BUY]


# --- the walk-through of docs/STRATEGIES.md ----------------------------------------------


class BookedExit(SimpleMomentumStrategy):
    kind = "booked_exit"

    def _exit_reason(self, tick: MarketTick) -> str | None:
        own = self.own_position
        if own is not None and own.quantity <= 0:
            return None  # nothing booked (yet, or ever): nothing to sell
        return super()._exit_reason(tick)


def test_the_walk_through_strategy_exits_only_what_was_booked() -> None:
    config = StrategyConfig(strategy_id="bx", instrument_token=TOKEN, symbol="RELIANCE")
    strategy = BookedExit(config, MomentumParams(lookback=1, threshold_pct=D("0.5"), quantity=5))
    prices = ["100", "101", "99", "97"]  # BUY on 101; falls of 2 % after it
    bought = booked(fill("f1", Side.BUY, 5, "101", strategy_id="bx", token=TOKEN))
    views = [NOTHING_BOOKED, NOTHING_BOOKED, NOTHING_BOOKED, bought]
    sides = []
    for i, (price, view) in enumerate(zip(prices, views, strict=True)):
        strategy.see_own_position(view)
        tick = MarketTick(
            instrument_token=TOKEN,
            symbol="RELIANCE",
            last_price=D(price),
            volume=1,
            exchange_ts=T0 + timedelta(seconds=i),
        )
        sides += [(i, s.side) for s in strategy.on_tick(tick)]
    # 99 would have sold, but nothing was booked yet; 97 sells once the fill is booked.
    assert sides == [(1, Side.BUY), (3, Side.SELL)]
