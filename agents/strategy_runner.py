"""Stage 2, strategy runner: market.ticks -> trading.signals.generated.

Consumes market.ticks (group alpha-panda.strategy-runner), hands each tick to the
strategies configured for its instrument, and publishes their signals keyed
"{strategy_id}:{instrument_token}". Strategy state lives in a changelog-backed table
co-partitioned with market.ticks, so a restarted runner resumes exactly where it was.
"""

from __future__ import annotations

from typing import Any

import structlog
from faust.types import EventT, StreamT

from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.session_rules import session_rules_from
from alpha_panda.domain.strategy_host import StrategyHost, entry_is_behind, previous_price
from alpha_panda.runtime import Route, StageContext
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import MARKET_TICKS, SIGNALS_GENERATED
from models.envelope import EventEnvelope
from strategies.factory import StrategyFactory

log = structlog.get_logger(__name__)


def register(ctx: StageContext) -> None:
    host = StrategyHost(
        sessions=session_rules_from(ctx.settings),
        default_product=ctx.settings.risk.product,
        default_allow_pre_open=ctx.settings.risk.allow_pre_open,
    )
    # Entry-point plug-ins are imported here, once; a broken one is skipped, not fatal.
    for problem in StrategyFactory.plugin_problems():
        log.warning("strategy_plugin_skipped", stage=ctx.source, reason=problem)
    guard = TickGuard(ctx)
    states = ctx.write_behind_table(
        "strategy-state",
        partitions=MARKET_TICKS.partitions,
        help="Rolling state per strategy:instrument, with replay bookkeeping",
    )

    def on_config(config: RuntimeConfig) -> None:
        for problem in host.configure(config):
            log.warning("strategy_skipped", stage=ctx.source, reason=problem)
        log.info("strategies_routed", stage=ctx.source, assignments=host.assignment_count)

    watcher = ConfigWatcher(ctx, on_config)
    watcher.install()

    async def on_tick(envelope: EventEnvelope[Any], event: EventT) -> None:
        await watcher.ready.wait()
        tick = envelope.data
        offset = event.message.offset
        assignments = host.assignments_for(tick.instrument_token)
        if not assignments:
            return
        entries = [states.get(a.key) for a in assignments]
        if not any(entry_is_behind(entry, offset) for entry in entries):
            return  # redelivered: every strategy has folded this tick in already
        if not await guard.admit(tick, previous_price(entries), event):
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

    channel = ctx.source_channel([MARKET_TICKS])

    @ctx.app.agent(channel, name="strategy-runner")
    async def run_strategies(stream: StreamT) -> None:
        await ctx.process(stream, {MARKET_TICKS.name: Route(MARKET_TICKS, on_tick)})
