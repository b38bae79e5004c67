"""Pure price sanity check for incoming ticks: the price band and the tick size.

A tick whose price moved more than ``band_pct`` percent from the instrument's previous
accepted price, or whose price is not a whole multiple of the instrument's tick size, is
not a market price anyone can trade at: a feed defect, a mis-scaled field, a fat finger.
One such tick (RELIANCE at 1e12) once made a portfolio's equity 21 trillion rupees. Every
stage that books or acts on ticks (strategy runner, trading engine, portfolio manager)
calls :func:`check_tick_price` where a tick enters it and dead-letters a tick that fails,
with the reason, instead of acting on it.

NSE's price bands are 2, 5, 10 and 20 % (``NSE_PRICE_BANDS_PCT``); the default is the
widest. The comparison is with the previous *accepted* price, so one bad tick does not
make the next good one look like a jump back. The first tick of an instrument (no
previous price) is checked for the tick size only.

The tick size is the instrument's own (:class:`TickSizes`): NSE's depends on the price
(₹0.01 below ₹250 since June 2024, coarser above) and is revised monthly, so it is read
from Kite's instruments master, never derived here. An index is a computed value, not a
traded price: it has no grid (``None``), only the band.

Pure: Decimal in, a reason or ``None`` out. No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from types import MappingProxyType
from typing import Protocol

NSE_PRICE_BANDS_PCT = (Decimal(2), Decimal(5), Decimal(10), Decimal(20))
DEFAULT_BAND_PCT = Decimal(20)
# For an instrument whose tick size is unknown (the mock feed's, or a Kite tick before the
# master is loaded): the finest grid of NSE equities. Every NSE equity price, on whatever
# grid it trades, is a multiple of it, so no valid tick is refused; a price with more than
# two decimals still is.
DEFAULT_TICK_SIZE = Decimal("0.01")
INDICES_SEGMENT = "INDICES"  # Kite's segment of an index in its instruments master

OUT_OF_BAND = "PriceBand.out_of_band"
OFF_TICK_SIZE = "PriceBand.off_tick_size"


@dataclass(frozen=True)
class PriceBand:
    band_pct: Decimal = DEFAULT_BAND_PCT

    def __post_init__(self) -> None:
        if not self.band_pct > 0:
            raise ValueError("band_pct must be positive")


class MasterRow(Protocol):
    """What :meth:`TickSizes.from_master` reads of a row of Kite's instruments master."""

    @property
    def instrument_token(self) -> int: ...
    @property
    def tick_size(self) -> Decimal: ...
    @property
    def segment(self) -> str: ...


@dataclass(frozen=True)
class TickSizes:
    """Each instrument's tick size: its own where known, else ``default``.

    ``known`` maps an instrument token to its tick size, or to ``None`` for an index (no
    grid). Looking one up is a dict lookup: the guard runs it on every tick.
    """

    default: Decimal = DEFAULT_TICK_SIZE
    known: Mapping[int, Decimal | None] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.default > 0:
            raise ValueError("the default tick size must be positive")

    def of(self, instrument_token: int) -> Decimal | None:
        return self.known.get(instrument_token, self.default)

    @classmethod
    def from_master(cls, rows: Iterable[MasterRow], default: Decimal) -> TickSizes:
        """An index has no grid whatever tick size its row states (Kite lists its futures'
        grid or 0 there); a row with no positive tick size is left to the default."""
        known: dict[int, Decimal | None] = {}
        for row in rows:
            if row.segment == INDICES_SEGMENT:
                known[row.instrument_token] = None
            elif row.tick_size > 0:
                known[row.instrument_token] = row.tick_size
        return cls(default=default, known=MappingProxyType(known))


@dataclass(frozen=True)
class PriceRejection:
    """Why a tick's price is refused: ``kind`` is the DLQ error type."""

    kind: str
    reason: str


def check_tick_price(
    price: Decimal, previous: Decimal | None, band: PriceBand, tick_size: Decimal | None
) -> PriceRejection | None:
    """``None`` when ``price`` is acceptable after ``previous``; else why not.

    ``tick_size`` is the instrument's (``TickSizes.of``); ``None`` checks the band only.
    """
    # Enough precision that the remainder of any price by any tick size is exact.
    with localcontext(Context(prec=80)):
        return _check(price, previous, band, tick_size)


def _check(
    price: Decimal, previous: Decimal | None, band: PriceBand, tick_size: Decimal | None
) -> PriceRejection | None:
    if tick_size is not None and price % tick_size != 0:
        return PriceRejection(
            OFF_TICK_SIZE, f"price {price} is not a multiple of the tick size {tick_size}"
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
