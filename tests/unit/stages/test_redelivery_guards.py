"""Every redelivery guard, through the stage's own agent (``agent.test_context()``).

A redelivered record is the same record at the same offset again (a crash before the
offset commit). Each test asserts what the stage emits and books the first time, and
that the redelivery emits and books nothing more (or only what carries the same ids).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.settings import Stage
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
)
from models.events import RejectionReason, Side, ValidatedSignal
from tests.factories import RELIANCE, T0, fill, rejection, signal, strategy, tick
from tests.unit.stages.harness import running_stage

D = Decimal


def config(*strategy_ids: str) -> db.RuntimeConfig:
    return runtime_config([strategy(sid) for sid in strategy_ids])


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
        entry = states[f"a:{RELIANCE}"]
        assert entry.offset == 1

        await stage.deliver(MARKET_TICKS, tick("101", 1), offset=1)  # redelivered
        # The offset decides, not the content: even a record that would sell is skipped.
        await stage.deliver(MARKET_TICKS, tick("90", 5), offset=1)
        assert len(stage.sent_to(SIGNALS_GENERATED)) == 1
        assert states[f"a:{RELIANCE}"] == entry

        await stage.deliver(MARKET_TICKS, tick("90", 5), offset=2)  # the next new one
        assert [s.data.side for s in stage.sent_to(SIGNALS_GENERATED)] == [Side.BUY, Side.SELL]
        assert states[f"a:{RELIANCE}"].offset == 2


async def test_risk_manager_decides_a_redelivered_signal_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.RISK_MANAGER, "risk-decide", tmp_path, monkeypatch, config("a")
    ) as stage:
        buy = signal(strategy_id="a", quantity=10)
        await stage.deliver(RISK_SIGNALS_BY_STRATEGY, buy, offset=0, event_id="sig-1")
        (validated,) = stage.sent_to(SIGNALS_VALIDATED)
        state = stage.table(Tables.RISK_STATE)["a"]
        assert state.position(RELIANCE) == 10

        await stage.deliver(RISK_SIGNALS_BY_STRATEGY, buy, offset=0, event_id="sig-1")
        # The same decision under the same id (downstream drops it); nothing booked twice.
        again = stage.sent_to(SIGNALS_VALIDATED)
        assert [v.id for v in again] == [validated.id, validated.id]
        assert stage.table(Tables.RISK_STATE)["a"].position(RELIANCE) == 10
        assert stage.sent_to(SIGNALS_REJECTED) == []

        # A new signal (a new id) is decided on the state as it stands: 10 more.
        await stage.deliver(RISK_SIGNALS_BY_STRATEGY, buy, offset=1, event_id="sig-2")
        assert stage.table(Tables.RISK_STATE)["a"].position(RELIANCE) == 20


async def test_trading_engine_ignores_a_stale_tick_and_a_redelivered_limit_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.TRADING_ENGINE, "engine-execute", tmp_path, monkeypatch, config()
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 5), offset=0)
        order = ValidatedSignal(
            signal_event_id="sig-1", signal=signal(limit="99.90", ts=T0), validated_ts=T0
        )
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, order, offset=0, event_id="val-1")
        pending = stage.table(Tables.PENDING_ORDERS)
        assert [o.signal_event_id for o in pending[str(RELIANCE)]] == ["sig-1"]

        # The same validated signal again: it is resting already, nothing new rests.
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, order, offset=0, event_id="val-1")
        assert [o.signal_event_id for o in pending[str(RELIANCE)]] == ["sig-1"]
        assert stage.sent == []

        # An older tick (redelivered after a newer one) neither moves the last price
        # nor fills the resting order, though its price would.
        prices = stage.table(Tables.LAST_PRICES)
        before = prices[str(RELIANCE)]
        await stage.deliver(MARKET_TICKS, tick("99.85", 3), offset=1)
        assert prices[str(RELIANCE)] == before
        assert stage.sent_to(ORDERS_FILLED_PAPER) == []

        await stage.deliver(MARKET_TICKS, tick("99.85", 6), offset=2)  # a new one fills
        (filled,) = stage.sent_to(ORDERS_FILLED_PAPER)
        assert (filled.data.signal_event_id, filled.data.quantity) == ("sig-1", 10)
        assert pending[str(RELIANCE)] == ()


async def test_portfolio_books_a_fill_once_by_offset_and_by_fill_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.PORTFOLIO_MANAGER,
        "portfolio-fills",
        tmp_path,
        monkeypatch,
        config(),
    ) as stage:
        bought = fill("f1", Side.BUY, 10, "100", "1.50", strategy_id="a")
        await stage.deliver(ORDERS_FILLED_PAPER, bought, offset=3, event_id="e-f1")
        portfolios = stage.table(Tables.PORTFOLIOS)
        booked = portfolios["a"]
        start = booked.cash + D("1001.50")
        assert booked.positions[RELIANCE].quantity == 10
        assert len(stage.table(Tables.RECENT_FILLS)["a"]) == 1

        # Redelivered at its offset: the portfolio's source offsets say it is applied.
        await stage.deliver(ORDERS_FILLED_PAPER, bought, offset=3, event_id="e-f1")
        # The offset decides, not the fill id (whose memory is bounded, see
        # RECENT_FILL_IDS_BOUND): whatever is read at an applied offset is not booked.
        other = fill("f2", Side.BUY, 5, "100", strategy_id="a")
        await stage.deliver(ORDERS_FILLED_PAPER, other, offset=3, event_id="e-f2")
        assert portfolios["a"] == booked

        # The same fill at a new offset (an upstream replay): recorded, not booked.
        await stage.deliver(ORDERS_FILLED_PAPER, bought, offset=4, event_id="e-f1")
        again = portfolios["a"]
        assert again.cash == booked.cash == start - D("1001.50")
        assert again.positions[RELIANCE].quantity == 10 and again.trade_count == 1
        assert len(stage.table(Tables.RECENT_FILLS)["a"]) == 1
        assert stage.sent == [] and stage.dead_lettered == []


async def test_portfolio_marks_a_price_once_per_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.PORTFOLIO_MANAGER,
        "portfolio-marks",
        tmp_path,
        monkeypatch,
        config(),
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=5)
        prices = stage.table(Tables.LAST_PRICES)
        assert prices[str(RELIANCE)].price == D("100")
        # At or below the last offset marked: skipped, whatever price it carries.
        await stage.deliver(MARKET_TICKS, tick("100.05", 1), offset=5)
        await stage.deliver(MARKET_TICKS, tick("100.10", 2), offset=4)
        assert prices[str(RELIANCE)].price == D("100")
        assert prices[str(RELIANCE)].offset == 5
        await stage.deliver(MARKET_TICKS, tick("100.05", 3), offset=6)
        assert prices[str(RELIANCE)].price == D("100.05")


async def test_trading_engine_fills_a_redelivered_market_order_under_the_same_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.TRADING_ENGINE, "engine-execute", tmp_path, monkeypatch, config()
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        order = ValidatedSignal(signal_event_id="sig-1", signal=signal(), validated_ts=T0)
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, order, offset=0, event_id="val-1")
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, order, offset=0, event_id="val-1")
        # The engine keeps no memory of market orders: the replayed fill carries the
        # same fill id and event id, which the portfolio manager books once.
        first, again = stage.sent_to(ORDERS_FILLED_PAPER)
        assert (again.id, again.data.fill_id) == (first.id, first.data.fill_id)
        assert again.data == first.data


async def test_portfolio_keeps_a_redelivered_rejection_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.PORTFOLIO_MANAGER,
        "portfolio-rejections",
        tmp_path,
        monkeypatch,
        config(),
    ) as stage:
        refused = rejection(signal(strategy_id="a"), RejectionReason.KILL_SWITCH, "halted")
        for offset in (0, 0, 1):  # redelivered, then replayed upstream at a new offset
            await stage.deliver(SIGNALS_REJECTED, refused, offset=offset, event_id="rej-1")
        ((event_id, kept),) = stage.table(Tables.RECENT_REJECTIONS)[f"a:{RELIANCE}"].rejections()
        assert (event_id, kept.reason) == ("rej-1", RejectionReason.KILL_SWITCH)
        await stage.deliver(SIGNALS_REJECTED, refused, offset=2, event_id="rej-2")
        assert len(stage.table(Tables.RECENT_REJECTIONS)[f"a:{RELIANCE}"]) == 2
