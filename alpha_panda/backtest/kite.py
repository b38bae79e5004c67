"""Kite's historical candles as backtest ticks.

``GET /instruments/historical/{token}/{interval}`` through the Zerodha REST client
(:class:`alpha_panda.zerodha.rest.KiteRestClient`), one instrument at a time, in date
chunks no longer than Kite allows per request; each candle becomes four ticks along
:func:`alpha_panda.backtest.sources.candle_path`, and the instruments' ticks are merged in
time order. Tick ids are uuid5s of instrument, interval, candle time and step, so the same
candles always give the same signal and fill ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from alpha_panda.backtest.sources import BadInput, Candle, Problem, SourceItem, ticks_of_candle
from alpha_panda.zerodha.rest import KiteRestClient
from models.envelope import derived_event_id
from tables.risk_state import trading_day_of

# Candle length, and Kite's longest date range per request (its documented limits).
INTERVALS: dict[str, tuple[timedelta, timedelta]] = {
    "minute": (timedelta(minutes=1), timedelta(days=60)),
    "3minute": (timedelta(minutes=3), timedelta(days=100)),
    "5minute": (timedelta(minutes=5), timedelta(days=100)),
    "10minute": (timedelta(minutes=10), timedelta(days=100)),
    "15minute": (timedelta(minutes=15), timedelta(days=200)),
    "30minute": (timedelta(minutes=30), timedelta(days=200)),
    "60minute": (timedelta(minutes=60), timedelta(days=400)),
    "day": (timedelta(days=1), timedelta(days=2000)),
}


@dataclass(frozen=True)
class InstrumentCandles:
    token: int
    symbol: str
    candles: tuple[Candle, ...]


def chunks(start: datetime, end: datetime, longest: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end] in consecutive ranges of at most ``longest`` (Kite's ``to`` is inclusive,
    so a range starts a second after the previous one ends)."""
    out = []
    at = start
    while at <= end:
        stop = min(end, at + longest)
        out.append((at, stop))
        at = stop + timedelta(seconds=1)
    return out


async def fetch_candles(
    client: KiteRestClient,
    instruments: Sequence[tuple[int, str]],
    interval: str,
    start: datetime,
    end: datetime,
) -> list[InstrumentCandles]:
    if interval not in INTERVALS:
        raise ValueError(f"interval {interval!r} is not one of {', '.join(INTERVALS)}")
    longest = INTERVALS[interval][1]
    out = []
    for token, symbol in instruments:
        seen: dict[datetime, Candle] = {}
        for begin, stop in chunks(start, end, longest):
            for c in await client.historical(token, interval, begin, stop):
                seen.setdefault(
                    c.timestamp, Candle(c.timestamp, c.open, c.high, c.low, c.close, c.volume)
                )
        out.append(InstrumentCandles(token, symbol, tuple(seen[t] for t in sorted(seen))))
    return out


def _instrument_ticks(
    data: InstrumentCandles, interval: str, order: int
) -> Iterator[tuple[datetime, int, int, SourceItem]]:
    length = INTERVALS[interval][0]
    day = None
    cumulative = 0
    for sequence, candle in enumerate(data.candles):
        where = f"{data.symbol} {interval} candle {candle.ts.isoformat()}"
        if trading_day_of(candle.ts) != day:
            day, cumulative = trading_day_of(candle.ts), 0
        try:
            ticks = ticks_of_candle(
                candle,
                token=data.token,
                symbol=data.symbol,
                interval=length,
                volume_before=cumulative,
            )
        except ValueError as exc:
            yield candle.ts, order, 4 * sequence, Problem(where, BadInput.MALFORMED, str(exc))
            continue
        for step, tick in enumerate(ticks):
            cumulative = tick.volume
            event_id = derived_event_id(
                f"kite-historical:{data.token}:{interval}", candle.ts.isoformat(), step
            )
            item = (f"{where} step {step}", tick, event_id)
            yield tick.exchange_ts, order, 4 * sequence + step, item


def candle_items(candles: Sequence[InstrumentCandles], interval: str) -> Iterator[SourceItem]:
    """Every instrument's ticks, merged by time (then the order the instruments were given)."""
    streams = [_instrument_ticks(data, interval, n) for n, data in enumerate(candles)]
    for _, _, _, item in heapq.merge(*streams, key=lambda entry: entry[:3]):
        yield item


async def load(
    *,
    root_url: str,
    api_key: str,
    access_token: str,
    instruments: Sequence[tuple[int, str]],
    interval: str,
    start: datetime,
    end: datetime,
) -> list[InstrumentCandles]:
    async with aiohttp.ClientSession() as session:
        client = KiteRestClient(
            session, root_url=root_url, api_key=api_key, access_token=lambda: access_token
        )
        return await fetch_candles(client, instruments, interval, start, end)
