"""A portfolio's recent fill ids are an IndexedLog once it has booked a fill: every
duplicate answer must equal a scan of the ids it holds, through eviction, a portfolio
read back from JSON, and a branching history (an older portfolio booking again)."""

from __future__ import annotations

import json
import random
from decimal import Decimal

from models.events import Side
from tables.indexed_log import IndexedLog
from tables.portfolio import RECENT_FILL_IDS_BOUND, Portfolio
from tests.factories import fill


def book(portfolio: Portfolio, fill_id: str) -> Portfolio | None:
    side = Side.BUY if portfolio.positions.get(738561) is None else Side.SELL
    if side is Side.SELL and portfolio.positions[738561].quantity == 0:
        side = Side.BUY
    return portfolio.apply_fill(fill(fill_id, side, 1, "100"))


def test_duplicate_answers_equal_a_scan() -> None:
    rng = random.Random(11)
    history = [Portfolio.new("momo", Decimal("1000000"))]
    issued: list[str] = []
    for step in range(5 * RECENT_FILL_IDS_BOUND):
        # Mostly the newest portfolio; sometimes an older one (a branch), or one read
        # back from its JSON (a plain tuple, scanned until its next fill).
        roll = rng.random()
        if roll < 0.1:
            base = rng.choice(history[-50:])
        elif roll < 0.15:
            base = Portfolio.from_json_dict(json.loads(json.dumps(history[-1].to_json_dict())))
        else:
            base = history[-1]
        # A new id, or one issued before (in the window or evicted from it).
        fill_id = f"f{step}" if not issued or rng.random() < 0.7 else rng.choice(issued)
        expected_duplicate = fill_id in tuple(base.recent_fill_ids)
        after = book(base, fill_id)
        assert (after is None) == expected_duplicate, (step, fill_id)
        if after is not None:
            assert after.recent_fill_ids[-1] == fill_id
            assert len(after.recent_fill_ids) <= RECENT_FILL_IDS_BOUND
            assert isinstance(after.recent_fill_ids, IndexedLog)
            history.append(after)
            issued.append(fill_id)
    # Eviction was exercised: some portfolio held the full bound.
    assert max(len(p.recent_fill_ids) for p in history) == RECENT_FILL_IDS_BOUND


def test_indexed_ids_are_a_plain_tuple_to_json_and_equality() -> None:
    p = Portfolio.new("momo", Decimal("1000000"))
    for i in range(3):
        booked = book(p, f"f{i}")
        assert booked is not None
        p = booked
    assert isinstance(p.recent_fill_ids, IndexedLog)
    data = p.to_json_dict()
    assert data["recent_fill_ids"] == ["f0", "f1", "f2"]
    assert Portfolio.from_json_dict(data) == p
