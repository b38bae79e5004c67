"""The strategy host: routing, replay bookkeeping, state hand-over, re-parameterisation."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.domain.strategy_host import (
    ENTRY_VERSION,
    Assignment,
    StrategyHost,
    StrategyStateEntry,
    entry_is_behind,
)
from models.envelope import derived_event_id
from models.events import Side, TradingSignal
from strategies.factory import STRATEGY_REGISTRY
from tests.factories import INFY, RELIANCE, T0, tick
from tests.unit.strategies import Exploding

# lookback 1, 0.5 %: a rise of 1 % buys, a fall of 1 % sells.
FAST = {"lookback": 1, "threshold_pct": "0.5", "quantity": 10}
PRICES = ["100", "101", "102", "100", "101", "103", "102", "100"]


EXPLODING = Exploding.kind


@pytest.fixture(autouse=True)
def _exploding_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """``exploding`` as a kind, as an installed plug-in would be, for this module only."""
    monkeypatch.setitem(STRATEGY_REGISTRY, Exploding.kind, Exploding)


def record(
    strategy_id: str,
    tokens: Sequence[int] = (RELIANCE,),
    parameters: dict[str, Any] | None = None,
    *,
    kind: str = "momentum",
    enabled: bool = True,
) -> db.StrategyConfigRecord:
    return db.validated_strategy(
        strategy_id,
        kind,
        [(t, f"S{t}") for t in tokens],
        FAST if parameters is None and kind == "momentum" else parameters or {"quantity": 1},
        enabled=enabled,
        updated_at=T0,
    )


def host_for(*records: db.StrategyConfigRecord) -> StrategyHost:
    host = StrategyHost()
    assert host.configure(runtime_config(records)) == []
    return host


def feed(
    host: StrategyHost,
    assignment: Assignment,
    prices: Sequence[str],
    entry: StrategyStateEntry | None = None,
    start: int = 0,
) -> tuple[list[tuple[str, TradingSignal]], StrategyStateEntry | None]:
    """Ticks at offsets start, start+1, ... as the runner hands them over; returns every
    (event id, signal) emitted and the last entry written."""
    emitted: list[tuple[str, TradingSignal]] = []
    for i, price in enumerate(prices, start):
        outcome = host.on_tick(assignment, tick(price, i), f"tick-{i}", i, entry)
        emitted.extend(outcome.signals)
        if outcome.new_entry is not None:
            entry = outcome.new_entry
    return emitted, entry


def test_routing_follows_the_enabled_strategies_and_their_instruments() -> None:
    host = host_for(
        record("a", [RELIANCE, INFY]),
        record("b", [INFY]),
        record("off", [RELIANCE], enabled=False),
    )
    assert [a.key for a in host.assignments_for(RELIANCE)] == [f"a:{RELIANCE}"]
    assert sorted(a.key for a in host.assignments_for(INFY)) == [f"a:{INFY}", f"b:{INFY}"]
    assert host.assignments_for(1) == []
    assert host.assignment_count == 3
    # A new configuration replaces the routing: nothing of the old one lingers.
    assert host.configure(runtime_config([record("b", [RELIANCE])])) == []
    assert [a.key for a in host.assignments_for(RELIANCE)] == [f"b:{RELIANCE}"]
    assert host.assignments_for(INFY) == []


def test_signals_carry_ids_derived_from_the_tick_and_the_entry_records_the_offset() -> None:
    host = host_for(record("a"))
    (assignment,) = host.assignments_for(RELIANCE)
    first = host.on_tick(assignment, tick("100", 0), "tick-0", 7, None)
    assert first.signals == []
    assert first.new_entry is not None
    assert first.new_entry.version == ENTRY_VERSION and first.new_entry.offset == 7
    assert first.new_entry.price == Decimal("100")
    assert first.new_entry.fingerprint == assignment.fingerprint
    second = host.on_tick(assignment, tick("101", 1), "tick-1", 8, first.new_entry)
    ((event_id, signal),) = second.signals
    assert event_id == derived_event_id("tick-1", "a", 0)
    assert (signal.side, signal.quantity, signal.strategy_id) == (Side.BUY, 10, "a")
    assert second.new_entry is not None and second.new_entry.offset == 8


def test_a_redelivered_tick_changes_nothing_and_emits_nothing() -> None:
    host = host_for(record("a"))
    (assignment,) = host.assignments_for(RELIANCE)
    _, entry = feed(host, assignment, ["100", "101"])
    assert entry is not None and entry.offset == 1
    for offset in (0, 1):  # both already folded in (the second one emitted a BUY)
        again = host.on_tick(assignment, tick("101", offset), f"tick-{offset}", offset, entry)
        assert again.signals == [] and again.new_entry is None
        assert not entry_is_behind(entry, offset)
    assert entry_is_behind(entry, 2) and entry_is_behind(None, 0)
    # The next new tick still decides on the state as it was: a fall of 1 % sells.
    nxt = host.on_tick(assignment, tick("99.9", 2), "tick-2", 2, entry)
    assert [s.side for _, s in nxt.signals] == [Side.SELL]


def test_a_restarted_host_resumes_from_the_entry_as_if_never_stopped() -> None:
    uninterrupted = host_for(record("a"))
    (assignment,) = uninterrupted.assignments_for(RELIANCE)
    expected, expected_entry = feed(uninterrupted, assignment, PRICES)

    before = host_for(record("a"))
    (assignment,) = before.assignments_for(RELIANCE)
    head, entry = feed(before, assignment, PRICES[:4])
    after = host_for(record("a"))  # a new process: no cached strategy, only the table
    (assignment,) = after.assignments_for(RELIANCE)
    tail, last_entry = feed(after, assignment, PRICES[4:], entry, start=4)

    assert [s.side for _, s in expected] == [Side.BUY, Side.SELL, Side.BUY, Side.SELL]
    assert head + tail == expected
    assert last_entry == expected_entry


def test_the_table_wins_over_a_cached_strategy_that_folded_in_something_else() -> None:
    # After a rebalance the table may hold an older entry than the cached instance has
    # seen; the host must rebuild from the entry, not carry on with the cache.
    host = host_for(record("a"))
    (assignment,) = host.assignments_for(RELIANCE)
    _, entry = feed(host, assignment, ["100"])
    feed(host, assignment, ["101"], entry, start=1)  # cached now holds a BUY position
    replayed = host.on_tick(assignment, tick("101", 1), "tick-1", 1, entry)
    assert [s.side for _, s in replayed.signals] == [Side.BUY]  # the same BUY, again


def test_a_parameter_change_gets_a_new_fingerprint_and_keeps_compatible_state() -> None:
    host = host_for(record("a"))
    (old,) = host.assignments_for(RELIANCE)
    _, entry = feed(host, old, ["100", "101"])  # long 10 after the BUY
    assert entry is not None
    host.configure(runtime_config([record("a", parameters={**FAST, "threshold_pct": "5"})]))
    (new,) = host.assignments_for(RELIANCE)
    assert new.fingerprint != old.fingerprint
    # The state is the same shape: the position carries over, and the new threshold
    # (5 %) decides: a fall of 1 % no longer sells, a fall of 6 % does.
    held = host.on_tick(new, tick("100", 2), "tick-2", 2, entry)
    assert held.signals == [] and held.new_entry is not None
    assert held.new_entry.fingerprint == new.fingerprint
    assert held.new_entry.state["position"] == 10
    sold = host.on_tick(new, tick("94", 3), "tick-3", 3, held.new_entry)
    assert [(s.side, s.quantity) for _, s in sold.signals] == [(Side.SELL, 10)]


def test_a_new_kind_starts_afresh_but_unreadable_state_under_the_same_one_is_an_error() -> None:
    host = host_for(record("a"))
    (momentum,) = host.assignments_for(RELIANCE)
    _, entry = feed(host, momentum, ["100", "101"])
    assert entry is not None
    host.configure(runtime_config([record("a", kind=EXPLODING)]))
    (exploding,) = host.assignments_for(RELIANCE)
    fresh = host.on_tick(exploding, tick("102", 2), "tick-2", 2, entry)
    assert [s.side for _, s in fresh.signals] == [Side.BUY]  # flat again: it enters
    assert fresh.new_entry is not None and fresh.new_entry.state["kind"] == "exploding"

    corrupt = entry._replace(fingerprint=momentum.fingerprint, state={"version": -1})
    with pytest.raises(ValueError, match="invalid strategy state"):
        host_for(record("a")).on_tick(momentum, tick("102", 2), "tick-2", 2, corrupt)


def test_one_strategy_raising_leaves_the_others_on_the_same_tick_untouched() -> None:
    host = host_for(record("good"), record("bad", kind=EXPLODING))
    assignments = {a.strategy_id: a for a in host.assignments_for(RELIANCE)}
    entries: dict[str, StrategyStateEntry | None] = {"good": None, "bad": None}
    emitted: dict[str, list[Side]] = {"good": [], "bad": []}
    raised: list[tuple[str, int]] = []
    for offset, price in enumerate(["12", "13", "14"]):
        for sid in ("bad", "good"):  # the broken one first, as the runner may meet it
            try:
                outcome = host.on_tick(
                    assignments[sid], tick(price, offset), f"t{offset}", offset, entries[sid]
                )
            except RuntimeError:
                raised.append((sid, offset))
                continue  # what the runner does: count it, log it, go on to the next
            emitted[sid] += [s.side for _, s in outcome.signals]
            if outcome.new_entry is not None:
                entries[sid] = outcome.new_entry
    # 12 -> 13 is +8.3 %: the good one buys on the tick the bad one raised on.
    assert raised == [("bad", 1)]
    assert emitted == {"good": [Side.BUY], "bad": [Side.BUY]}
    good, bad = entries["good"], entries["bad"]
    assert good is not None and good.offset == 2
    # The bad one entered on its first tick and stays long; the tick it failed on wrote
    # no entry, the next one did.
    assert bad is not None and bad.offset == 2 and bad.state["position"] == 1


class _ExplodingWide(Exploding):
    """Exploding with a three-price window, so a half-taken tick would show in it."""

    kind = "exploding-wide"

    def _history_size(self) -> int:
        return 3


def test_after_a_strategy_raises_the_next_tick_starts_from_the_stored_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(STRATEGY_REGISTRY, _ExplodingWide.kind, _ExplodingWide)
    live = host_for(record("bad", kind=_ExplodingWide.kind))
    (assignment,) = live.assignments_for(RELIANCE)
    first = live.on_tick(assignment, tick("12", 0), "t0", 0, None).new_entry
    with pytest.raises(RuntimeError):
        live.on_tick(assignment, tick("13", 1), "t1", 1, first)
    after_failure = live.on_tick(assignment, tick("14", 2), "t2", 2, first).new_entry

    # A runner restarted after the failure sees only the stored entry: the same answer.
    restarted = host_for(record("bad", kind=_ExplodingWide.kind))
    (same,) = restarted.assignments_for(RELIANCE)
    replayed = restarted.on_tick(same, tick("14", 2), "t2", 2, first).new_entry
    assert after_failure is not None and replayed is not None
    assert after_failure.state["prices"] == replayed.state["prices"] == ["12", "14"]
