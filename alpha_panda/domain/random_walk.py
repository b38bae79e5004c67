"""Seeded random-walk prices for the mock market feed (pure: no clock, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from models.events import MarketTick

TICK_SIZE = Decimal("0.05")


@dataclass(frozen=True)
class InstrumentSpec:
    token: int
    symbol: str
    start_price: Decimal


def parse_instruments(spec: str) -> list[InstrumentSpec]:
    """Parse "token:symbol:price,..." (the ALPHA_PANDA_FEED_INSTRUMENTS format)."""
    instruments = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            token, symbol, price = item.split(":")
            instrument = InstrumentSpec(int(token), symbol, Decimal(price))
        except (ValueError, ArithmeticError):  # decimal's InvalidOperation is no ValueError
            raise ValueError(
                f"ALPHA_PANDA_FEED_INSTRUMENTS: {item!r} is not token:symbol:start_price"
            ) from None
        if not instrument.start_price.is_finite() or instrument.start_price <= 0:
            raise ValueError(f"ALPHA_PANDA_FEED_INSTRUMENTS: {item!r} needs a positive start price")
        instruments.append(instrument)
    if not instruments:
        raise ValueError("ALPHA_PANDA_FEED_INSTRUMENTS: no instruments configured")
    return instruments


class RandomWalkFeed:
    """Round-robin over the instruments; each step moves one instrument by a seeded
    Gaussian return, rounded to the exchange tick size. Same seed, same price path."""

    def __init__(
        self,
        instruments: list[InstrumentSpec],
        seed: int,
        volatility_bps: Decimal,
        *,
        validate: bool = True,
    ):
        # validate=False builds ticks with model_construct: the values below are valid by
        # construction, and the backtest's million-tick runs spent a third of their time
        # re-checking them. The feed keeps validating (it runs at tens of ticks a second).
        self._make = MarketTick if validate else MarketTick.model_construct
        self._instruments = instruments
        self._rng = random.Random(seed)
        self._sigma = float(volatility_bps) / 10_000
        self._prices = {i.token: i.start_price for i in instruments}
        self._volume = {i.token: 0 for i in instruments}
        self._next = 0

    def resume(self, token: int, price: Decimal, volume: int) -> None:
        """Continue ``token``'s walk from its last published price and volume."""
        if token not in self._prices:
            raise KeyError(f"instrument {token} is not configured")
        self._prices[token] = price
        self._volume[token] = volume

    def step(self, exchange_ts: datetime) -> MarketTick:
        instrument = self._instruments[self._next]
        self._next = (self._next + 1) % len(self._instruments)
        # The random draw is a float, but it only chooses the move; the price itself is
        # Decimal and snapped to the tick grid.
        move = Decimal(str(round(self._rng.gauss(0.0, self._sigma), 8)))
        price = self._prices[instrument.token] * (1 + move)
        price = max(TICK_SIZE, (price / TICK_SIZE).quantize(Decimal(1), ROUND_HALF_UP) * TICK_SIZE)
        self._prices[instrument.token] = price
        quantity = self._rng.randint(1, 500)
        self._volume[instrument.token] += quantity
        spread = TICK_SIZE
        return self._make(
            instrument_token=instrument.token,
            symbol=instrument.symbol,
            last_price=price,
            volume=self._volume[instrument.token],
            last_quantity=quantity,
            bid=max(TICK_SIZE, price - spread),
            ask=price + spread,
            exchange_ts=exchange_ts,
        )
