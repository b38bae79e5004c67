"""The local Kite server's market: a seeded price walk, a 5-level book and a matcher. Pure.

No I/O and no clock: the server drives `step()` and passes the time in. The model, kept
deliberately small and documented in docs/ZERODHA.md:

- Each tradable instrument has a mid price on its tick grid (the tick size its row of the
  instruments master states: ₹0.05 by default, ₹0.01 for IDEA, as NSE has for stocks below
  ₹250). A step moves it by -2..+2 ticks (never below one tick) and rebuilds the book
  around it: best bid one tick below the mid, best ask one tick above, 5 levels a side
  one tick apart, each with a seeded quantity (1..20 lots) and order count. Rebuilding
  restores liquidity, as a real book refills.
- A MARKET order walks the opposite side best first and takes one trade per level touched
  (the partial fills a real exchange reports), removing what it took from the book. What
  the 5 levels cannot fill stays open and is matched against later books (IOC: cancelled).
- A LIMIT order fills against the levels at or better than its price; the rest stays open
  and is matched on later steps when the book crosses it.
- Indices have no book; they only move, in steps of ₹0.01 (an index is a computed value
  with two decimals, off any tick grid), whatever tick size their master row states.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from alpha_panda.zerodha.ticker_protocol import (
    SEGMENT_INDICES,
    DepthLevel,
    KiteTick,
    TickMode,
    segment_of,
)

LEVELS = 5
INDEX_STEP = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class FakeInstrument:
    instrument_token: int
    tradingsymbol: str
    exchange: str
    price: Decimal
    tick_size: Decimal = Decimal("0.05")
    lot_size: int = 1
    name: str = ""

    @property
    def is_index(self) -> bool:
        return segment_of(self.instrument_token) == SEGMENT_INDICES

    @property
    def price_step(self) -> Decimal:
        """What one step of the walk moves the price by."""
        return INDEX_STEP if self.is_index else self.tick_size

    @property
    def segment(self) -> str:
        return "INDICES" if self.is_index else self.exchange

    @property
    def instrument_type(self) -> str:
        # Kite lists indices as instrument_type EQ in segment INDICES.
        return "EQ"


# Real tokens of a few NSE instruments (segment 1) and NIFTY 50 (segment 9); made-up prices.
DEFAULT_INSTRUMENTS: tuple[FakeInstrument, ...] = (
    FakeInstrument(738561, "RELIANCE", "NSE", Decimal("1250.00"), name="RELIANCE INDUSTRIES"),
    FakeInstrument(408065, "INFY", "NSE", Decimal("1500.00"), name="INFOSYS"),
    FakeInstrument(2953217, "TCS", "NSE", Decimal("3400.00"), name="TATA CONSULTANCY SERV"),
    FakeInstrument(341249, "HDFCBANK", "NSE", Decimal("1650.00"), name="HDFC BANK"),
    FakeInstrument(779521, "SBIN", "NSE", Decimal("800.00"), name="STATE BANK OF INDIA"),
    FakeInstrument(256265, "NIFTY 50", "NSE", Decimal("24000.00"), name="NIFTY 50"),
    FakeInstrument(
        3677697, "IDEA", "NSE", Decimal("8.50"), tick_size=Decimal("0.01"), name="VODAFONE IDEA"
    ),
)


@dataclass(slots=True)
class Level:
    price: Decimal
    quantity: int
    orders: int = 1


@dataclass(slots=True)
class Book:
    bids: list[Level] = field(default_factory=list)  # best (highest) first
    asks: list[Level] = field(default_factory=list)  # best (lowest) first


@dataclass(frozen=True, slots=True)
class Fill:
    price: Decimal
    quantity: int


def match(book: Book, side: str, quantity: int, limit: Decimal | None) -> list[Fill]:
    """Take up to `quantity` from the opposite side; one fill per level touched.

    `side` is the order's side (BUY takes asks). `limit` None is a market order. The book is
    changed in place: what was taken is gone, emptied levels removed.
    """
    if quantity <= 0:
        return []
    levels = book.asks if side == "BUY" else book.bids
    fills: list[Fill] = []
    remaining = quantity
    while remaining and levels:
        level = levels[0]
        if limit is not None and (level.price > limit if side == "BUY" else level.price < limit):
            break
        take = min(remaining, level.quantity)
        fills.append(Fill(level.price, take))
        remaining -= take
        level.quantity -= take
        if level.quantity == 0:
            levels.pop(0)
    return fills


@dataclass(slots=True)
class _State:
    instrument: FakeInstrument
    mid: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int = 0
    turnover: Decimal = Decimal(0)
    last_quantity: int = 0
    book: Book = field(default_factory=Book)


class FakeMarket:
    """Prices and books of the server's instruments, moved by a seeded walk."""

    def __init__(self, instruments: tuple[FakeInstrument, ...], seed: int = 7) -> None:
        self._rng = random.Random(seed)
        self.instruments = {i.instrument_token: i for i in instruments}
        self.by_symbol = {(i.exchange, i.tradingsymbol): i for i in instruments}
        self._states: dict[int, _State] = {}
        for inst in instruments:
            state = _State(inst, inst.price, inst.price, inst.price, inst.price, inst.price)
            self._states[inst.instrument_token] = state
            self._rebuild(state)
        self.pinned: set[int] = set()  # books set by hand: the walk leaves them alone

    def book(self, token: int) -> Book:
        return self._states[token].book

    def mid(self, token: int) -> Decimal:
        return self._states[token].mid

    def set_book(
        self, token: int, bids: list[tuple[Decimal, int]], asks: list[tuple[Decimal, int]]
    ) -> None:
        """Replace a book (tests); the walk no longer moves this instrument."""
        state = self._states[token]
        state.book = Book(
            bids=[Level(Decimal(p), q) for p, q in bids],
            asks=[Level(Decimal(p), q) for p, q in asks],
        )
        # The last price stays on the tick grid: the best bid (or ask) of the new book.
        if bids or asks:
            state.mid = Decimal((bids or asks)[0][0])
        self.pinned.add(token)

    def step(self) -> None:
        for token, state in self._states.items():
            if token in self.pinned:
                continue
            step = state.instrument.price_step
            move = self._rng.randint(-2, 2) * step
            state.mid = max(step, state.mid + move)
            state.high = max(state.high, state.mid)
            state.low = min(state.low, state.mid)
            if not state.instrument.is_index:
                traded = self._rng.randint(1, 50) * state.instrument.lot_size
                state.last_quantity = traded
                state.volume += traded
                state.turnover += traded * state.mid
                self._rebuild(state)

    def record_trade(self, token: int, price: Decimal, quantity: int) -> None:
        state = self._states[token]
        state.last_quantity = quantity
        state.volume += quantity
        state.turnover += quantity * price

    def _rebuild(self, state: _State) -> None:
        if state.instrument.is_index:
            return
        tick, lot = state.instrument.tick_size, state.instrument.lot_size
        rng = self._rng
        state.book = Book(
            bids=[
                Level(state.mid - tick * (i + 1), rng.randint(1, 20) * lot, rng.randint(1, 5))
                for i in range(LEVELS)
            ],
            asks=[
                Level(state.mid + tick * (i + 1), rng.randint(1, 20) * lot, rng.randint(1, 5))
                for i in range(LEVELS)
            ],
        )

    def tick(self, token: int, mode: TickMode, now: datetime) -> KiteTick:
        state = self._states[token]
        inst = state.instrument
        if mode is TickMode.LTP:
            return KiteTick(token, mode, not inst.is_index, state.mid)
        if inst.is_index:
            return KiteTick(
                token,
                mode,
                False,
                state.mid,
                open=state.open,
                high=state.high,
                low=state.low,
                close=state.close,
                change=state.mid - state.close,
                exchange_timestamp=now if mode is TickMode.FULL else None,
            )
        average = (
            (state.turnover / state.volume).quantize(inst.tick_size) if state.volume else state.mid
        )
        book = state.book
        full = mode is TickMode.FULL
        return KiteTick(
            token,
            mode,
            True,
            state.mid,
            last_quantity=state.last_quantity,
            average_price=average,
            volume=state.volume,
            buy_quantity=sum(lv.quantity for lv in book.bids),
            sell_quantity=sum(lv.quantity for lv in book.asks),
            open=state.open,
            high=state.high,
            low=state.low,
            close=state.close,
            change=state.mid - state.close,
            last_trade_time=now if full else None,
            oi=0 if full else None,
            oi_day_high=0 if full else None,
            oi_day_low=0 if full else None,
            exchange_timestamp=now if full else None,
            bids=tuple(DepthLevel(lv.quantity, lv.price, lv.orders) for lv in book.bids[:LEVELS])
            if full
            else (),
            asks=tuple(DepthLevel(lv.quantity, lv.price, lv.orders) for lv in book.asks[:LEVELS])
            if full
            else (),
        )
