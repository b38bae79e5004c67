"""Fee schedules, each expected figure worked out by hand from the published rates."""

from __future__ import annotations

from decimal import Decimal

import pytest

from alpha_panda.domain.fees import FeeSchedule
from models.events import FeeBreakdown, Side

D = Decimal


def test_intraday_buy_caps_brokerage_at_rs_20() -> None:
    # 40 x 2500 = 100000. Brokerage 0.03% = 30 -> capped 20. Exchange 100000 x 0.00297% =
    # 2.97. SEBI 100000 x 0.000001 = 0.10. Stamp 0.003% = 3.00. No STT on an intraday buy.
    # GST 18% x (20 + 2.97 + 0.10 = 23.07) = 4.1526 -> 4.15.
    fees = FeeSchedule.intraday().compute(Side.BUY, D("100000"))
    assert fees == FeeBreakdown(
        brokerage=D("20.00"),
        stt=D("0.00"),
        exchange_txn=D("2.97"),
        sebi=D("0.10"),
        stamp_duty=D("3.00"),
        gst=D("4.15"),
    )
    assert fees.total == D("30.22")


def test_intraday_sell_pays_stt_and_no_stamp() -> None:
    # 37 x 1234.55 = 45678.35. Brokerage 0.03% = 13.703505 -> 13.70 (under the cap).
    # STT 0.025% = 11.4195875 -> 11.42. Exchange 0.00297% = 1.356646995 -> 1.36.
    # SEBI 0.04567835 -> 0.05. Stamp only on buys. GST 18% x 15.11 = 2.7198 -> 2.72.
    fees = FeeSchedule.intraday().compute(Side.SELL, D("37") * D("1234.55"))
    assert fees == FeeBreakdown(
        brokerage=D("13.70"),
        stt=D("11.42"),
        exchange_txn=D("1.36"),
        sebi=D("0.05"),
        stamp_duty=D("0"),
        gst=D("2.72"),
    )
    assert fees.total == D("29.25")


def test_delivery_buy() -> None:
    # 10 x 2900.05 = 29000.50. No brokerage. STT 0.1% = 29.0005 -> 29.00.
    # Exchange 0.86131485 -> 0.86. SEBI 0.0290005 -> 0.03. Stamp 0.015% = 4.350075 -> 4.35.
    # GST 18% x (0 + 0.86 + 0.03) = 0.1602 -> 0.16.
    fees = FeeSchedule.delivery().compute(Side.BUY, D("29000.50"))
    assert fees == FeeBreakdown(
        brokerage=D("0"),
        stt=D("29.00"),
        exchange_txn=D("0.86"),
        sebi=D("0.03"),
        stamp_duty=D("4.35"),
        gst=D("0.16"),
    )
    assert fees.total == D("34.40")


def test_delivery_sell() -> None:
    # 200 x 1501.25 = 300250. STT 0.1% = 300.25. Exchange 8.917425 -> 8.92. SEBI 0.30025
    # -> 0.30. No stamp on a sell. GST 18% x 9.22 = 1.6596 -> 1.66.
    fees = FeeSchedule.delivery().compute(Side.SELL, D("300250"))
    assert fees == FeeBreakdown(
        brokerage=D("0"),
        stt=D("300.25"),
        exchange_txn=D("8.92"),
        sebi=D("0.30"),
        stamp_duty=D("0"),
        gst=D("1.66"),
    )
    assert fees.total == D("311.13")


def test_half_paise_rounds_up() -> None:
    # Intraday buy of 5000: SEBI is exactly 0.005 and exchange 0.1485; half-up gives 0.01
    # and 0.15 (banker's rounding would give 0.00 for SEBI). Brokerage 1.50, stamp 0.15,
    # GST 18% x (1.50 + 0.15 + 0.01) = 0.2988 -> 0.30.
    fees = FeeSchedule.intraday().compute(Side.BUY, D("5000"))
    assert fees.sebi == D("0.01")
    assert fees.exchange_txn == D("0.15")
    assert fees.gst == D("0.30")
    assert fees.total == D("2.11")


def test_brokerage_cap_boundary() -> None:
    # 0.03% reaches Rs 20 at a notional of 66666.67 (20.000001); just below it is charged.
    intraday = FeeSchedule.intraday()
    assert intraday.compute(Side.BUY, D("66000")).brokerage == D("19.80")
    assert intraday.compute(Side.BUY, D("66666.67")).brokerage == D("20.00")
    assert intraday.compute(Side.BUY, D("10000000")).brokerage == D("20.00")


def test_negative_notional_is_a_bug() -> None:
    with pytest.raises(ValueError, match="negative"):
        FeeSchedule.intraday().compute(Side.BUY, D("-1"))


def test_the_brokerage_cap_is_per_order_across_its_fills() -> None:
    schedule = FeeSchedule.intraday()
    # 100000 x 0.03% = 30, capped at 20; with 15 already charged to the order, 5 is left.
    assert schedule.compute(Side.BUY, Decimal("100000"), Decimal("15")).brokerage == Decimal("5.00")
    assert schedule.compute(Side.BUY, Decimal("100000"), Decimal("20")).brokerage == Decimal("0")
    assert schedule.compute(Side.BUY, Decimal("100000"), Decimal("25")).brokerage == Decimal("0")
    # Below the cap the earlier fills do not matter: 1000 x 0.03% = 0.30.
    assert schedule.compute(Side.BUY, Decimal("1000"), Decimal("15")).brokerage == Decimal("0.30")
    with pytest.raises(ValueError, match="brokerage_charged"):
        schedule.compute(Side.BUY, Decimal("1"), Decimal("-1"))
