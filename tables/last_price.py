"""The last-prices table's value: one shape for both stages that keep one.

The trading engine and the portfolio manager each keep last prices per instrument (in
their own consumer group's changelog). Both write this shape; each sets the optional
field only it needs, and its JSON is what each wrote before this type existed, so either
changelog reads back unchanged:
- ``offset``: the portfolio manager's redelivery guard (market.ticks offset of the tick);
- ``depth``: the trading engine's order book of the last tick (a later tick without
  depth clears it), for depth-walking paper fills.
:meth:`to_json_dict` / :meth:`from_json_dict` are the ``LAST_PRICES`` codec
(tables/specs.py); both stages' write-behind tables hold the value itself and encode it
once per commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from models.events import MarketDepth, MarketTick


@dataclass(frozen=True, slots=True)
class LastPrice:
    price: Decimal
    symbol: str
    ts: datetime  # the tick's exchange time
    offset: int | None = None
    depth: dict[str, Any] | None = None  # MarketDepth JSON; parsed only when used

    @classmethod
    def of_tick(
        cls, tick: MarketTick, *, offset: int | None = None, with_depth: bool = False
    ) -> LastPrice:
        depth = tick.depth.model_dump(mode="json") if with_depth and tick.depth else None
        return cls(tick.last_price, tick.symbol, tick.exchange_ts, offset, depth)

    def market_depth(self) -> MarketDepth | None:
        return None if self.depth is None else MarketDepth.model_validate(self.depth)

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "price": str(self.price),
            "symbol": self.symbol,
            "ts": self.ts.isoformat(),
        }
        if self.depth is not None:
            out["depth"] = self.depth
        if self.offset is not None:
            out["offset"] = self.offset
        return out

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any]) -> LastPrice:
        return cls(
            Decimal(raw["price"]),
            raw["symbol"],
            datetime.fromisoformat(raw["ts"]),
            raw.get("offset"),
            raw.get("depth"),
        )
