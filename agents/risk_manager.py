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
from faust.types import EventT

from alpha_panda import db
from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.risk_policy import RiskPolicy
from alpha_panda.domain.session_rules import session_rules_from
from alpha_panda.rejections import emit_rejection
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES
from alpha_panda.topics import RISK_SIGNALS_BY_STRATEGY, SIGNALS_GENERATED, SIGNALS_VALIDATED
from models.envelope import EventEnvelope, derived_event_id
from models.events import TradingSignal, ValidatedSignal
from tables.risk_state import RiskLimits, StrategyRiskState
from tables.specs import RISK_STATE

log = structlog.get_logger(__name__)

SPEC = STAGES[Stage.RISK_MANAGER]


class RiskManager:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.policy = RiskPolicy(
            RiskLimits.from_settings(ctx.settings.risk), session_rules_from(ctx.settings)
        )
        self._announced_at_start = False
        self.watcher = ConfigWatcher(ctx, self.on_config, after_apply=self.acknowledge_halts)
        self.watcher.install()
        # Memory holds the decided StrategyRiskState itself, encoded for the changelog once
        # per commit (alpha_panda/write_behind.py): decoding it per signal was a quarter of
        # this stage's time, encoding it per signal a sixth.
        self.states = ctx.write_behind_table(RISK_STATE)
        ctx.run_agent(SPEC.agent("risk-repartition"), {SIGNALS_GENERATED.name: self.repartition})
        ctx.run_agent(SPEC.agent("risk-decide"), {RISK_SIGNALS_BY_STRATEGY.name: self.decide})

    def on_config(self, config: RuntimeConfig) -> None:
        for strategy_id, error in self.policy.configure(config):
            log.error("risk_limits_invalid", strategy_id=strategy_id, error=error)

    async def acknowledge_halts(self, config: RuntimeConfig, sessions: db.SessionFactory) -> None:
        # Runs after policy.configure(config): the kill switch holds these halts now.
        if not self._announced_at_start:
            self._announced_at_start = True
            if config.halts:
                log.warning(
                    "trading_halted_at_start",
                    stage=self.ctx.source,
                    halts=[f"{h.scope}: {h.reason}" for h in config.halts],
                )
        if not config.unapplied_halts:
            return
        applied = await db.acknowledge_halts(sessions, config.unapplied_halts, datetime.now(UTC))
        if applied:
            log.info("halts_applied", stage=self.ctx.source, scopes=applied)

    def state_of(self, sid: str) -> StrategyRiskState:
        state = self.states.get(sid)
        return StrategyRiskState.new(sid) if state is None else state

    async def repartition(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        await self.ctx.forward(
            RISK_SIGNALS_BY_STRATEGY, envelope.data.strategy_id, event.message.value
        )

    async def decide(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        await self.watcher.ready.wait()
        ctx = self.ctx
        signal: TradingSignal = envelope.data
        sid = signal.strategy_id
        decision = self.policy.decide(signal, envelope.id, self.state_of(sid))
        if decision.new_state is not None:
            self.states[sid] = decision.new_state
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
                ctx,
                handled_event_id=envelope.id,
                id_suffix="rejected",
                ts=envelope.ts,
                signal_event_id=envelope.id,
                signal=signal,
                reason=decision.rejection.reason,
                detail=decision.rejection.detail,
            )
