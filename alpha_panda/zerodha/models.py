"""Kite Connect REST payloads as frozen pydantic models with exact money.

Kite's JSON carries prices as JSON numbers: responses are decoded with `parse_float=Decimal`
so a price is the exact decimal Kite wrote. Order ids are strings (up to 19 digits; a number
would lose digits in JavaScript clients), coerced if a number arrives. Kite's timestamps are
IST wall-clock strings ("2026-11-30 09:15:02"); they become timezone-aware UTC datetimes.
Kite adds fields over time, so the response models ignore unknown fields (extra="ignore");
the request model `PlaceOrder` forbids them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

IST = timezone(timedelta(hours=5, minutes=30), "IST")
KITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_kite_time(value: Any) -> datetime | None:
    """Kite's IST "YYYY-MM-DD HH:MM:SS" (or ISO with offset) to an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=IST)
        return moment.astimezone(UTC)
    if isinstance(value, str):
        try:
            moment = datetime.strptime(value, KITE_TIME_FORMAT).replace(tzinfo=IST)
        except ValueError:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=IST)
        return moment.astimezone(UTC)
    raise ValueError(f"not a Kite timestamp: {value!r}")


def format_kite_time(moment: datetime) -> str:
    """An aware datetime as Kite writes it (IST wall clock)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(IST).strftime(KITE_TIME_FORMAT)


def _as_str(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _decimal(value: Any) -> Any:
    if isinstance(value, float):
        # Only reached when a caller decoded without parse_float=Decimal: repr is the shortest
        # string that round-trips, which is what Kite wrote.
        return Decimal(repr(value))
    return value


KiteTime = Annotated[datetime | None, BeforeValidator(parse_kite_time)]
OrderId = Annotated[str, BeforeValidator(_as_str)]
Money = Annotated[Decimal, BeforeValidator(_decimal)]

_TAG = re.compile(r"^[A-Za-z0-9]{1,20}$")


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class KiteSession(_Response):
    """The answer to POST /session/token. `access_token` is a secret: never log this object."""

    user_id: str
    user_name: str = ""
    user_shortname: str = ""
    email: str = ""
    broker: str = "ZERODHA"
    access_token: str = Field(repr=False)
    public_token: str = Field(default="", repr=False)
    login_time: KiteTime = None
    exchanges: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    order_types: tuple[str, ...] = ()


class KiteOrder(_Response):
    order_id: OrderId
    exchange_order_id: Annotated[str | None, BeforeValidator(_as_str)] = None
    parent_order_id: Annotated[str | None, BeforeValidator(_as_str)] = None
    status: str
    status_message: str | None = None
    placed_by: str = ""
    variety: str = "regular"
    exchange: str
    tradingsymbol: str
    instrument_token: int = 0
    transaction_type: Literal["BUY", "SELL"]
    order_type: str
    product: str
    validity: str = "DAY"
    quantity: int
    disclosed_quantity: int = 0
    price: Money = Decimal(0)
    trigger_price: Money = Decimal(0)
    average_price: Money = Decimal(0)
    filled_quantity: int = 0
    pending_quantity: int = 0
    cancelled_quantity: int = 0
    market_protection: Money = Decimal(0)
    tag: str | None = None
    tags: tuple[str, ...] | None = None
    guid: str | None = None
    order_timestamp: KiteTime = None
    exchange_timestamp: KiteTime = None
    exchange_update_timestamp: KiteTime = None


class KiteTrade(_Response):
    trade_id: OrderId
    order_id: OrderId
    exchange_order_id: Annotated[str | None, BeforeValidator(_as_str)] = None
    exchange: str
    tradingsymbol: str
    instrument_token: int = 0
    product: str
    transaction_type: Literal["BUY", "SELL"]
    average_price: Money
    quantity: int
    fill_timestamp: KiteTime = None
    order_timestamp: KiteTime = None
    exchange_timestamp: KiteTime = None


class Instrument(_Response):
    """One row of the daily instruments master (CSV)."""

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str = ""
    last_price: Money = Decimal(0)
    expiry: date | None = None
    strike: Money = Decimal(0)
    tick_size: Money
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str


class Candle(_Response):
    timestamp: datetime
    open: Money
    high: Money
    low: Money
    close: Money
    volume: int
    oi: int | None = None


class PlaceOrder(BaseModel):
    """The form for POST /orders/{variety}. Checked here so a bad order fails before Kite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tradingsymbol: str = Field(min_length=1)
    exchange: str = Field(min_length=1)
    transaction_type: Literal["BUY", "SELL"]
    quantity: int = Field(gt=0)
    product: Literal["MIS", "CNC", "NRML", "MTF"]
    order_type: Literal["MARKET", "LIMIT", "SL", "SL-M"]
    price: Decimal | None = Field(default=None, gt=0)
    trigger_price: Decimal | None = Field(default=None, gt=0)
    validity: Literal["DAY", "IOC", "TTL"] = "DAY"
    disclosed_quantity: int | None = Field(default=None, ge=0)
    # Percent (0 < x <= 100) or -1 for Kite's automatic value. Required non-zero for MARKET and
    # SL-M orders under the 2026 rules.
    market_protection: Decimal | None = None
    tag: str | None = None
    variety: Literal["regular"] = "regular"

    @model_validator(mode="after")
    def _consistent(self) -> PlaceOrder:
        if self.order_type in ("LIMIT", "SL") and self.price is None:
            raise ValueError(f"{self.order_type} orders need a price")
        if self.order_type in ("SL", "SL-M") and self.trigger_price is None:
            raise ValueError(f"{self.order_type} orders need a trigger_price")
        if self.order_type in ("MARKET", "SL-M"):
            if self.price is not None:
                raise ValueError(f"{self.order_type} orders take no price")
            protection = self.market_protection
            if protection is None or protection == 0:
                raise ValueError(f"{self.order_type} orders need a non-zero market_protection")
        if self.market_protection is not None and not (
            self.market_protection == -1 or 0 <= self.market_protection <= 100
        ):
            raise ValueError("market_protection is a percent (0..100) or -1 (automatic)")
        if self.tag is not None and not _TAG.match(self.tag):
            raise ValueError("tag must be 1-20 letters or digits")
        return self

    def form(self) -> dict[str, str]:
        """The url-encoded form Kite expects: absent fields are left out, numbers as text."""
        fields = self.model_dump(exclude_none=True, exclude={"variety"})
        # Fixed-point text: str(Decimal("1E+1")) would be "1E+1", which Kite does not read.
        return {k: format(v, "f") if isinstance(v, Decimal) else str(v) for k, v in fields.items()}
