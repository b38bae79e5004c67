"""Stage 2, strategy runner: market.ticks -> trading.signals.generated.

Consumes market.ticks (group alpha-panda.strategy-runner), hands each tick to the
strategies configured for its instrument, and publishes their signals keyed
"{strategy_id}:{instrument_token}". Strategy state lives in a changelog-backed table
co-partitioned with market.ticks, so a restarted runner resumes exactly where it was.
"""

from __future__ import annotations

from typing import Any

import structlog
from faust.types import EventT

from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.session_rules import session_rules_from
from alpha_panda.domain.strategy_host import StrategyHost, entry_is_behind, previous_price
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED
from models.envelope import EventEnvelope
from strategies.factory import StrategyFactory
from tables.specs import STRATEGY_STATE

log = structlog.get_logger(__name__)

SPEC = STAGES[Stage.STRATEGY_RUNNER]


class StrategyRunner:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.host = StrategyHost(
            sessions=session_rules_from(ctx.settings),
            default_product=ctx.settings.risk.product,
            default_allow_pre_open=ctx.settings.risk.allow_pre_open,
        )
        # Entry-point plug-ins are imported here, once; a broken one is skipped, not fatal.
        for problem in StrategyFactory.plugin_problems():
            log.warning("strategy_plugin_skipped", stage=ctx.source, reason=problem)
        self.guard = TickGuard(ctx)
        self.states = ctx.write_behind_table(STRATEGY_STATE)
        self.watcher = ConfigWatcher(ctx, self.on_config)
        self.watcher.install()
        ctx.run_agent(SPEC.agent("strategy-runner"), {MARKET_TICKS.name: self.on_tick})

    def on_config(self, config: RuntimeConfig) -> None:
        for problem in self.host.configure(config):
            log.warning("strategy_skipped", stage=self.ctx.source, reason=problem)
        log.info("strategies_routed", stage=self.ctx.source, assignments=self.host.assignment_count)

    async def on_tick(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        await self.watcher.ready.wait()
        ctx, host, states = self.ctx, self.host, self.states
        tick = envelope.data
        offset = event.message.offset
        assignments = host.assignments_for(tick.instrument_token)
        if not assignments:
            return
        entries = [states.get(a.key) for a in assignments]
        if not any(entry_is_behind(entry, offset) for entry in entries):
            return  # redelivered: every strategy has folded this tick in already
        if not await self.guard.admit(tick, previous_price(entries), event):
            return  # quarantined: no strategy sees it
        for assignment in assignments:
            try:
                outcome = host.on_tick(
                    assignment, tick, envelope.id, offset, states.get(assignment.key)
                )
            except Exception as exc:
                # One strategy's bug must not starve the others of this tick.
                ctx.metrics.failed.labels(ctx.source, MARKET_TICKS.name, "strategy").inc()
                log.error(
                    "strategy_failed",
                    stage=ctx.source,
                    strategy_id=assignment.strategy_id,
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=offset,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=True,
                )
                continue
            if outcome.signals:
                records = [
                    SIGNALS_GENERATED.record(
                        signal, event_id=event_id, ts=tick.exchange_ts, source=ctx.source
                    )
                    for event_id, signal in outcome.signals
                ]
                # Signals durable first, state second (see alpha_panda/domain/strategy_host.py).
                await ctx.send_acked(records)
                for _, signal in outcome.signals:
                    ctx.metrics.domain.labels(ctx.source, "signal", signal.side.value).inc()
            if outcome.new_entry is not None:
                states[assignment.key] = outcome.new_entry
