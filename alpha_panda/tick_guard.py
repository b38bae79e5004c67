"""Where a stage turns the pure price check into a dead letter.

Every stage that books or acts on market.ticks builds one :class:`TickGuard` and asks
:meth:`TickGuard.admit` before it acts on a tick, passing the instrument's previous
accepted price from its own changelog-backed table (so the reference survives a restart
and a rebalance). A refused tick goes to ``market.ticks.dlq`` with the reason in
``x-error-message`` and the check's name in ``x-error-type``; the stage's state is not
touched, so the next good tick is compared with the last good price.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import structlog
from faust.types import EventT

from alpha_panda.domain.price_band import PriceBand, check_tick_price
from models.events import MarketTick

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext

log = structlog.get_logger(__name__)


class TickGuard:
    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        ticks = ctx.settings.ticks
        self.band = PriceBand(band_pct=ticks.price_band_pct, tick_size=ticks.tick_size)

    async def admit(self, tick: MarketTick, previous: Decimal | None, event: EventT) -> bool:
        """True when the stage may act on ``tick``; otherwise it has been dead-lettered."""
        rejection = check_tick_price(tick.last_price, previous, self.band)
        if rejection is None:
            return True
        ctx = self._ctx
        message = event.message
        ctx.metrics.failed.labels(ctx.source, message.topic, "price_band").inc()
        await ctx.dead_letter(
            message,
            error_type=rejection.kind,
            error=f"{tick.symbol} ({tick.instrument_token}): {rejection.reason}",
            attempts=1,
        )
        return False
