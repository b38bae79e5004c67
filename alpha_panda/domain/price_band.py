"""Pure price sanity check for incoming ticks: the price band and the tick size.

A tick whose price moved more than ``band_pct`` percent from the instrument's previous
accepted price, or whose price is not a whole multiple of the exchange tick size, is not
a market price anyone can trade at: a feed defect, a mis-scaled field, a fat finger. One
such tick (RELIANCE at 1e12) once made a portfolio's equity 21 trillion rupees. Every
stage that books or acts on ticks (strategy runner, trading engine, portfolio manager)
calls :func:`check_tick_price` where a tick enters it and dead-letters a tick that fails,
with the reason, instead of acting on it.

NSE's price bands are 2, 5, 10 and 20 % (``NSE_PRICE_BANDS_PCT``); the default is the
widest. The comparison is with the previous *accepted* price, so one bad tick does not
make the next good one look like a jump back. The first tick of an instrument (no
previous price) is checked for the tick size only.

Pure: Decimal in, a reason or ``None`` out. No clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

NSE_PRICE_BANDS_PCT = (Decimal(2), Decimal(5), Decimal(10), Decimal(20))
DEFAULT_BAND_PCT = Decimal(20)
DEFAULT_TICK_SIZE = Decimal("0.05")

OUT_OF_BAND = "PriceBand.out_of_band"
OFF_TICK_SIZE = "PriceBand.off_tick_size"


@dataclass(frozen=True)
class PriceBand:
    band_pct: Decimal = DEFAULT_BAND_PCT
    tick_size: Decimal = DEFAULT_TICK_SIZE

    def __post_init__(self) -> None:
        if not (self.band_pct > 0 and self.tick_size > 0):
            raise ValueError("band_pct and tick_size must be positive")


@dataclass(frozen=True)
class PriceRejection:
    """Why a tick's price is refused: ``kind`` is the DLQ error type."""

    kind: str
    reason: str


def check_tick_price(
    price: Decimal, previous: Decimal | None, band: PriceBand
) -> PriceRejection | None:
    """``None`` when ``price`` is acceptable after ``previous``; else why not."""
    # Enough precision that the remainder of any price by any tick size is exact.
    with localcontext(Context(prec=80)):
        return _check(price, previous, band)


def _check(price: Decimal, previous: Decimal | None, band: PriceBand) -> PriceRejection | None:
    if price % band.tick_size != 0:
        return PriceRejection(
            OFF_TICK_SIZE, f"price {price} is not a multiple of the tick size {band.tick_size}"
        )
    if previous is None or previous <= 0:
        return None
    limit = previous * band.band_pct / 100
    move = abs(price - previous)
    if move > limit:
        moved_pct = (move * 100 / previous).quantize(Decimal("0.01"))
        return PriceRejection(
            OUT_OF_BAND,
            f"price {price} is {moved_pct} % from the previous price {previous}, "
            f"outside the {band.band_pct} % band",
        )
    return None
