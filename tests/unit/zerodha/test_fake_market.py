"""The local Kite server's market: matcher partial fills, the seeded walk, ticks it builds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alpha_panda.zerodha.fake_market import (
    DEFAULT_INSTRUMENTS,
    LEVELS,
    Book,
    FakeMarket,
    Fill,
    Level,
    match,
)
from alpha_panda.zerodha.ticker_protocol import (
    TickMode,
    encode_frame,
    encode_packet,
    parse_binary_frame,
)

D = Decimal
INFY, NIFTY, IDEA = 408065, 256265, 3677697
NOW = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)


def sample_book() -> Book:
    return Book(
        bids=[Level(D("99.95"), 10), Level(D("99.90"), 20)],
        asks=[Level(D("100.05"), 5), Level(D("100.10"), 7), Level(D("100.15"), 9)],
    )


def test_market_buy_walks_the_asks_one_fill_per_level() -> None:
    book = sample_book()
    assert match(book, "BUY", 14, None) == [
        Fill(D("100.05"), 5),
        Fill(D("100.10"), 7),
        Fill(D("100.15"), 2),
    ]
    # What was taken is gone: the touched levels are emptied or reduced.
    assert [(lv.price, lv.quantity) for lv in book.asks] == [(D("100.15"), 7)]
    assert len(book.bids) == 2


def test_market_sell_bigger_than_the_book_fills_what_is_there() -> None:
    book = sample_book()
    fills = match(book, "SELL", 100, None)
    assert fills == [Fill(D("99.95"), 10), Fill(D("99.90"), 20)]
    assert book.bids == []
    assert match(book, "SELL", 1, None) == []


def test_limit_stops_at_its_price() -> None:
    book = sample_book()
    assert match(book, "BUY", 20, D("100.10")) == [Fill(D("100.05"), 5), Fill(D("100.10"), 7)]
    assert match(book, "SELL", 20, D("100.00")) == []
    assert match(sample_book(), "SELL", 15, D("99.90")) == [
        Fill(D("99.95"), 10),
        Fill(D("99.90"), 5),
    ]


def test_zero_quantity_matches_nothing() -> None:
    assert match(sample_book(), "BUY", 0, None) == []


def test_walk_is_seeded_and_stays_on_each_instruments_tick_grid() -> None:
    a, b = FakeMarket(DEFAULT_INSTRUMENTS, seed=3), FakeMarket(DEFAULT_INSTRUMENTS, seed=3)
    other = FakeMarket(DEFAULT_INSTRUMENTS, seed=4)
    for _ in range(50):
        a.step()
        b.step()
        other.step()
    assert a.mid(INFY) == b.mid(INFY)
    assert [a.mid(t) for t in a.instruments] != [other.mid(t) for t in other.instruments]
    for token, inst in a.instruments.items():
        assert a.mid(token) % inst.price_step == 0 and a.mid(token) > 0
    # IDEA trades in paise; the index is a computed value in paise, whatever tick size its
    # row of the master states.
    assert a.instruments[IDEA].tick_size == a.instruments[IDEA].price_step == D("0.01")
    assert a.instruments[NIFTY].tick_size == D("0.05") != a.instruments[NIFTY].price_step
    assert any(m.mid(t) % D("0.05") for m in (a, other) for t in (IDEA, NIFTY))
    book = a.book(INFY)
    assert len(book.bids) == LEVELS and len(book.asks) == LEVELS
    assert book.bids[0].price < a.mid(INFY) < book.asks[0].price
    assert all(x.price > y.price for x, y in zip(book.bids, book.bids[1:], strict=False))


def test_pinned_book_is_left_alone_by_the_walk() -> None:
    market = FakeMarket(DEFAULT_INSTRUMENTS)
    market.set_book(INFY, [(D("10.00"), 1)], [(D("10.05"), 2)])
    for _ in range(5):
        market.step()
    assert market.mid(INFY) == D("10.00")
    assert [(lv.price, lv.quantity) for lv in market.book(INFY).asks] == [(D("10.05"), 2)]


def test_ticks_encode_and_parse_back_in_every_mode() -> None:
    market = FakeMarket(DEFAULT_INSTRUMENTS)
    for _ in range(3):
        market.step()
    packets = [
        encode_packet(market.tick(token, mode, NOW)) for token in (INFY, NIFTY) for mode in TickMode
    ]
    assert sorted(len(p) for p in packets) == [8, 8, 28, 32, 44, 184]
    parsed = parse_binary_frame(encode_frame(packets))
    assert parsed.errors == []
    full = next(t for t in parsed.ticks if t.instrument_token == INFY and t.mode is TickMode.FULL)
    book = market.book(INFY)
    assert [lv.price for lv in full.asks] == [lv.price for lv in book.asks]
    assert full.sell_quantity == sum(lv.quantity for lv in book.asks)
    assert full.exchange_timestamp == NOW and full.last_trade_time == NOW
