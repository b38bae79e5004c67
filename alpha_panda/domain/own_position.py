"""A strategy's own position and fills as booked, for the strategy to read (issue 16).

The strategy runner keeps one :class:`OwnPosition` per ``strategy_id:instrument_token``,
booked from the strategy's fills (``orders.filled.*``) and rejections
(``trading.signals.rejected``); the backtest books the same after each fill and rejection.
The strategy host hands it to the strategy with each tick (``BaseStrategy.own_position``)
and uses it for the MIS square-off. It is frozen: a strategy reads it, never changes it.

Pure: no Faust, no I/O, no clock; money exact (``Decimal``), positions averaged exactly as
the portfolio manager averages them (:func:`tables.portfolio.average_cost_step`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from alpha_panda.domain.session_rules import SESSION_REASONS
from models.events import OrderFill, RejectedSignal, Side
from tables.portfolio import average_cost_step

ZERO = Decimal("0")
# The fills and the rejection a strategy can read back; the ids kept to drop a record
# delivered twice (a redelivery after a crash, or an engine that produced a fill twice
# within its commit window, as the portfolio manager allows for: tables/portfolio.py).
RECENT_FILLS_BOUND = 10
RECENT_IDS_BOUND = 200
_NO_SOURCES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class OwnPosition:
    """What a strategy's fills and rejections on one instrument add up to."""

    # Booked shares, signed (negative: short, e.g. a SELL of shares whose BUY was refused).
    quantity: int = 0
    avg_price: Decimal = ZERO  # average cost of ``quantity``; 0 when flat
    realized_pnl: Decimal = ZERO  # fees excluded
    fees_paid: Decimal = ZERO
    opened_ts: datetime | None = None  # fill time that opened the current position
    fill_count: int = 0
    recent_fills: tuple[OrderFill, ...] = ()  # newest last
    rejection_count: int = 0
    last_rejection: RejectedSignal | None = None
    # Shares of refused BUYs and SELLs, the trading day's refusals left out (the host
    # foresees those): what the strategy's implied position counted but never traded.
    refused_buy_shares: int = 0
    refused_sell_shares: int = 0
    recent_ids: tuple[str, ...] = ()  # fill ids and rejected signal ids, oldest first
    # "topic:partition" -> the last offset booked from it, of the record the runner
    # forwarded (orders.filled.* or trading.signals.rejected). A strategy's records reach
    # it from one partition of each, in order, so any depth of replay (which forwards them
    # again, at new offsets of the runner's topics) is recognised, however old.
    # Read-only, as the rest of the view.
    source_offsets: Mapping[str, int] = field(default_factory=lambda: _NO_SOURCES)

    def already_booked(self, at: tuple[str, int] | None) -> bool:
        """Whether the record forwarded from ``at`` ("topic:partition", offset) was."""
        if at is None:
            return False
        last = self.source_offsets.get(at[0])
        return last is not None and at[1] <= last

    def _after(self, at: tuple[str, int] | None) -> Mapping[str, int]:
        if at is None:
            return self.source_offsets
        return MappingProxyType({**self.source_offsets, at[0]: at[1]})

    def book_fill(self, fill: OrderFill, at: tuple[str, int] | None = None) -> OwnPosition | None:
        """This position after ``fill``, read from ``at`` (the forwarded record's source;
        None: unknown, as in the backtest); None when that record or that fill id was
        booked already."""
        if self.already_booked(at) or fill.fill_id in self.recent_ids:
            return None
        signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
        quantity, avg_price, realized = average_cost_step(
            self.quantity, self.avg_price, signed, fill.fill_price
        )
        if quantity == 0:
            opened = None
        elif self.quantity == 0 or (quantity > 0) != (self.quantity > 0):
            opened = fill.filled_ts  # opened, or reversed through zero
        else:
            opened = self.opened_ts
        return replace(
            self,
            quantity=quantity,
            avg_price=avg_price,
            realized_pnl=self.realized_pnl + realized,
            fees_paid=self.fees_paid + fill.fees,
            opened_ts=opened,
            fill_count=self.fill_count + 1,
            recent_fills=(*self.recent_fills, fill)[-RECENT_FILLS_BOUND:],
            recent_ids=(*self.recent_ids, fill.fill_id)[-RECENT_IDS_BOUND:],
            source_offsets=self._after(at),
        )

    def book_rejection(
        self, rejected: RejectedSignal, at: tuple[str, int] | None = None
    ) -> OwnPosition | None:
        """This position after the refusal of one of its signals (by risk or the engine),
        read from ``at`` as for :meth:`book_fill`; None when that record or that signal's
        rejection was booked already."""
        if self.already_booked(at) or rejected.signal_event_id in self.recent_ids:
            return None
        signal = rejected.signal
        foreseen = rejected.reason in SESSION_REASONS
        buys = signal.quantity if signal.side is Side.BUY and not foreseen else 0
        sells = signal.quantity if signal.side is Side.SELL and not foreseen else 0
        return replace(
            self,
            rejection_count=self.rejection_count + 1,
            last_rejection=rejected,
            refused_buy_shares=self.refused_buy_shares + buys,
            refused_sell_shares=self.refused_sell_shares + sells,
            recent_ids=(*self.recent_ids, rejected.signal_event_id)[-RECENT_IDS_BOUND:],
            source_offsets=self._after(at),
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "quantity": self.quantity,
            "avg_price": str(self.avg_price),
            "realized_pnl": str(self.realized_pnl),
            "fees_paid": str(self.fees_paid),
            "opened_ts": None if self.opened_ts is None else self.opened_ts.isoformat(),
            "fill_count": self.fill_count,
            "recent_fills": [f.model_dump(mode="json") for f in self.recent_fills],
            "rejection_count": self.rejection_count,
            "last_rejection": (
                None if self.last_rejection is None else self.last_rejection.model_dump(mode="json")
            ),
            "refused_buy_shares": self.refused_buy_shares,
            "refused_sell_shares": self.refused_sell_shares,
            "recent_ids": list(self.recent_ids),
            "source_offsets": dict(self.source_offsets),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> OwnPosition:
        opened = data["opened_ts"]
        last_rejection = data["last_rejection"]
        return cls(
            quantity=int(data["quantity"]),
            avg_price=Decimal(data["avg_price"]),
            realized_pnl=Decimal(data["realized_pnl"]),
            fees_paid=Decimal(data["fees_paid"]),
            opened_ts=None if opened is None else datetime.fromisoformat(opened),
            fill_count=int(data["fill_count"]),
            recent_fills=tuple(OrderFill.model_validate(f) for f in data["recent_fills"]),
            rejection_count=int(data["rejection_count"]),
            last_rejection=(
                None if last_rejection is None else RejectedSignal.model_validate(last_rejection)
            ),
            refused_buy_shares=int(data["refused_buy_shares"]),
            refused_sell_shares=int(data["refused_sell_shares"]),
            recent_ids=tuple(data["recent_ids"]),
            source_offsets=MappingProxyType(
                {str(k): int(v) for k, v in data["source_offsets"].items()}
            ),
        )


# What a strategy with no fill and no rejection yet sees (not None: None means the host
# was given no view at all, and then sizes the square-off from the implied position).
NOTHING_BOOKED = OwnPosition()
