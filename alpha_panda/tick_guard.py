"""Where a stage turns the pure price check into a dead letter.

Every stage that books or acts on market.ticks builds one :class:`TickGuard` and asks
:meth:`TickGuard.admit` before it acts on a tick, passing the instrument's previous
accepted price from its own changelog-backed table (so the reference survives a restart
and a rebalance). A refused tick goes to ``market.ticks.dlq`` with the reason in
``x-error-message`` and the check's name in ``x-error-type``; the stage's state is not
touched, so the next good tick is compared with the last good price.

Each tick is checked against its instrument's tick size. With Kite feeding market.ticks
(``ALPHA_PANDA_FEED_SOURCE=zerodha``) the sizes come from Kite's instruments master,
fetched in the background (alpha_panda/zerodha_wiring.py); otherwise, and until the master
is loaded, every instrument has ``ALPHA_PANDA_TICKS_TICK_SIZE``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import structlog
from faust.types import EventT

from alpha_panda.domain.price_band import PriceBand, TickSizes, check_tick_price
from alpha_panda.zerodha_wiring import follow_master_tick_sizes, kite_feeds_ticks
from models.events import MarketTick

if TYPE_CHECKING:
    from alpha_panda.broker_session import TokenWatcher
    from alpha_panda.runtime import StageContext

log = structlog.get_logger(__name__)


class TickGuard:
    def __init__(self, ctx: StageContext, *, token_watcher: TokenWatcher | None = None) -> None:
        """``token_watcher``: the stage's own, when it has one already (the engine's live
        trading), so the stage polls the token store once."""
        self._ctx = ctx
        ticks = ctx.settings.ticks
        self.band = PriceBand(band_pct=ticks.price_band_pct)
        # Replaced whole, never changed in place, when a day's master is loaded.
        self.tick_sizes = TickSizes(default=ticks.tick_size)
        if kite_feeds_ticks(ctx.settings):
            follow_master_tick_sizes(ctx, self, token_watcher)

    async def admit(self, tick: MarketTick, previous: Decimal | None, event: EventT) -> bool:
        """True when the stage may act on ``tick``; otherwise it has been dead-lettered."""
        rejection = check_tick_price(
            tick.last_price, previous, self.band, self.tick_sizes.of(tick.instrument_token)
        )
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
