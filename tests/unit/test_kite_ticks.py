"""Kite ticks -> MarketTick v2: depth, best bid/ask, time, ticks that cannot be published."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alpha_panda.domain.engine_rules import tick_is_stale
from alpha_panda.domain.kite_ticks import depth_of, market_tick
from alpha_panda.zerodha.ticker_protocol import DepthLevel, KiteTick, TickMode
from models.events import MarketDepth

D = Decimal
RECEIVED = datetime(2026, 3, 2, 4, 0, 5, tzinfo=UTC)
EXCHANGE = datetime(2026, 3, 2, 4, 0, 4, tzinfo=UTC)


def kite(mode: TickMode = TickMode.FULL, **kw: object) -> KiteTick:
    base: dict[str, object] = {
        "instrument_token": 738561,
        "mode": mode,
        "tradable": True,
        "last_price": D("1250.05"),
        "last_quantity": 7,
        "volume": 1200,
        "exchange_timestamp": EXCHANGE,
        "bids": (DepthLevel(100, D("1250.00"), 3), DepthLevel(0, D("0"), 0)),
        "asks": (DepthLevel(40, D("1250.10"), 1), DepthLevel(60, D("1250.20"), 2)),
    }
    base.update(kw)
    return KiteTick(**base)  # type: ignore[arg-type]


def test_a_full_tick_carries_depth_without_empty_slots_and_its_best_prices() -> None:
    tick = market_tick(kite(), symbol="RELIANCE", exchange="NSE", received=RECEIVED)
    assert tick is not None and tick.depth is not None
    assert [(lv.quantity, lv.price, lv.orders) for lv in tick.depth.bids] == [
        (100, D("1250.00"), 3)
    ]
    assert [lv.quantity for lv in tick.depth.asks] == [40, 60]
    assert (tick.bid, tick.ask) == (D("1250.00"), D("1250.10"))
    assert (tick.last_price, tick.volume, tick.last_quantity) == (D("1250.05"), 1200, 7)
    assert tick.exchange_ts == EXCHANGE
    assert (tick.symbol, tick.exchange, tick.instrument_token) == ("RELIANCE", "NSE", 738561)


def test_an_ltp_tick_has_no_depth_and_takes_the_arrival_time() -> None:
    ltp = kite(
        TickMode.LTP, bids=(), asks=(), exchange_timestamp=None, volume=None, last_quantity=None
    )
    tick = market_tick(ltp, symbol="RELIANCE", exchange="NSE", received=RECEIVED)
    assert tick is not None
    assert tick.depth is None and tick.bid is None and tick.ask is None
    assert (tick.volume, tick.last_quantity, tick.exchange_ts) == (0, 0, RECEIVED)


def test_the_arrival_time_is_cut_to_kites_whole_second_so_later_ticks_are_not_stale() -> None:
    snapshot = kite(TickMode.QUOTE, bids=(), asks=(), exchange_timestamp=None)
    arrived = RECEIVED.replace(microsecond=734_512)
    first = market_tick(snapshot, symbol="R", exchange="NSE", received=arrived)
    same_second = market_tick(
        kite(exchange_timestamp=RECEIVED), symbol="R", exchange="NSE", received=arrived
    )
    assert first is not None and same_second is not None
    assert first.exchange_ts == RECEIVED
    assert not tick_is_stale(first.exchange_ts, same_second)


def test_last_trade_time_stands_in_for_a_missing_exchange_time() -> None:
    traded = datetime(2026, 3, 2, 4, 0, 1, tzinfo=UTC)
    tick = market_tick(
        kite(exchange_timestamp=None, last_trade_time=traded),
        symbol="R",
        exchange="NSE",
        received=RECEIVED,
    )
    assert tick is not None and tick.exchange_ts == traded


def test_a_tick_without_a_price_is_not_published() -> None:
    assert (
        market_tick(kite(last_price=D("0")), symbol="R", exchange="NSE", received=RECEIVED) is None
    )


def test_a_book_not_best_first_is_dropped_not_passed_on() -> None:
    crossed = kite(asks=(DepthLevel(1, D("1250.20"), 1), DepthLevel(1, D("1250.10"), 1)))
    assert depth_of(crossed) is None
    tick = market_tick(crossed, symbol="R", exchange="NSE", received=RECEIVED)
    assert tick is not None and tick.depth is None
    assert isinstance(depth_of(kite()), MarketDepth)
