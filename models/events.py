"""Event payloads carried inside :class:`models.envelope.EventEnvelope`.

Prices and money are ``Decimal`` (serialised as JSON strings) so cash and P&L never see
binary floating point. Quantities are whole shares (Indian cash equities).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (ISO 8601 with Z or an offset)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Price = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=4)]
Money = Annotated[Decimal, Field(max_digits=20, decimal_places=4)]
InstrumentToken = Annotated[int, Field(gt=0)]
# The strategy-id rule, its one home: the event field below, the configuration store's column
# and checks (models/db.py, alpha_panda/db.py) and the API's path parameter (web/) all use it.
STRATEGY_ID_MAX_LENGTH = 64
_STRATEGY_ID_CHARS = "A-Za-z0-9_.-"
STRATEGY_ID_PATTERN = rf"^[{_STRATEGY_ID_CHARS}]+$"
# The same rule with the length in it, as one expression (an OpenAPI path parameter's pattern).
STRATEGY_ID_FULL_PATTERN = rf"^[{_STRATEGY_ID_CHARS}]{{1,{STRATEGY_ID_MAX_LENGTH}}}$"
StrategyId = Annotated[
    str, Field(min_length=1, max_length=STRATEGY_ID_MAX_LENGTH, pattern=STRATEGY_ID_PATTERN)
]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class ExecutionMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class RejectionReason(StrEnum):
    """Machine-readable reasons; `detail` on the event carries the human text."""

    MAX_ORDER_QUANTITY = "max_order_quantity"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION = "max_position"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    DAILY_LOSS_HALT = "daily_loss_halt"
    ORDER_RATE = "order_rate"
    INSTRUMENT_NOT_ALLOWED = "instrument_not_allowed"
    KILL_SWITCH = "kill_switch"
    SHORT_SELLING_NOT_ALLOWED = "short_selling_not_allowed"
    NO_MARKET_PRICE = "no_market_price"
    LIVE_TRADING_NOT_CONFIGURED = "live_trading_not_configured"
    STRATEGY_UNKNOWN = "strategy_unknown"
    # Since trading.signal.rejected v3 (issue 16): the NSE trading day refused it.
    MARKET_CLOSED = "market_closed"
    MIS_CUTOFF = "mis_cutoff"
    # Since trading.signal.rejected v2 (issue 13): the broker refused the order (detail
    # carries its message), or could not be asked (token expired, breaker open, 5xx).
    BROKER_REJECTED = "broker_rejected"
    BROKER_UNAVAILABLE = "broker_unavailable"


REJECTION_REASONS_SINCE_V2 = frozenset(
    {RejectionReason.BROKER_REJECTED, RejectionReason.BROKER_UNAVAILABLE}
)
REJECTION_REASONS_SINCE_V3 = frozenset({RejectionReason.MARKET_CLOSED, RejectionReason.MIS_CUTOFF})


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


MAX_DEPTH_LEVELS = 5


class DepthLevel(_Payload):
    """One price level of the order book (Kite's full-mode depth entry)."""

    quantity: int = Field(gt=0, description="Shares bid or offered at this price.")
    price: Price
    orders: int = Field(ge=0, description="Number of orders at this price.")


class MarketDepth(_Payload):
    """Up to five levels a side, best first (bids high to low, asks low to high)."""

    bids: tuple[DepthLevel, ...] = Field(default=(), max_length=MAX_DEPTH_LEVELS)
    asks: tuple[DepthLevel, ...] = Field(default=(), max_length=MAX_DEPTH_LEVELS)

    @model_validator(mode="after")
    def _best_first(self) -> MarketDepth:
        bid_prices = [level.price for level in self.bids]
        ask_prices = [level.price for level in self.asks]
        if bid_prices != sorted(bid_prices, reverse=True):
            raise ValueError("bids must be ordered best (highest price) first")
        if ask_prices != sorted(ask_prices):
            raise ValueError("asks must be ordered best (lowest price) first")
        return self


class MarketTick(_Payload):
    """A trade print. Version 1 carries no depth; version 2 adds the optional ``depth``.

    A tick without depth serialises exactly as version 1 did (``depth`` is left out rather
    than written as null), so every v1 record still reads and re-encodes byte for byte.
    """

    instrument_token: InstrumentToken
    symbol: str = Field(min_length=1, max_length=64)
    exchange: str = Field(default="NSE", min_length=1, max_length=16)
    last_price: Price
    volume: int = Field(ge=0, description="Cumulative traded volume for the day.")
    last_quantity: int = Field(default=0, ge=0)
    bid: Price | None = None
    ask: Price | None = None
    exchange_ts: UtcDatetime
    depth: MarketDepth | None = Field(default=None, description="Since version 2.")

    @model_serializer(mode="wrap")
    def _omit_missing_depth(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if self.depth is None:
            data.pop("depth", None)
        return data


class TradingSignal(_Payload):
    strategy_id: StrategyId
    instrument_token: InstrumentToken
    symbol: str = Field(min_length=1, max_length=64)
    side: Side
    quantity: int = Field(gt=0)
    order_type: OrderType = OrderType.MARKET
    limit_price: Price | None = None
    reference_price: Price = Field(description="Last price the strategy saw.")
    execution_mode: ExecutionMode = ExecutionMode.PAPER
    signal_ts: UtcDatetime = Field(description="Exchange time of the tick that caused it.")
    reason: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _limit_price_iff_limit(self) -> TradingSignal:
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("limit_price is required for a LIMIT order")
        if self.order_type is OrderType.MARKET and self.limit_price is not None:
            raise ValueError("limit_price must be empty for a MARKET order")
        return self

    @property
    def key(self) -> str:
        return f"{self.strategy_id}:{self.instrument_token}"


class ValidatedSignal(_Payload):
    signal_event_id: str = Field(min_length=1)
    signal: TradingSignal
    validated_ts: UtcDatetime


REJECTION_DETAIL_MAX = 500


class RejectedSignal(_Payload):
    signal_event_id: str = Field(min_length=1)
    signal: TradingSignal
    reason: RejectionReason
    detail: str = Field(default="", max_length=REJECTION_DETAIL_MAX)
    rejected_by: str = Field(min_length=1, description="Stage that rejected it.")
    rejected_ts: UtcDatetime


class FeeBreakdown(_Payload):
    brokerage: Money = Decimal("0")
    stt: Money = Decimal("0")
    exchange_txn: Money = Decimal("0")
    sebi: Money = Decimal("0")
    stamp_duty: Money = Decimal("0")
    gst: Money = Decimal("0")

    @property
    def total(self) -> Decimal:
        return (
            self.brokerage + self.stt + self.exchange_txn + self.sebi + self.stamp_duty + self.gst
        )


# The breakdown of a fill without one: compared against on every fill's validation, so
# built once rather than per fill.
_NO_FEE_BREAKDOWN = FeeBreakdown()


class OrderFill(_Payload):
    fill_id: str = Field(min_length=1)
    order_id: str = Field(min_length=1)
    signal_event_id: str = Field(min_length=1)
    strategy_id: StrategyId
    instrument_token: InstrumentToken
    symbol: str = Field(min_length=1, max_length=64)
    side: Side
    quantity: int = Field(gt=0)
    fill_price: Price
    fees: Money = Field(ge=0)
    fee_breakdown: FeeBreakdown = FeeBreakdown()
    execution_mode: ExecutionMode
    filled_ts: UtcDatetime
    # Since order.filled v2 (issue 16). The reason of the signal that placed the order
    # (e.g. "mis_square_off: ..."), so a forced exit is visible wherever fills are. Left
    # out of the JSON when absent, so a fill without one encodes exactly as v1 did.
    reason: str | None = Field(default=None, max_length=500, exclude_if=lambda v: v is None)

    @model_validator(mode="after")
    def _fees_add_up(self) -> OrderFill:
        # The sum first: it usually matches, which spares the model comparison.
        if self.fee_breakdown.total != self.fees and self.fee_breakdown != _NO_FEE_BREAKDOWN:
            raise ValueError("fees must equal the sum of fee_breakdown")
        return self

    @property
    def notional(self) -> Decimal:
        return self.fill_price * self.quantity
