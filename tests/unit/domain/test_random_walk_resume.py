"""The mock feed's walk continues from a given price and volume (a restart's resume)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alpha_panda.domain.price_band import PriceBand, check_tick_price
from alpha_panda.domain.random_walk import TICK_SIZE, InstrumentSpec, RandomWalkFeed
from tests.factories import T0

NIFTY = InstrumentSpec(256265, "NIFTY 50", Decimal("22000"))


def test_resume_continues_from_the_given_price_and_volume() -> None:
    feed = RandomWalkFeed([NIFTY], seed=1, volatility_bps=Decimal("8"))
    feed.resume(NIFTY.token, Decimal("23456.75"), 90_000)

    tick = feed.step(T0)
    # One step of 8 bps volatility from 23456.75, on the tick grid, within any band.
    assert abs(tick.last_price - Decimal("23456.75")) < Decimal("23456.75") * Decimal("0.01")
    previous = Decimal("23456.75")
    assert check_tick_price(tick.last_price, previous, PriceBand(Decimal(2)), TICK_SIZE) is None
    assert tick.volume > 90_000


def test_resume_of_an_unconfigured_instrument_is_refused() -> None:
    feed = RandomWalkFeed([NIFTY], seed=1, volatility_bps=Decimal("8"))
    with pytest.raises(KeyError):
        feed.resume(1, Decimal("10"), 0)
