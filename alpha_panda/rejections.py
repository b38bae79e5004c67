"""Emitting a rejection, written once for every stage that rejects a signal.

A rejection is an event (trading.signals.rejected), never an exception. Its id derives
from the id of the record being handled, so a redelivered record rejects with the same
id and the portfolio manager keeps it once.
"""

from __future__ import annotations

from datetime import datetime

from alpha_panda.runtime import StageContext
from alpha_panda.topics import SIGNALS_REJECTED
from models.envelope import derived_event_id
from models.events import REJECTION_DETAIL_MAX, RejectedSignal, RejectionReason, TradingSignal


async def emit_rejection(
    ctx: StageContext,
    *,
    handled_event_id: str,
    id_suffix: str,
    ts: datetime,
    signal_event_id: str,
    signal: TradingSignal,
    reason: RejectionReason,
    detail: str,
    counted: bool = True,
) -> None:
    """Send one RejectedSignal: ``handled_event_id`` is the id of the record being handled
    (the rejection's id derives from it and ``id_suffix``), ``ts`` its envelope time.
    ``counted=False``: not in the stage's "rejected" metric (the live trader's broker
    rejections, which it never counted there)."""
    rejected = RejectedSignal(
        signal_event_id=signal_event_id,
        signal=signal,
        reason=reason,
        detail=detail[:REJECTION_DETAIL_MAX],
        rejected_by=ctx.source,
        rejected_ts=signal.signal_ts,
    )
    await ctx.send(
        SIGNALS_REJECTED.record(
            rejected,
            event_id=derived_event_id(handled_event_id, id_suffix),
            ts=ts,
            source=ctx.source,
        )
    )
    if counted:
        ctx.metrics.domain.labels(ctx.source, "rejected", reason.value).inc()
