"""The trading engine charges and places each strategy's orders with that strategy's product
(through its own agent, ``agent.test_context()``; alpha_panda/domain/products.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpha_panda.backtest.config import runtime_config
from alpha_panda.domain.products import fees_for_product
from alpha_panda.settings import RiskSettings, Stage, ZerodhaSettings
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_REJECTED,
)
from alpha_panda.zerodha_trader import Refused
from models.events import ExecutionMode, RejectionReason, TradingSignal, ValidatedSignal
from tests.factories import T0, signal, strategy, tick
from tests.unit.stages.harness import running_stage


def validated(sig: TradingSignal, signal_event_id: str) -> ValidatedSignal:
    return ValidatedSignal(signal_event_id=signal_event_id, signal=sig, validated_ts=sig.signal_ts)


async def test_paper_fills_pay_the_charges_of_their_strategys_product(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config(
        [strategy("cnc", product="CNC"), strategy("mis"), strategy("nrml", product="NRML")]
    )
    async with running_stage(
        Stage.TRADING_ENGINE, "engine-execute", tmp_path, monkeypatch, config
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        for offset, sid in enumerate(["cnc", "mis", "nrml"]):
            order = validated(signal(strategy_id=sid, ts=T0), f"sig-{sid}")
            await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, order, offset=offset)
        # A resting LIMIT order pays its strategy's product too, when a tick fills it.
        resting = validated(signal(strategy_id="cnc", limit="99.50", ts=T0), "sig-cnc-limit")
        await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, resting, offset=3)
        await stage.deliver(MARKET_TICKS, tick("99.40", 1), offset=1)

    fills = {f.data.signal_event_id: f.data for f in stage.sent_to(ORDERS_FILLED_PAPER)}
    assert set(fills) == {"sig-cnc", "sig-mis", "sig-nrml", "sig-cnc-limit"}
    expected_product = {"sig-cnc": "CNC", "sig-mis": "MIS", "sig-nrml": "NRML"}
    expected_product["sig-cnc-limit"] = "CNC"
    for sid, fill in fills.items():
        fees = fees_for_product(expected_product[sid])
        assert fill.fee_breakdown == fees.compute(fill.side, fill.fill_price * fill.quantity), sid
    # Delivery: no brokerage, STT on the buy; intraday: brokerage, no STT on the buy.
    for sid in ("sig-cnc", "sig-cnc-limit"):
        assert fills[sid].fee_breakdown.brokerage == 0 < fills[sid].fee_breakdown.stt
    for sid in ("sig-mis", "sig-nrml"):
        assert fills[sid].fee_breakdown.stt == 0 < fills[sid].fee_breakdown.brokerage


async def test_a_strategy_without_a_product_pays_the_one_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_stage(
        Stage.TRADING_ENGINE,
        "engine-execute",
        tmp_path,
        monkeypatch,
        runtime_config([strategy("plain")]),
        risk=RiskSettings(product="CNC"),
    ) as stage:
        await stage.deliver(MARKET_TICKS, tick("100", 0), offset=0)
        await stage.deliver(
            ENGINE_SIGNALS_BY_INSTRUMENT, validated(signal(strategy_id="plain"), "s"), offset=0
        )
    (fill,) = stage.sent_to(ORDERS_FILLED_PAPER)
    notional = fill.data.fill_price * fill.data.quantity
    assert fill.data.fee_breakdown == fees_for_product("CNC").compute(fill.data.side, notional)


async def test_live_orders_are_submitted_with_their_strategys_product(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = runtime_config(
        [strategy("live-cnc", "live", product="CNC"), strategy("live-mis", "live")]
    )
    submitted: list[tuple[str, str]] = []

    async def submit(signal_event_id: str, sig: TradingSignal, product: str) -> Refused:
        submitted.append((sig.strategy_id, product))
        return Refused(RejectionReason.BROKER_REJECTED, "recorded by the test")

    async with running_stage(
        Stage.TRADING_ENGINE,
        "engine-execute",
        tmp_path,
        monkeypatch,
        config,
        # The embedded broker (the default kind) needs the opt-in to place live orders.
        zerodha=ZerodhaSettings(api_key="k", api_secret="s", allow_embedded_broker=True),  # type: ignore[arg-type]
    ) as stage:
        engine = stage.ctx.stage_handlers
        monkeypatch.setattr(engine.live, "submit", submit)  # type: ignore[attr-defined]
        for offset, sid in enumerate(["live-cnc", "live-mis", "deleted"]):
            sig = signal(strategy_id=sid, mode=ExecutionMode.LIVE)
            await stage.deliver(ENGINE_SIGNALS_BY_INSTRUMENT, validated(sig, sid), offset=offset)

    assert submitted == [("live-cnc", "CNC"), ("live-mis", "MIS")]
    # A strategy the engine's configuration does not have is never sent to Kite with a
    # guessed product: it is refused, naming why.
    refused = {r.data.signal_event_id: r.data for r in stage.sent_to(SIGNALS_REJECTED)}
    assert refused["deleted"].reason is RejectionReason.STRATEGY_UNKNOWN
    assert "product is unknown" in refused["deleted"].detail
