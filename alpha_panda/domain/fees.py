"""NSE equity transaction charges, modelled on Zerodha's published schedule.

Rates and their sources are in docs/TRADING_RULES.md. Each component is rounded to paise
(ROUND_HALF_UP) as a contract note shows it, and GST is charged on the rounded brokerage,
exchange transaction and SEBI amounts, so the components always add up to the total.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel, ConfigDict, Field

from models.events import FeeBreakdown, Side

PAISE = Decimal("0.01")
ZERO = Decimal("0")


def to_paise(amount: Decimal) -> Decimal:
    return amount.quantize(PAISE, rounding=ROUND_HALF_UP)


class FeeSchedule(BaseModel):
    """Rates are fractions of notional: 0.03% is ``Decimal("0.0003")``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    brokerage_rate: Decimal = Field(ge=0)
    brokerage_cap: Decimal | None = Field(
        default=None, ge=0, description="Rupees per executed order; None = uncapped."
    )
    stt_buy_rate: Decimal = Field(default=Decimal("0"), ge=0)
    stt_sell_rate: Decimal = Field(default=Decimal("0"), ge=0)
    exchange_txn_rate: Decimal = Field(default=Decimal("0.0000297"), ge=0)
    sebi_rate: Decimal = Field(default=Decimal("0.000001"), ge=0)
    stamp_buy_rate: Decimal = Field(default=Decimal("0"), ge=0)
    gst_rate: Decimal = Field(
        default=Decimal("0.18"), ge=0, description="On brokerage + exchange txn + SEBI."
    )

    @classmethod
    def intraday(cls) -> FeeSchedule:
        """Zerodha equity intraday (MIS) on NSE."""
        return cls(
            brokerage_rate=Decimal("0.0003"),
            brokerage_cap=Decimal("20"),
            stt_sell_rate=Decimal("0.00025"),
            stamp_buy_rate=Decimal("0.00003"),
        )

    @classmethod
    def delivery(cls) -> FeeSchedule:
        """Zerodha equity delivery (CNC) on NSE."""
        return cls(
            brokerage_rate=Decimal("0"),
            stt_buy_rate=Decimal("0.001"),
            stt_sell_rate=Decimal("0.001"),
            stamp_buy_rate=Decimal("0.00015"),
        )

    def compute(
        self, side: Side, notional: Decimal, brokerage_charged: Decimal = ZERO
    ) -> FeeBreakdown:
        """Charges for one executed order of ``notional`` rupees (quantity * fill price).

        For one fill of an order executed in several (a depth walk, Kite's partial fills),
        ``brokerage_charged`` is the brokerage its earlier fills paid: the cap is per
        order, so a fill pays at most what the cap has left.
        """
        if notional < 0:
            raise ValueError(f"notional must not be negative, got {notional}")
        if brokerage_charged < 0:
            raise ValueError(f"brokerage_charged must not be negative, got {brokerage_charged}")
        raw_brokerage = notional * self.brokerage_rate
        if self.brokerage_cap is not None:
            raw_brokerage = min(raw_brokerage, max(ZERO, self.brokerage_cap - brokerage_charged))
        buying = side is Side.BUY
        brokerage = to_paise(raw_brokerage)
        exchange_txn = to_paise(notional * self.exchange_txn_rate)
        sebi = to_paise(notional * self.sebi_rate)
        return FeeBreakdown(
            brokerage=brokerage,
            stt=to_paise(notional * (self.stt_buy_rate if buying else self.stt_sell_rate)),
            exchange_txn=exchange_txn,
            sebi=sebi,
            stamp_duty=to_paise(notional * self.stamp_buy_rate if buying else ZERO),
            gst=to_paise((brokerage + exchange_txn + sebi) * self.gst_rate),
        )
