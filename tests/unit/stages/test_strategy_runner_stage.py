"""The strategy runner's agent: one strategy raising does not starve the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.settings import Stage
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED
from models.events import Side
from strategies.factory import STRATEGY_REGISTRY
from tests.factories import RELIANCE, T0, tick
from tests.unit.stages.harness import running_stage
from tests.unit.strategies import Exploding


async def test_a_strategy_that_raises_is_skipped_and_the_others_still_trade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STRATEGY_REGISTRY, Exploding.kind, Exploding)
    strategies = [
        db.validated_strategy(
            "bad", Exploding.kind, [(RELIANCE, "R")], {"quantity": 1}, updated_at=T0
        ),
        db.validated_strategy(
            "good",
            "momentum",
            [(RELIANCE, "R")],
            {"lookback": 1, "threshold_pct": "0.5", "quantity": 10},
            updated_at=T0,
        ),
    ]
    async with running_stage(
        Stage.STRATEGY_RUNNER,
        "strategy-runner",
        tmp_path,
        monkeypatch,
        runtime_config(strategies),
    ) as stage:

        def failures() -> float | None:  # alpha_panda_messages_failed{kind="strategy"}
            return stage.ctx.metrics.registry.get_sample_value(
                "alpha_panda_messages_failed_total",
                {"stage": stage.ctx.source, "topic": MARKET_TICKS.name, "kind": "strategy"},
            )

        for offset, price in enumerate(["12", "13", "14"]):
            await stage.deliver(MARKET_TICKS, tick(price, offset), offset=offset)

        by_strategy = [(s.data.strategy_id, s.data.side) for s in stage.sent_to(SIGNALS_GENERATED)]
        # "bad" entered on 12 and raised on 13; "good" bought on 13 (+8.3 %) all the same.
        assert by_strategy == [("bad", Side.BUY), ("good", Side.BUY)]
        assert failures() == 1
        assert stage.dead_lettered == []  # the tick itself was fine: no DLQ, no retry
        states = stage.table("strategy-state")
        assert states[f"good:{RELIANCE}"].offset == 2
        assert states[f"bad:{RELIANCE}"].offset == 2  # it carried on after its failure
