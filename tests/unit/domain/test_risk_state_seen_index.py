"""The index behind StrategyRiskState.seen answers exactly as the scan it replaces."""

from __future__ import annotations

import random

from models.events import RejectionReason
from tables.risk_state import SEEN_SIGNALS_BOUND, SeenSignal, StrategyRiskState


def scanned(state: StrategyRiskState, event_id: str) -> SeenSignal | None:
    """The original definition: the newest decision of that id in the stored tuple."""
    for seen in reversed(state.seen_signals):
        if seen.event_id == event_id:
            return seen
    return None


def test_index_agrees_with_a_scan_through_eviction_and_repeated_ids() -> None:
    rng = random.Random(7)
    reasons = [None, RejectionReason.MAX_ORDER_QUANTITY, RejectionReason.ORDER_RATE]
    state = StrategyRiskState.new("s1")
    ids = [f"sig-{n}" for n in range(SEEN_SIGNALS_BOUND + 300)]
    for step in range(3 * SEEN_SIGNALS_BOUND):
        # Mostly new ids, sometimes an id seen before (possibly already evicted).
        event_id = ids[min(step, len(ids) - 1)] if rng.random() < 0.8 else rng.choice(ids)
        state = state.with_seen(event_id, rng.choice(reasons))
        if step % 97 == 0:
            # Other transitions copy the state: the index must travel with it.
            state = state.with_mark(1, state.realized_pnl_today)
        for probe in [*rng.sample(ids, 25), event_id, "never-seen"]:
            assert state.seen(probe) == scanned(state, probe), (step, probe)
    assert len(state.seen_signals) == SEEN_SIGNALS_BOUND


def test_every_state_of_a_branching_history_answers_as_its_own_scan() -> None:
    # The index is shared by successive states; appending to an older state (a branch)
    # or repeating an id must not change what any state, old or new, answers.
    rng = random.Random(11)
    states = [StrategyRiskState.new("s1")]
    for step in range(4 * SEEN_SIGNALS_BOUND):
        base = states[-1] if rng.random() < 0.9 else rng.choice(states)
        event_id = f"sig-{step}" if rng.random() < 0.9 else f"sig-{rng.randrange(step + 1)}"
        states.append(base.with_seen(event_id, rng.choice([None, RejectionReason.ORDER_RATE])))
        if step % 50 == 0:
            for state in rng.sample(states, min(len(states), 8)):
                for probe in [f"sig-{rng.randrange(step + 1)}" for _ in range(30)]:
                    assert state.seen(probe) == scanned(state, probe), (step, probe)


def test_earlier_states_keep_their_own_answers() -> None:
    first = StrategyRiskState.new("s1").with_seen("a", None)
    second = first.with_seen("b", RejectionReason.ORDER_RATE)
    assert first.seen("b") is None
    assert second.seen("a") == SeenSignal(event_id="a", rejection=None)
    assert second.seen("b") == SeenSignal(event_id="b", rejection=RejectionReason.ORDER_RATE)


def test_stored_shape_and_equality_unchanged() -> None:
    state = StrategyRiskState.new("s1").with_seen("a", None).with_seen("b", None)
    plain = StrategyRiskState.from_json_dict(state.to_json_dict())
    assert state.to_json_dict()["seen_signals"] == [
        {"event_id": "a", "rejection": None},
        {"event_id": "b", "rejection": None},
    ]
    assert plain == state
    assert state.model_dump_json() == plain.model_dump_json()
    # A state read back from JSON (no index yet) answers by scanning, then indexes.
    assert plain.seen("a") == SeenSignal(event_id="a", rejection=None)
    assert plain.with_seen("c", None).seen("a") == SeenSignal(event_id="a", rejection=None)
