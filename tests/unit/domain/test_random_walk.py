"""The mock feed's price path: seeded, on the tick grid, round-robin, cumulative volume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alpha_panda.domain.random_walk import (
    TICK_SIZE,
    InstrumentSpec,
    RandomWalkFeed,
    parse_instruments,
)

T0 = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
SPECS = [
    InstrumentSpec(738561, "RELIANCE", Decimal("2900")),
    InstrumentSpec(408065, "INFY", Decimal("1500")),
]


def walk(seed: int, steps: int, specs: list[InstrumentSpec] = SPECS) -> list:
    feed = RandomWalkFeed(specs, seed=seed, volatility_bps=Decimal("8"))
    return [feed.step(T0 + timedelta(seconds=i)) for i in range(steps)]


def test_same_seed_gives_the_same_ticks_and_another_seed_does_not() -> None:
    first, again, other = walk(7, 200), walk(7, 200), walk(8, 200)
    assert [t.model_dump() for t in first] == [t.model_dump() for t in again]
    assert [t.last_price for t in first] != [t.last_price for t in other]


def test_instruments_take_turns_and_time_comes_from_the_caller() -> None:
    ticks = walk(1, 6)
    assert [t.instrument_token for t in ticks] == [738561, 408065] * 3
    assert [t.exchange_ts for t in ticks] == [T0 + timedelta(seconds=i) for i in range(6)]
    assert {t.symbol for t in ticks} == {"RELIANCE", "INFY"}


def test_prices_stay_on_the_tick_grid_with_a_one_tick_spread() -> None:
    for tick in walk(3, 500):
        assert tick.last_price % TICK_SIZE == 0
        assert tick.last_price >= TICK_SIZE
        assert tick.ask == tick.last_price + TICK_SIZE
        assert tick.bid == max(TICK_SIZE, tick.last_price - TICK_SIZE)


def test_each_move_is_small_relative_to_the_volatility() -> None:
    # 8 bps per step: a move of 1 % would be a 12-sigma draw.
    ticks = walk(5, 1000)
    previous = {s.token: s.start_price for s in SPECS}
    for tick in ticks:
        before = previous[tick.instrument_token]
        assert abs(tick.last_price - before) / before < Decimal("0.01")
        previous[tick.instrument_token] = tick.last_price


def test_volume_is_cumulative_per_instrument() -> None:
    ticks = walk(9, 40)
    for spec in SPECS:
        own = [t for t in ticks if t.instrument_token == spec.token]
        running = 0
        for tick in own:
            assert tick.last_quantity is not None and tick.last_quantity >= 1
            running += tick.last_quantity
            assert tick.volume == running


def test_a_price_never_walks_below_one_tick() -> None:
    penny = [InstrumentSpec(1, "PENNY", Decimal("0.05"))]
    feed = RandomWalkFeed(penny, seed=11, volatility_bps=Decimal("5000"))
    assert all(feed.step(T0).last_price >= TICK_SIZE for _ in range(300))


def test_parse_instruments_reads_the_setting_format() -> None:
    assert parse_instruments(" 256265:NIFTY 50:22000 , 738561:RELIANCE:2900.5,") == [
        InstrumentSpec(256265, "NIFTY 50", Decimal("22000")),
        InstrumentSpec(738561, "RELIANCE", Decimal("2900.5")),
    ]


@pytest.mark.parametrize(
    "bad", ["738561:RELIANCE", "x:RELIANCE:2900", "1:A:notaprice", "1:A:0", "1:A:-5", "1:A:NaN", ""]
)
def test_parse_instruments_names_the_setting_on_bad_input(bad: str) -> None:
    with pytest.raises(ValueError, match="ALPHA_PANDA_FEED_INSTRUMENTS"):
        parse_instruments(bad)
