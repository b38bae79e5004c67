"""The kill switch reaches execution: the trading engine's handlers (through its own agent,
``agent.test_context()``) refuse a halted strategy's approved signals and cancel its resting
LIMIT orders; live signals are refused on the embedded broker unless accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.settings import BrokerSettings, Stage, ZerodhaSettings
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
)
from alpha_panda.zerodha_trader import Refused
from models.events import ExecutionMode, RejectionReason, TradingSignal, ValidatedSignal
from tables.specs import PENDING_ORDERS
from tests.factories import RELIANCE, signal, strategy, tick
from tests.unit.stages.harness import running_stage


def validated(sig: TradingSignal, signal_event_id: str) -> ValidatedSignal:
    return ValidatedSignal(signal_event_id=signal_event_id, signal=sig, validated_ts=sig.signal_ts)


def halted(config: db.RuntimeConfig, *scopes: str) -> db.RuntimeConfig:
    strategies = frozenset(s for s in scopes if s != db.HALT_ALL)
    return config.model_copy(
        update={
            "halt_all": db.HALT_ALL in scopes,
            "halted_strategies": strategies,
            "halt_reasons": dict.fromkeys(scopes, "test"),
        }
    )


async def test_a_halt_refuses_approved_signals_and_cancels_resting_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config([strategy("momo"), strategy("calm")])
    async with running_stage(
        Stage.TRADING_ENGINE, "engine-execute", tmp_path, monkeypatch, config
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        for offset, sid in enumerate(["momo", "calm"]):
            limit = validated(signal(strategy_id=sid, limit="99.00"), f"rest-{sid}")
            await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, limit, offset=offset)
        assert len(stage.table(PENDING_ORDERS.name)[str(RELIANCE)]) == 2

        await stage.reconfigure(halted(config, "momo"))
        # Approved before the halt, arriving after it: not executed.
        await stage.deliver(
            ENGINE_SIGNALS_BY_INSTRUMENT, validated(signal(strategy_id="momo"), "late"), offset=2
        )
        # A tick through both limits: the halted strategy's order is cancelled, not filled.
        await stage.deliver(MARKET_TICKS, tick("98.90", 1), offset=1)
        assert stage.table(PENDING_ORDERS.name)[str(RELIANCE)] == ()

        # The other strategy trades on.
        await stage.deliver(
            ENGINE_SIGNALS_BY_INSTRUMENT, validated(signal(strategy_id="calm"), "calm"), offset=3
        )

    fills = [f.data.signal_event_id for f in stage.sent_to(ORDERS_FILLED_PAPER)]
    assert fills == ["rest-calm", "calm"]
    rejected = {r.data.signal_event_id: r.data for r in stage.sent_to(SIGNALS_REJECTED)}
    assert set(rejected) == {"late", "rest-momo"}
    assert all(r.reason is RejectionReason.KILL_SWITCH for r in rejected.values())
    assert rejected["late"].detail == "strategy momo halted: not executed"
    assert rejected["rest-momo"].detail == "strategy momo halted: resting LIMIT order cancelled"
    assert all(r.rejected_by == "trading-engine" for r in rejected.values())


async def test_after_resume_the_strategy_executes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config([strategy("momo")])
    async with running_stage(
        Stage.TRADING_ENGINE, "engine-execute", tmp_path, monkeypatch, halted(config, "*")
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        await stage.deliver(
            ENGINE_SIGNALS_BY_INSTRUMENT, validated(signal(strategy_id="momo"), "a"), offset=0
        )
        await stage.reconfigure(config)
        await stage.deliver(
            ENGINE_SIGNALS_BY_INSTRUMENT, validated(signal(strategy_id="momo"), "b"), offset=1
        )
    [rejected] = stage.sent_to(SIGNALS_REJECTED)
    assert rejected.data.signal_event_id == "a"
    assert rejected.data.detail == "all trading halted: not executed"
    assert [f.data.signal_event_id for f in stage.sent_to(ORDERS_FILLED_PAPER)] == ["b"]


async def test_a_halted_live_signal_never_reaches_kite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config([strategy("live", "live")])
    submitted: list[str] = []

    async def submit(signal_event_id: str, sig: TradingSignal, product: str) -> Refused:
        submitted.append(signal_event_id)
        return Refused(RejectionReason.BROKER_REJECTED, "recorded by the test")

    async with running_stage(
        Stage.TRADING_ENGINE,
        "engine-execute",
        tmp_path,
        monkeypatch,
        halted(config, "live"),
        zerodha=ZerodhaSettings(api_key="k", api_secret="s"),  # type: ignore[arg-type]
        broker=BrokerSettings(kind="redpanda"),  # type: ignore[arg-type]
    ) as stage:
        engine = stage.ctx.stage_handlers
        monkeypatch.setattr(engine.live, "submit", submit)  # type: ignore[attr-defined]
        sig = signal(strategy_id="live", mode=ExecutionMode.LIVE)
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, validated(sig, "x"), offset=0)
    assert submitted == []
    [rejected] = stage.sent_to(SIGNALS_REJECTED)
    assert rejected.data.reason is RejectionReason.KILL_SWITCH


async def test_live_signals_are_refused_on_the_embedded_broker_unless_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config([strategy("live", "live"), strategy("paper")])
    async with running_stage(
        Stage.TRADING_ENGINE,
        "engine-execute",
        tmp_path,
        monkeypatch,
        config,
        zerodha=ZerodhaSettings(api_key="k", api_secret="s"),  # type: ignore[arg-type]
        broker=BrokerSettings(kind="embedded"),  # type: ignore[arg-type]
    ) as stage:
        engine = stage.ctx.stage_handlers
        assert engine.live is None  # type: ignore[attr-defined]  # no trader, no Kite session
        ok, detail = await stage.ctx.health_checks["zerodha"]()
        assert not ok and "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER" in detail
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        live = signal(strategy_id="live", mode=ExecutionMode.LIVE)
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, validated(live, "live"), offset=0)
        paper = signal(strategy_id="paper")
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, validated(paper, "paper"), offset=1)
    [rejected] = stage.sent_to(SIGNALS_REJECTED)
    assert rejected.data.signal_event_id == "live"
    assert rejected.data.reason is RejectionReason.LIVE_TRADING_NOT_CONFIGURED
    assert "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER" in rejected.data.detail
    # Paper keeps working.
    assert [f.data.signal_event_id for f in stage.sent_to(ORDERS_FILLED_PAPER)] == ["paper"]
