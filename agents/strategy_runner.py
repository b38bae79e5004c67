"""Stage 2, strategy runner: market.ticks -> trading.signals.generated.

Consumes market.ticks (group alpha-panda.strategy-runner), hands each tick to the
strategies configured for its instrument, and publishes their signals keyed
"{strategy_id}:{instrument_token}". Strategy state lives in a changelog-backed table
co-partitioned with market.ticks, so a restarted runner resumes exactly where it was.

Each strategy also sees its own fills and rejections (issue 16). They are keyed by
strategy (fills) or by strategy and instrument (rejections) on partitions unrelated to
the ticks', so the first agent forwards them, bytes unchanged, keyed by instrument onto
two topics partitioned as market.ticks; the second agent consumes those with the ticks,
so the worker owning an instrument's ticks also books its strategies' fills into the
own-positions table, which the host hands the strategy with each tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from faust.types import EventT

from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.own_position import NOTHING_BOOKED, OwnPosition
from alpha_panda.domain.session_rules import session_rules_from
from alpha_panda.domain.strategy_host import StrategyHost, entry_is_behind, previous_price
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES
from alpha_panda.tick_guard import TickGuard
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    rejected_key,
    strategy_instrument_key,
)
from models.envelope import EventEnvelope
from models.events import OrderFill, RejectedSignal
from strategies.factory import StrategyFactory
from tables.specs import OWN_POSITIONS, STRATEGY_STATE

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
        self.own_positions = ctx.table(OWN_POSITIONS)
        # key -> (stored value, decoded view): a view is decoded once per fill, not per tick.
        self._own_views: dict[str, tuple[Any, OwnPosition]] = {}
        self.watcher = ConfigWatcher(ctx, self.on_config)
        self.watcher.install()
        ctx.run_agent(
            SPEC.agent("strategy-feedback"),
            {
                ORDERS_FILLED_PAPER.name: self.forward_fill,
                ORDERS_FILLED_LIVE.name: self.forward_fill,
                SIGNALS_REJECTED.name: self.forward_rejection,
            },
        )
        ctx.run_agent(
            SPEC.agent("strategy-runner"),
            {
                MARKET_TICKS.name: self.on_tick,
                RUNNER_FILLS_BY_INSTRUMENT.name: self.book_fill,
                RUNNER_REJECTIONS_BY_INSTRUMENT.name: self.book_rejection,
            },
        )

    def on_config(self, config: RuntimeConfig) -> None:
        for problem in self.host.configure(config):
            log.warning("strategy_skipped", stage=self.ctx.source, reason=problem)
        log.info("strategies_routed", stage=self.ctx.source, assignments=self.host.assignment_count)

    async def forward_fill(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        token = str(envelope.data.instrument_token)
        await self.ctx.forward(
            RUNNER_FILLS_BY_INSTRUMENT, token, event.message.value, _source_header(event)
        )

    async def forward_rejection(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        token = str(envelope.data.signal.instrument_token)
        await self.ctx.forward(
            RUNNER_REJECTIONS_BY_INSTRUMENT, token, event.message.value, _source_header(event)
        )

    async def book_fill(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        fill: OrderFill = envelope.data
        key = strategy_instrument_key(fill.strategy_id, fill.instrument_token)
        booked = self.own_view(key).book_fill(fill, _source_of(event))
        if booked is not None:  # None: booked already (redelivered, or forwarded again)
            self.own_positions[key] = booked

    async def book_rejection(self, envelope: EventEnvelope[Any], event: EventT) -> None:
        rejected: RejectedSignal = envelope.data
        key = rejected_key(rejected)
        booked = self.own_view(key).book_rejection(rejected, _source_of(event))
        if booked is not None:
            self.own_positions[key] = booked

    def own_view(self, key: str) -> OwnPosition:
        """The strategy's own position at ``key`` as booked (nothing booked: empty)."""
        # Its changelog form, to tell a new value from the one decoded last (every tick of
        # every strategy asks; a value changes with a fill or a rejection).
        raw = self.own_positions.get_json(key)
        if raw is None:
            return NOTHING_BOOKED
        cached = self._own_views.get(key)
        if cached is not None and cached[0] is raw:
            return cached[1]
        view = OWN_POSITIONS.decode(raw)
        self._own_views[key] = (raw, view)
        return view

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
                    assignment,
                    tick,
                    envelope.id,
                    offset,
                    states.get(assignment.key),
                    self.own_view(assignment.key),
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


# Where a forwarded fill or rejection was read: "topic:partition:offset" of the original.
SOURCE_HEADER = "x-source"


def _source_header(event: EventT) -> tuple[tuple[str, bytes], ...]:
    m = event.message
    return ((SOURCE_HEADER, f"{m.topic}:{m.partition}:{m.offset}".encode()),)


def _source_of(event: EventT) -> tuple[str, int] | None:
    """("topic:partition", offset) of the record a forwarded one was read from; None for a
    record without the header (not forwarded by this stage)."""
    headers = event.message.headers or ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == SOURCE_HEADER:
            source, _, offset = bytes(value).decode().rpartition(":")
            return source, int(offset)
    return None
