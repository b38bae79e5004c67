"""The strategy runner's feedback: a strategy's fills and rejections, repartitioned by
instrument, booked once each into the own-positions table, and handed to the strategy
with its next tick (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.domain.own_position import OwnPosition
from alpha_panda.settings import Stage
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    Tables,
)
from models.events import ExecutionMode, MarketTick, RejectionReason, Side
from strategies.base import BaseStrategy, StrategyParams
from strategies.factory import STRATEGY_REGISTRY
from tests.factories import RELIANCE, T0, fill, rejection, signal, tick
from tests.unit.stages.harness import running_stage

KEY = f"peek:{RELIANCE}"


class Peeking(BaseStrategy[StrategyParams]):
    """Buys while flat and sells while long, on every tick, saying what it sees of its
    booked position."""

    kind: ClassVar[str] = "peeking"
    params_model: ClassVar[type[StrategyParams]] = StrategyParams

    def _history_size(self) -> int:
        return 1

    def _entry_reason(self, tick: MarketTick) -> str | None:
        own = self.own_position
        if own is None:
            return "blind"
        return f"booked {own.quantity} @ {own.avg_price}, {own.rejection_count} refused"

    def _exit_reason(self, tick: MarketTick) -> str | None:
        return self._entry_reason(tick)


@pytest.fixture(autouse=True)
def _peeking_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STRATEGY_REGISTRY, Peeking.kind, Peeking)


def config() -> db.RuntimeConfig:
    return runtime_config(
        [
            db.validated_strategy(
                "peek", "peeking", [(RELIANCE, "R")], {"quantity": 5}, updated_at=T0
            )
        ]
    )


async def test_fills_and_rejections_are_forwarded_keyed_by_instrument_bytes_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paper = fill("f1", Side.BUY, 5, "100", strategy_id="peek")
    live = fill("f2", Side.BUY, 5, "100", strategy_id="peek", mode=ExecutionMode.LIVE)
    refused = rejection(signal(strategy_id="peek"), RejectionReason.MAX_POSITION)
    async with running_stage(
        Stage.STRATEGY_RUNNER, "strategy-feedback", tmp_path, monkeypatch, config()
    ) as stage:
        await stage.deliver(ORDERS_FILLED_PAPER, paper, offset=0, event_id="fill-1")
        await stage.deliver(ORDERS_FILLED_LIVE, live, offset=0, event_id="fill-2")
        await stage.deliver(SIGNALS_REJECTED, refused, offset=0, event_id="rej-1")
        forwarded = [(r.topic, r.key) for r in stage.sent]
        assert forwarded == [
            (RUNNER_FILLS_BY_INSTRUMENT.name, str(RELIANCE).encode()),
            (RUNNER_FILLS_BY_INSTRUMENT.name, str(RELIANCE).encode()),
            (RUNNER_REJECTIONS_BY_INSTRUMENT.name, str(RELIANCE).encode()),
        ]
        assert [e.id for e in stage.sent_to(RUNNER_FILLS_BY_INSTRUMENT)] == ["fill-1", "fill-2"]
        (again,) = stage.sent_to(RUNNER_REJECTIONS_BY_INSTRUMENT)
        assert (again.id, again.data) == ("rej-1", refused)
        # Each says where it was read, so a replay that forwards it again is recognised.
        assert [r.headers for r in stage.sent] == [
            (("x-source", b"orders.filled.paper:0:0"),),
            (("x-source", b"orders.filled.live:0:0"),),
            (("x-source", b"trading.signals.rejected:0:0"),),
        ]


async def test_each_fill_and_rejection_is_booked_once_and_the_strategy_sees_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bought = fill("f1", Side.BUY, 5, "100.05", "0.50", strategy_id="peek")
    refused = rejection(
        signal(Side.BUY, 5, strategy_id="peek"), RejectionReason.MAX_POSITION, signal_event_id="s2"
    )
    async with running_stage(
        Stage.STRATEGY_RUNNER, "strategy-runner", tmp_path, monkeypatch, config()
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, bought, offset=0)
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, bought, offset=0)  # redelivered
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, bought, offset=1)  # produced twice
        await stage.deliver(RUNNER_REJECTIONS_BY_INSTRUMENT, refused, offset=0)
        await stage.deliver(RUNNER_REJECTIONS_BY_INSTRUMENT, refused, offset=0)
        own: OwnPosition = stage.table(Tables.OWN_POSITIONS)[KEY]
        assert (own.quantity, own.avg_price, own.fees_paid, own.fill_count) == (
            5,
            bought.fill_price,
            bought.fees,
            1,
        )
        assert (own.rejection_count, own.refused_buy_shares) == (1, 5)

        # It bought on its first tick, seeing nothing booked; it sells on its next.
        await stage.deliver(MARKET_TICKS, tick("101", 1), offset=1)
        reasons = [s.data.reason for s in stage.sent_to(SIGNALS_GENERATED)]
        assert reasons == ["booked 0 @ 0, 0 refused", "booked 5 @ 100.05, 1 refused"]


async def test_a_record_forwarded_again_by_a_replay_is_not_booked_again_whatever_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deep replay forwards old fills again, at new offsets of the runner's own topic,
    # with ids long gone from the entry's recent ids: the source position recognises them.
    async with running_stage(
        Stage.STRATEGY_RUNNER, "strategy-runner", tmp_path, monkeypatch, config()
    ) as stage:

        def read_at(offset: int) -> list[tuple[str, bytes]]:
            return [("x-source", f"orders.filled.paper:2:{offset}".encode())]

        first = fill("f1", Side.BUY, 5, "100", strategy_id="peek")
        older = fill("f0", Side.BUY, 5, "99", strategy_id="peek")  # read at 6, booked then
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, first, offset=0, headers=read_at(7))
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, older, offset=1, headers=read_at(6))
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, first, offset=2, headers=read_at(7))
        own: OwnPosition = stage.table(Tables.OWN_POSITIONS)[KEY]
        assert (own.quantity, own.fill_count) == (5, 1)
        assert own.source_offsets == {"orders.filled.paper:2": 7}
        later = fill("f2", Side.SELL, 5, "101", strategy_id="peek")
        await stage.deliver(RUNNER_FILLS_BY_INSTRUMENT, later, offset=3, headers=read_at(8))
        own = stage.table(Tables.OWN_POSITIONS)[KEY]
        assert (own.quantity, own.fill_count, own.realized_pnl) == (0, 2, 5)
