"""Stage 3, risk manager: trading.signals.generated -> validated | rejected.

Risk state is per strategy (exposure, daily loss and order rate span instruments), but
signals are keyed "{strategy_id}:{instrument_token}". So the first agent repartitions
each signal, bytes unchanged, by strategy id onto the stage's own topic, and the second
agent owns each strategy's state from exactly one partition. Decisions keep the original
signal key and get ids derived from the signal's id, so a replay reproduces them exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from faust.types import EventT, StreamT

from alpha_panda import db
from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.risk_policy import RiskPolicy
from alpha_panda.domain.session_rules import session_rules_from
from alpha_panda.runtime import Route, StageContext
from alpha_panda.topics import (
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    Tables,
)
from models.envelope import EventEnvelope, derived_event_id
from models.events import RejectedSignal, RejectionReason, TradingSignal, ValidatedSignal
from tables.risk_state import RiskLimits, StrategyRiskState

log = structlog.get_logger(__name__)


def register(ctx: StageContext) -> None:
    policy = RiskPolicy(
        RiskLimits.from_settings(ctx.settings.risk), session_rules_from(ctx.settings)
    )
    announced_at_start = False

    async def acknowledge_halts(config: RuntimeConfig, sessions: db.SessionFactory) -> None:
        # Runs after policy.configure(config): the kill switch holds these halts now.
        nonlocal announced_at_start
        if not announced_at_start:
            announced_at_start = True
            if config.halts:
                log.warning(
                    "trading_halted_at_start",
                    stage=ctx.source,
                    halts=[f"{h.scope}: {h.reason}" for h in config.halts],
                )
        if not config.unapplied_halts:
            return
        applied = await db.acknowledge_halts(sessions, config.unapplied_halts, datetime.now(UTC))
        if applied:
            log.info("halts_applied", stage=ctx.source, scopes=applied)

    def on_config(config: RuntimeConfig) -> None:
        for strategy_id, error in policy.configure(config):
            log.error("risk_limits_invalid", strategy_id=strategy_id, error=error)

    watcher = ConfigWatcher(ctx, on_config, after_apply=acknowledge_halts)
    watcher.install()
    # Memory holds the decided StrategyRiskState itself, encoded for the changelog once
    # per commit: decoding it per signal was a quarter of this stage's time, encoding it
    # per signal a sixth. Recovery fills memory with the changelog's JSON instead.
    states = ctx.write_behind_table(
        Tables.RISK_STATE,
        partitions=RISK_SIGNALS_BY_STRATEGY.partitions,
        help="Pre-trade risk state per strategy",
        encode=StrategyRiskState.to_json_dict,
    )

    def state_of(sid: str) -> StrategyRiskState:
        value = states.get(sid)
        if value is None:
            return StrategyRiskState.new(sid)
        if isinstance(value, StrategyRiskState):
            return value
        return StrategyRiskState.from_json_dict(value)

    async def repartition(envelope: EventEnvelope[Any], event: EventT) -> None:
        await ctx.forward(RISK_SIGNALS_BY_STRATEGY, envelope.data.strategy_id, event.message.value)

    async def decide(envelope: EventEnvelope[Any], event: EventT) -> None:
        await watcher.ready.wait()
        signal: TradingSignal = envelope.data
        sid = signal.strategy_id
        decision = policy.decide(signal, envelope.id, state_of(sid))
        if decision.new_state is not None:
            states[sid] = decision.new_state
        if decision.rejection is None:
            validated = ValidatedSignal(
                signal_event_id=envelope.id, signal=signal, validated_ts=signal.signal_ts
            )
            await ctx.send(
                SIGNALS_VALIDATED.record(
                    validated,
                    event_id=derived_event_id(envelope.id, "validated"),
                    ts=envelope.ts,
                    source=ctx.source,
                )
            )
            ctx.metrics.domain.labels(ctx.source, "approved", sid).inc()
        else:
            await emit_rejection(
                envelope, signal, decision.rejection.reason, decision.rejection.detail
            )

    async def emit_rejection(
        envelope: EventEnvelope[Any], signal: TradingSignal, reason: RejectionReason, detail: str
    ) -> None:
        rejected = RejectedSignal(
            signal_event_id=envelope.id,
            signal=signal,
            reason=reason,
            detail=detail[:500],
            rejected_by=ctx.source,
            rejected_ts=signal.signal_ts,
        )
        await ctx.send(
            SIGNALS_REJECTED.record(
                rejected,
                event_id=derived_event_id(envelope.id, "rejected"),
                ts=envelope.ts,
                source=ctx.source,
            )
        )
        ctx.metrics.domain.labels(ctx.source, "rejected", reason.value).inc()

    @ctx.app.agent(ctx.source_channel([SIGNALS_GENERATED]), name="risk-repartition")
    async def repartition_signals(stream: StreamT) -> None:
        await ctx.process(stream, {SIGNALS_GENERATED.name: Route(SIGNALS_GENERATED, repartition)})

    @ctx.app.agent(ctx.source_channel([RISK_SIGNALS_BY_STRATEGY]), name="risk-decide")
    async def decide_signals(stream: StreamT) -> None:
        await ctx.process(
            stream, {RISK_SIGNALS_BY_STRATEGY.name: Route(RISK_SIGNALS_BY_STRATEGY, decide)}
        )
