"""Kite ticks -> MarketTick v2 (the feed's tick formatter). Pure.

- A tick without a positive last price (an instrument that has not traded, a bad packet)
  carries no price we can publish: it is skipped and counted by the caller.
- Depth: Kite sends five slots a side in full mode, with empty slots as zeros (the parser
  drops those). The levels become ``MarketDepth`` best first; a book that is not ordered
  best first is dropped (the tick goes out without depth) rather than passed on wrong.
  The best levels also fill ``bid`` and ``ask``.
- Exchange time is Kite's exchange timestamp, else the last trade time, else the time the
  frame arrived (``received``): the feed is the one place outside time enters. The arrival
  time is cut to the whole second, Kite's own resolution: the quote-mode snapshot a new
  subscription gets carries no time, and stamped to the microsecond it was newer than the
  full-mode ticks of the same second, which the trading engine then skipped as stale.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from alpha_panda.zerodha.ticker_protocol import DepthLevel as KiteLevel
from alpha_panda.zerodha.ticker_protocol import KiteTick
from models.events import DepthLevel, MarketDepth, MarketTick

MAX_SYMBOL = 64


def _levels(levels: tuple[KiteLevel, ...]) -> tuple[DepthLevel, ...]:
    return tuple(
        DepthLevel(quantity=lv.quantity, price=lv.price, orders=lv.orders)
        for lv in levels
        if lv.quantity > 0 and lv.price > 0
    )[:5]


def depth_of(tick: KiteTick) -> MarketDepth | None:
    bids, asks = _levels(tick.bids), _levels(tick.asks)
    if not bids and not asks:
        return None
    try:
        return MarketDepth(bids=bids, asks=asks)
    except ValidationError:
        return None


def market_tick(
    tick: KiteTick, *, symbol: str, exchange: str, received: datetime
) -> MarketTick | None:
    """The MarketTick for ``tick``, or None when it has no publishable price."""
    if tick.last_price <= 0:
        return None
    depth = depth_of(tick)
    return MarketTick(
        instrument_token=tick.instrument_token,
        symbol=symbol[:MAX_SYMBOL] or str(tick.instrument_token),
        exchange=exchange or "NSE",
        last_price=tick.last_price,
        volume=tick.volume or 0,
        last_quantity=tick.last_quantity or 0,
        bid=depth.bids[0].price if depth and depth.bids else None,
        ask=depth.asks[0].price if depth and depth.asks else None,
        exchange_ts=tick.exchange_timestamp
        or tick.last_trade_time
        or received.replace(microsecond=0),
        depth=depth,
    )
