"""The price band and tick-size check: pure, Decimal-exact."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from alpha_panda.domain.price_band import (
    NSE_PRICE_BANDS_PCT,
    OFF_TICK_SIZE,
    OUT_OF_BAND,
    PriceBand,
    check_tick_price,
)
from alpha_panda.domain.strategy_host import StrategyStateEntry, entry_is_behind, previous_price

BAND = PriceBand()  # 20 %, 0.05


def test_defaults_are_the_widest_nse_band_and_the_nse_tick_size() -> None:
    assert BAND.band_pct == max(NSE_PRICE_BANDS_PCT) == D(20)
    assert BAND.tick_size == D("0.05")


@pytest.mark.parametrize(
    ("price", "previous"),
    [
        ("2900.05", None),  # first tick of an instrument: tick size only
        ("3480.00", "2900"),  # exactly +20 %
        ("2320.00", "2900"),  # exactly -20 %
        ("0.05", None),
        ("2901.35", "2900.00"),
    ],
)
def test_prices_inside_the_band_and_on_the_grid_pass(price: str, previous: str | None) -> None:
    assert check_tick_price(D(price), D(previous) if previous else None, BAND) is None


@pytest.mark.parametrize(
    ("price", "previous", "moved"),
    [
        ("3480.05", "2900", "20.00"),  # one tick above +20 %
        ("2319.95", "2900", "20.00"),
        ("1000000000000", "2900", "34482758520.69"),  # the RELIANCE-at-1e12 tick
        ("0.05", "2900", "100.00"),
    ],
)
def test_prices_outside_the_band_are_refused_with_the_move(
    price: str, previous: str, moved: str
) -> None:
    rejection = check_tick_price(D(price), D(previous), BAND)
    assert rejection is not None
    assert rejection.kind == OUT_OF_BAND
    assert rejection.reason == (
        f"price {price} is {moved} % from the previous price {previous}, outside the 20 % band"
    )


@pytest.mark.parametrize("price", ["2900.01", "2900.07", "0.01", "1E+12", "2900.0500001"])
def test_prices_off_the_tick_grid_are_refused(price: str) -> None:
    off = price != "1E+12"  # 1e12 is a multiple of 0.05; it fails the band instead
    rejection = check_tick_price(D(price), D("2900"), BAND)
    if off:
        assert rejection is not None and rejection.kind == OFF_TICK_SIZE
        assert rejection.reason == f"price {price} is not a multiple of the tick size 0.05"
    else:
        assert rejection is not None and rejection.kind == OUT_OF_BAND


@pytest.mark.parametrize("band", NSE_PRICE_BANDS_PCT)
def test_each_nse_band_is_a_boundary(band: D) -> None:
    narrow = PriceBand(band_pct=band, tick_size=D("0.05"))
    previous = D(1000)
    edge = previous * (1 + band / 100)
    assert check_tick_price(edge, previous, narrow) is None
    assert check_tick_price(edge + D("0.05"), previous, narrow) is not None


def test_a_configured_tick_size_is_used() -> None:
    paise = PriceBand(tick_size=D("0.01"))
    assert check_tick_price(D("2900.01"), D(2900), paise) is None
    assert check_tick_price(D("2900.015"), D(2900), paise) is not None


def test_band_and_tick_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriceBand(band_pct=D(0))
    with pytest.raises(ValueError):
        PriceBand(tick_size=D(0))


def test_the_strategy_runner_reference_is_the_most_advanced_entrys_price() -> None:
    def entry(offset: int, px: str | None = None) -> StrategyStateEntry:
        return StrategyStateEntry(offset, {}, price=None if px is None else D(px))

    entries = [
        entry(7, "101.00"),
        None,  # a strategy added since: no entry yet
        entry(9, "102.50"),
        entry(3),  # written before prices were recorded
    ]
    assert previous_price(entries) == D("102.50")
    assert previous_price([None, entry(1)]) is None
    assert entry_is_behind(None, 5) and entry_is_behind(entry(4), 5)
    assert not entry_is_behind(entry(5), 5)
