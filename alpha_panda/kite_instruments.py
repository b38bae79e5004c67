"""Kite's instruments master, fetched once per IST day and kept in memory.

Kite regenerates the master (``GET /instruments``, a CSV of every tradable instrument)
daily before the market opens. The feed takes symbols from it and the trader takes the
tradingsymbol and exchange an order needs; tick and lot sizes come with it. One fetch per
IST day per process: the file is large and changes only overnight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime

import structlog

from alpha_panda.broker_session import IST
from alpha_panda.zerodha.models import Instrument
from alpha_panda.zerodha.rest import KiteRestClient

log = structlog.get_logger(__name__)


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
        today = self._now().astimezone(IST).date()
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
