"""The price band and tick-size check: pure, Decimal-exact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal as D

import pytest

from alpha_panda.domain.price_band import (
    DEFAULT_TICK_SIZE,
    NSE_PRICE_BANDS_PCT,
    OFF_TICK_SIZE,
    OUT_OF_BAND,
    PriceBand,
    PriceRejection,
    TickSizes,
    check_tick_price,
)
from alpha_panda.domain.random_walk import InstrumentSpec, RandomWalkFeed
from alpha_panda.domain.strategy_host import StrategyStateEntry, entry_is_behind, previous_price
from alpha_panda.zerodha.models import Instrument
from tests.factories import T0

BAND = PriceBand()  # 20 %
FIVE_PAISE = D("0.05")


def check(price: D, previous: D | None, band: PriceBand = BAND) -> PriceRejection | None:
    """The check for an instrument on NSE's ₹0.05 grid."""
    return check_tick_price(price, previous, band, FIVE_PAISE)


def test_defaults_are_the_widest_nse_band_and_the_finest_nse_equity_tick() -> None:
    assert BAND.band_pct == max(NSE_PRICE_BANDS_PCT) == D(20)
    assert TickSizes().default == DEFAULT_TICK_SIZE == D("0.01")


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
    assert check(D(price), D(previous) if previous else None) is None


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
    rejection = check(D(price), D(previous))
    assert rejection is not None
    assert rejection.kind == OUT_OF_BAND
    assert rejection.reason == (
        f"price {price} is {moved} % from the previous price {previous}, outside the 20 % band"
    )


@pytest.mark.parametrize("price", ["2900.01", "2900.07", "0.01", "1E+12", "2900.0500001"])
def test_prices_off_the_tick_grid_are_refused(price: str) -> None:
    off = price != "1E+12"  # 1e12 is a multiple of 0.05; it fails the band instead
    rejection = check(D(price), D("2900"))
    if off:
        assert rejection is not None and rejection.kind == OFF_TICK_SIZE
        assert rejection.reason == f"price {price} is not a multiple of the tick size 0.05"
    else:
        assert rejection is not None and rejection.kind == OUT_OF_BAND


@pytest.mark.parametrize("band", NSE_PRICE_BANDS_PCT)
def test_each_nse_band_is_a_boundary(band: D) -> None:
    narrow = PriceBand(band_pct=band)
    previous = D(1000)
    edge = previous * (1 + band / 100)
    assert check(edge, previous, narrow) is None
    assert check(edge + D("0.05"), previous, narrow) is not None


def test_a_one_paisa_instrument_is_checked_against_its_own_tick() -> None:
    paise = D("0.01")
    assert check_tick_price(D("123.41"), D("123.40"), BAND, paise) is None
    # The same tick against the one ₹0.05 grid every instrument once had: refused.
    assert check(D("123.41"), D("123.40")) == PriceRejection(
        OFF_TICK_SIZE, "price 123.41 is not a multiple of the tick size 0.05"
    )
    refused = check_tick_price(D("123.415"), D("123.40"), BAND, paise)
    assert refused == PriceRejection(
        OFF_TICK_SIZE, "price 123.415 is not a multiple of the tick size 0.01"
    )


def test_an_index_has_no_grid_but_keeps_the_band() -> None:
    assert check_tick_price(D("24012.37"), D("24000.00"), BAND, None) is None
    assert check_tick_price(D("24012.3"), None, BAND, None) is None
    jump = check_tick_price(D("1000000000000"), D("24000.00"), BAND, None)
    assert jump is not None and jump.kind == OUT_OF_BAND


@dataclass(frozen=True)
class Row:
    instrument_token: int
    tick_size: D
    segment: str


def test_tick_sizes_from_the_master_and_the_default_for_the_rest() -> None:
    sizes = TickSizes.from_master(
        [
            Row(738561, D("0.05"), "NSE"),
            Row(3677697, D("0.01"), "NSE"),
            Row(2953217, D("0.1"), "NSE"),
            Row(256265, D("0.05"), "INDICES"),  # an index row stating its futures' grid
            Row(260105, D("0"), "INDICES"),
            Row(1, D("0"), "NSE"),  # no usable size: left to the default
        ],
        default=D("0.01"),
    )
    assert sizes.of(738561) == D("0.05")
    assert sizes.of(3677697) == D("0.01")
    assert sizes.of(2953217) == D("0.1")
    assert sizes.of(256265) is None and sizes.of(260105) is None
    assert sizes.of(1) == D("0.01") and sizes.of(999) == D("0.01")
    assert sizes.default == D("0.01")


def test_rows_of_the_kite_instruments_master_give_tick_sizes() -> None:
    def row(token: int, symbol: str, tick_size: str, segment: str) -> Instrument:
        return Instrument.model_validate(
            {
                "instrument_token": token,
                "exchange_token": token >> 8,
                "tradingsymbol": symbol,
                "tick_size": tick_size,
                "lot_size": 1,
                "instrument_type": "EQ",
                "segment": segment,
                "exchange": "NSE",
            }
        )

    rows = [row(3677697, "IDEA", "0.01", "NSE"), row(256265, "NIFTY 50", "0", "INDICES")]
    sizes = TickSizes.from_master(rows, DEFAULT_TICK_SIZE)
    assert (sizes.of(3677697), sizes.of(256265)) == (D("0.01"), None)


def test_the_default_keeps_every_mock_feed_tick_and_refuses_sub_paisa_prices() -> None:
    """No master (the mock feed): the walk's ₹0.05 grid lies on the default's ₹0.01 grid."""
    sizes = TickSizes()
    specs = [InstrumentSpec(256265, "NIFTY 50", D("22000")), InstrumentSpec(5, "LOW", D("9.95"))]
    feed = RandomWalkFeed(specs, seed=3, volatility_bps=D("40"))
    for i in range(2_000):
        tick = feed.step(T0 + timedelta(seconds=i))
        size = sizes.of(tick.instrument_token)
        assert check_tick_price(tick.last_price, None, BAND, size) is None, tick.last_price
    refused = check_tick_price(D("2900.015"), None, BAND, sizes.of(5))
    assert refused is not None and refused.kind == OFF_TICK_SIZE


def test_band_and_tick_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriceBand(band_pct=D(0))
    with pytest.raises(ValueError):
        TickSizes(default=D(0))


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
