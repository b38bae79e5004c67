"""alpha_panda/rejections.py: the one place a stage emits a RejectedSignal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from alpha_panda.rejections import emit_rejection
from alpha_panda.topics import SIGNALS_REJECTED, OutgoingRecord
from models.codec import decode
from models.envelope import derived_event_id
from models.events import RejectedSignal, RejectionReason, Side, TradingSignal
from tests.factories import T0

SIGNAL = TradingSignal(
    strategy_id="mom-a",
    instrument_token=256265,
    symbol="NIFTY 50",
    side=Side.BUY,
    quantity=1,
    reference_price=Decimal("100"),
    signal_ts=T0,
)


class FakeContext:
    source = "trading-engine"

    def __init__(self) -> None:
        from alpha_panda.metrics import StageMetrics

        self.metrics = StageMetrics(self.source, registry=CollectorRegistry())
        self.sent: list[OutgoingRecord] = []

    async def send(self, record: OutgoingRecord) -> None:
        self.sent.append(record)

    def rejected_count(self, reason: RejectionReason) -> float:
        child: Any = self.metrics.domain.labels(self.source, "rejected", reason.value)
        return float(child._value.get())


async def test_one_rejection_derived_from_the_handled_record() -> None:
    ctx = FakeContext()
    await emit_rejection(
        ctx,  # type: ignore[arg-type]
        handled_event_id="e1",
        id_suffix="engine-rejected",
        ts=T0,
        signal_event_id="s1",
        signal=SIGNAL,
        reason=RejectionReason.NO_MARKET_PRICE,
        detail="x" * 900,
    )
    [record] = ctx.sent
    assert record.topic == SIGNALS_REJECTED.name
    envelope = decode(record.value, topic=record.topic)
    assert envelope.id == derived_event_id("e1", "engine-rejected")
    rejected = envelope.data
    assert isinstance(rejected, RejectedSignal)
    assert rejected.signal_event_id == "s1" and rejected.signal == SIGNAL
    assert rejected.rejected_by == "trading-engine" and rejected.rejected_ts == T0
    assert rejected.detail == "x" * 500  # the event's bound, not a validation error
    assert ctx.rejected_count(RejectionReason.NO_MARKET_PRICE) == 1


async def test_uncounted_rejections_leave_the_metric_alone() -> None:
    ctx = FakeContext()
    await emit_rejection(
        ctx,  # type: ignore[arg-type]
        handled_event_id="s1",
        id_suffix="broker-rejected",
        ts=T0,
        signal_event_id="s1",
        signal=SIGNAL,
        reason=RejectionReason.BROKER_REJECTED,
        detail="margin",
        counted=False,
    )
    assert len(ctx.sent) == 1
    assert ctx.rejected_count(RejectionReason.BROKER_REJECTED) == 0
