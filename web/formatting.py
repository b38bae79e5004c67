"""Money and price formatting shared by the read API and ``alpha-panda run``'s summary.

Its own module so the terminal summary (web/summary.py, imported by the ``run`` command)
does not import the HTTP layer for two functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import structlog

log = structlog.get_logger(__name__)

PAISE = Decimal("0.01")


def money(value: Decimal) -> str:
    """``value`` in rupees, rounded half-up to paise, as a plain decimal string."""
    rounded = value.quantize(PAISE, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.00"
    return f"{rounded:f}"


def parse_prices(raw: Mapping[str, Any]) -> dict[int, Decimal]:
    """``{token: {"price": "2901.35", ...}}`` (table or mirror form) -> ``{token: price}``."""
    prices: dict[int, Decimal] = {}
    for token, entry in raw.items():
        try:
            value = json.loads(entry) if isinstance(entry, str | bytes) else entry
            price = Decimal(str(value["price"]))
            if price.is_finite() and price > 0:
                prices[int(token)] = price
        except (ValueError, KeyError, TypeError, InvalidOperation):
            log.warning("bad_price_entry", token=str(token)[:32])
    return prices
