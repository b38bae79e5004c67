"""Every redelivery guard, through the stage's own agent (``agent.test_context()``).

A redelivered record is the same record at the same offset again (a crash before the
offset commit). Each test asserts what the stage emits and books the first time, and
that the redelivery emits and books nothing more (or only what carries the same ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.settings import Stage
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED
from models.events import Side
from tests.factories import RELIANCE, T0, tick
from tests.unit.stages.harness import running_stage

FAST = {"lookback": 1, "threshold_pct": "0.5", "quantity": 10}


def config(*strategy_ids: str) -> db.RuntimeConfig:
    return runtime_config(
        [
            db.validated_strategy(sid, "momentum", [(RELIANCE, "RELIANCE")], FAST, updated_at=T0)
            for sid in strategy_ids
        ]
    )


async def test_strategy_runner_skips_a_tick_at_or_below_the_stored_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.STRATEGY_RUNNER, "strategy-runner", tmp_path, monkeypatch, config("a")
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        await stage.deliver(MARKET_TICKS, tick("101", 1), offset=1)
        (buy,) = stage.sent_to(SIGNALS_GENERATED)
        assert buy.data.side is Side.BUY
        states = stage.table("strategy-state")
        entry: dict[str, Any] = states[f"a:{RELIANCE}"]
        assert entry["offset"] == 1

        await stage.deliver(MARKET_TICKS, tick("101", 1), offset=1)  # redelivered
        # The offset decides, not the content: even a record that would sell is skipped.
        await stage.deliver(MARKET_TICKS, tick("90", 5), offset=1)
        assert len(stage.sent_to(SIGNALS_GENERATED)) == 1
        assert states[f"a:{RELIANCE}"] == entry

        await stage.deliver(MARKET_TICKS, tick("90", 5), offset=2)  # the next new one
        assert [s.data.side for s in stage.sent_to(SIGNALS_GENERATED)] == [Side.BUY, Side.SELL]
        assert states[f"a:{RELIANCE}"]["offset"] == 2
