"""Kite's instruments master, fetched once a day and kept in memory.

Kite regenerates the master (``GET /instruments``, a CSV of every tradable instrument)
once each morning before the market opens. The feed takes symbols from it and the trader
takes the tradingsymbol and exchange an order needs; tick and lot sizes come with it. The
stages that check ticks take each instrument's tick size from it (:class:`MasterTickSizes`).
One fetch per master day per process: the file is large and changes only overnight.

A master day starts at ``MASTER_DAY_STARTS`` IST, not at midnight: a fetch just after
midnight would get the previous day's file and keep it all day, and NSE's monthly tick
size revisions take effect in the new file. 08:45 is after the morning regeneration and
before the 09:00 pre-open, so the fetch (1-2 s of parsing on a stage's loop for a full
master) never falls in a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import structlog

from alpha_panda.broker_session import IST
from alpha_panda.domain.price_band import TickSizes
from alpha_panda.zerodha.models import Instrument
from alpha_panda.zerodha.rest import KiteRestClient

log = structlog.get_logger(__name__)


MASTER_DAY_STARTS = time(8, 45)  # IST
_SINCE_MIDNIGHT = timedelta(hours=MASTER_DAY_STARTS.hour, minutes=MASTER_DAY_STARTS.minute)


def master_day(moment: datetime) -> date:
    """The day whose instruments master is in force at ``moment``: the IST date, until
    ``MASTER_DAY_STARTS`` the previous one."""
    return (moment.astimezone(IST) - _SINCE_MIDNIGHT).date()


class InstrumentsCache:
    def __init__(
        self, rest: KiteRestClient, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._rest = rest
        self._now = now
        self._by_token: dict[int, Instrument] = {}
        self._day: date | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, token: int) -> Instrument | None:
        await self._fresh()
        return self._by_token.get(token)

    async def _fresh(self) -> None:
        today = master_day(self._now())
        if self._day == today:
            return
        async with self._lock:
            if self._day == today:
                return
            rows = await self._rest.instruments()
            self._by_token = {row.instrument_token: row for row in rows}
            self._day = today
            self.fetches += 1
            log.info("instruments_master_loaded", instruments=len(rows), day=today.isoformat())


class MasterTickSizes:
    """Each instrument's tick size from the instruments master, re-read each master day.

    Keeps only the sizes (a dict of the tokens), not the master's rows: three stages hold
    it, and the master lists every instrument of every exchange. ``current`` is what the
    tick guard reads; until a master is loaded it gives ``default`` for every instrument.
    """

    def __init__(
        self,
        rest: KiteRestClient,
        default: Decimal,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rest = rest
        self._now = now
        self.current = TickSizes(default=default)
        self.day: date | None = None
        self.fetches = 0

    async def refresh(self) -> bool:
        """Fetch today's master unless it is loaded; True when ``current`` changed.
        A failed fetch (KiteError) leaves ``current`` as it was."""
        today = master_day(self._now())
        if self.day == today:
            return False
        rows = await self._rest.instruments()
        self.current = TickSizes.from_master(rows, self.current.default)
        self.day = today
        self.fetches += 1
        indices = sum(1 for size in self.current.known.values() if size is None)
        log.info(
            "tick_sizes_loaded",
            instruments=len(self.current.known),
            indices=indices,
            day=today.isoformat(),
        )
        return True
