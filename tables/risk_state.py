"""Risk limits, the kill switch and the per-strategy pre-trade risk state.

Pure domain values; the rules that read them live in :mod:`alpha_panda.domain.risk_rules`. State is
kept per strategy because the risk agent sees all of one strategy's signals, in order, from
one partition. It is pre-trade: an approved signal is assumed to fill at its reference
price; the portfolio manager holds the booked truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from alpha_panda.domain.products import Product
from models.config import RuntimeConfig
from models.events import InstrumentToken, RejectionReason, StrategyId, UtcDatetime
from tables.indexed_log import IndexedLog

IST = ZoneInfo("Asia/Kolkata")
ORDER_RATE_WINDOW = timedelta(seconds=60)
# A replayed signal is one redelivered after a crash or rebalance, i.e. from the last few
# seconds of the partition; 500 decisions per strategy covers that (risk caps orders per
# minute, and rejected bursts are short) while
# keeping the stored state (written on every signal) small.
SEEN_SIGNALS_BOUND = 500

ZERO = Decimal("0")


def trading_day_of(ts: datetime) -> date:
    """The NSE trading day a timestamp belongs to: its calendar day in Asia/Kolkata."""
    return ts.astimezone(IST).date()


class RiskDefaults(Protocol):
    """The global defaults :meth:`RiskLimits.from_settings` reads (``settings.risk``), named
    structurally so this pure module does not import the settings."""

    @property
    def max_order_quantity(self) -> int: ...
    @property
    def max_order_notional(self) -> Decimal: ...
    @property
    def max_position_quantity(self) -> int: ...
    @property
    def max_gross_exposure(self) -> Decimal: ...
    @property
    def max_daily_loss(self) -> Decimal: ...
    @property
    def max_orders_per_minute(self) -> int: ...
    @property
    def allowed_instruments(self) -> str: ...
    @property
    def allow_short(self) -> bool: ...
    @property
    def product(self) -> str: ...
    @property
    def allow_pre_open(self) -> bool: ...


class RiskConfigError(ValueError):
    """A risk limit or override is invalid; the message names the field and the rule.

    ``field`` is the limit's name when one limit is at fault (None for several or none)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RiskLimits(_Frozen):
    max_order_quantity: int = Field(gt=0)
    max_order_notional: Decimal = Field(gt=0)
    max_position_quantity: int = Field(gt=0, description="Absolute, per instrument.")
    max_gross_exposure: Decimal = Field(
        gt=0, description="Sum over instruments of |quantity| * last reference price."
    )
    max_daily_loss: Decimal = Field(gt=0, description="A positive amount of rupees.")
    max_orders_per_minute: int = Field(gt=0)
    allowed_instruments: frozenset[InstrumentToken] | None = Field(
        default=None, description="None allows every instrument."
    )
    allow_short: bool = False
    # Trading rules beside the limits, overridable per strategy the same way: the product
    # decides the MIS cut-off (alpha_panda/domain/products.py says what else it decides);
    # allow_pre_open admits 09:00-09:08 order entry.
    product: Product = "MIS"
    allow_pre_open: bool = False

    @field_validator(
        "max_order_quantity", "max_position_quantity", "max_orders_per_minute", mode="before"
    )
    @classmethod
    def _no_bool_for_int(cls, value: Any) -> Any:
        # pydantic would read True as 1; in a limit that is a configuration mistake.
        if isinstance(value, bool):
            raise ValueError("must be a whole number, not a boolean")
        return value

    @field_validator("allowed_instruments", mode="before")
    @classmethod
    def _parse_instrument_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_instrument_list(value)
        if value is not None and not value:
            # Same rule as the config store: "allow nothing" is a mistake; None allows all.
            raise ValueError("an empty list would block every instrument; use None to allow all")
        return value

    @classmethod
    def from_settings(cls, settings: RiskDefaults) -> RiskLimits:
        return cls._build(
            {
                "max_order_quantity": settings.max_order_quantity,
                "max_order_notional": settings.max_order_notional,
                "max_position_quantity": settings.max_position_quantity,
                "max_gross_exposure": settings.max_gross_exposure,
                "max_daily_loss": settings.max_daily_loss,
                "max_orders_per_minute": settings.max_orders_per_minute,
                "allowed_instruments": settings.allowed_instruments,
                "allow_short": settings.allow_short,
                "product": settings.product,
                "allow_pre_open": settings.allow_pre_open,
            }
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> RiskLimits:
        """These limits with a strategy's overrides applied (same validation as defaults).

        ``allowed_instruments`` may be given as a comma separated string, a list of tokens
        or None (all instruments).
        """
        unknown = sorted(set(overrides) - set(type(self).model_fields))
        if unknown:
            known = ", ".join(type(self).model_fields)
            raise RiskConfigError(
                f"unknown risk limit field(s) {', '.join(unknown)}; known fields: {known}"
            )
        return self._build({**self.model_dump(), **overrides})

    @classmethod
    def _build(cls, values: Mapping[str, Any]) -> RiskLimits:
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'limits'}: {_rule_text(err)} "
                f"(got {err['input']!r})"
                for err in exc.errors()
            )
            raise RiskConfigError(f"invalid risk limits: {problems}") from None


def _rule_text(error: ErrorDetails) -> str:
    # Our own validators' messages read better without pydantic's "Value error, " prefix.
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]


def parse_instrument_list(text: str) -> frozenset[int] | None:
    """``"738561, 408065"`` -> those tokens; an empty string means every instrument.

    Raises ValueError naming the bad entry.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        return None
    tokens: set[int] = set()
    for part in parts:
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"{part!r} is not a positive instrument token")
        tokens.add(int(part))
    return frozenset(tokens)


_INT_LIMITS = ("max_order_quantity", "max_position_quantity", "max_orders_per_minute")
_DECIMAL_LIMITS = ("max_order_notional", "max_gross_exposure", "max_daily_loss")
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_BOOL_WORDS.update({"false": False, "no": False, "off": False, "0": False})


def stored_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy's risk overrides, checked by :class:`RiskLimits`' own field rules, in the
    JSON-safe form the configuration store keeps (Decimals as strings, tokens sorted).

    Accepts native values (the web API's JSON) and text (the CLI's ``--risk name=value``):
    text is stripped, a product upper-cased, ``yes``/``on``/``1`` (and their opposites) read
    as booleans, an empty instrument list read as None (every instrument). Raises
    :class:`RiskConfigError` naming the first bad limit in ``field``.
    """
    known = tuple(RiskLimits.model_fields)
    clean: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in RiskLimits.model_fields:
            raise RiskConfigError(f"unknown risk limit (known: {', '.join(known)})", key)
        value = _from_text(key, raw)
        try:
            checked = _ANY_LIMITS.model_validate({**_ANY_LIMITS.model_dump(), key: value})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RiskConfigError(f"{_rule_text(err)}, got {raw!r}", key) from None
        stored = getattr(checked, key)
        if key in _DECIMAL_LIMITS:
            stored = str(stored)
        elif key == "allowed_instruments" and stored is not None:
            stored = sorted(stored)
        clean[key] = stored
    return clean


def _from_text(key: str, value: Any) -> Any:
    """The stored/native value for ``key`` given as text (the CLI) or as a JSON value."""
    if isinstance(value, bool):
        if key in _INT_LIMITS or key in _DECIMAL_LIMITS:
            raise RiskConfigError(f"must be a positive number, got {value!r}", key)
        return value
    if key in _INT_LIMITS:
        return _whole(key, value)
    if key in _DECIMAL_LIMITS:
        # Through str() so a JSON float 0.1 becomes Decimal("0.1"), not its binary expansion.
        try:
            return Decimal(str(value).strip())
        except ArithmeticError:
            raise RiskConfigError(f"must be a positive number, got {value!r}", key) from None
    if key in ("allow_short", "allow_pre_open"):
        word = _BOOL_WORDS.get(str(value).strip().lower())
        if word is None:
            raise RiskConfigError(f"must be true or false, got {value!r}", key)
        return word
    if key == "product":
        return str(value).strip().upper()
    if key == "allowed_instruments":
        # None (JSON null, or empty text) means "every instrument", as an empty
        # ALPHA_PANDA_RISK_ALLOWED_INSTRUMENTS; it lets one strategy lift a global list.
        if value is None:
            return None
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
            if not value:
                return None
        elif not isinstance(value, list | tuple):
            raise RiskConfigError("must be a list of instrument tokens", key)
        return [_whole(key, v) for v in value]
    return value


def _whole(key: str, value: Any) -> int:
    # Whole numbers only: a float (even 2.0), "2.5" or a boolean is a mistake, not a rounding.
    if isinstance(value, bool):
        raise RiskConfigError(f"must be a positive whole number, got {value!r}", key)
    try:
        return value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise RiskConfigError(f"must be a positive whole number, got {value!r}", key) from None


class KillSwitch(_Frozen):
    halt_all: bool = False
    halted_strategies: frozenset[str] = frozenset()

    @classmethod
    def of(cls, config: RuntimeConfig) -> KillSwitch:
        """The halts in force in ``config`` (the risk manager's and the engine's one view)."""
        return cls(halt_all=config.halt_all, halted_strategies=config.halted_strategies)

    def halts(self, strategy_id: str) -> bool:
        return self.halt_all or strategy_id in self.halted_strategies


class SeenSignal(_Frozen):
    """The decision taken for a signal id, so a replay can re-emit the same outcome."""

    event_id: str = Field(min_length=1)
    rejection: RejectionReason | None = Field(description="None when it was approved.")


def _event_id(seen: SeenSignal) -> str:
    return seen.event_id


class StrategyRiskState(_Frozen):
    """Everything risk remembers about one strategy. Transitions build new instances.

    Containers are plain dicts/tuples for cheap JSON; they are never mutated in place.
    """

    strategy_id: StrategyId
    trading_day: date | None = Field(
        default=None, description="Asia/Kolkata day of the latest signal; None before any."
    )
    positions: dict[InstrumentToken, int] = Field(default_factory=dict)
    avg_price: dict[InstrumentToken, Decimal] = Field(default_factory=dict)
    last_price: dict[InstrumentToken, Decimal] = Field(
        default_factory=dict, description="Latest reference price from this strategy's signals."
    )
    realized_pnl_today: Decimal = ZERO
    halted_for_day: bool = False
    recent_order_ts: tuple[UtcDatetime, ...] = Field(
        default=(), description="Approved orders' signal times within the rate window."
    )
    seen_signals: tuple[SeenSignal, ...] = Field(
        default=(), description=f"Last {SEEN_SIGNALS_BOUND} decisions, oldest first."
    )

    @classmethod
    def new(cls, strategy_id: str) -> StrategyRiskState:
        return cls(strategy_id=strategy_id)

    @property
    def seen_signal_ids(self) -> tuple[str, ...]:
        return tuple(seen.event_id for seen in self.seen_signals)

    def seen(self, signal_event_id: str) -> SeenSignal | None:
        log = self.seen_signals
        if isinstance(log, IndexedLog):
            # One dict lookup instead of a scan of up to SEEN_SIGNALS_BOUND decisions.
            return log.find(signal_event_id)
        for seen in reversed(self.seen_signals):
            if seen.event_id == signal_event_id:
                return seen
        return None

    def position(self, token: int) -> int:
        return self.positions.get(token, 0)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> StrategyRiskState:
        return cls.model_validate(dict(data))

    def on_day(self, day: date) -> StrategyRiskState:
        """Roll to ``day`` if it is later: daily P&L, halt and rate counter reset.

        Positions, prices and seen ids carry over. An earlier day (a late signal) does not
        roll back: it is judged under the current day's state.
        """
        if self.trading_day is not None and day <= self.trading_day:
            return self
        return self.model_copy(
            update={
                "trading_day": day,
                "realized_pnl_today": ZERO,
                "halted_for_day": False,
                "recent_order_ts": (),
            }
        )

    def with_mark(self, token: int, price: Decimal) -> StrategyRiskState:
        return self.model_copy(update={"last_price": {**self.last_price, token: price}})

    def with_seen(
        self,
        signal_event_id: str,
        rejection: RejectionReason | None,
        update: Mapping[str, Any] | None = None,
    ) -> StrategyRiskState:
        """This state having decided ``signal_event_id``; ``update`` changes other fields in
        the same copy (an approval's new position: one copy per decision, not two)."""
        seen = IndexedLog.appended(
            self.seen_signals,
            SeenSignal(event_id=signal_event_id, rejection=rejection),
            _event_id,
            SEEN_SIGNALS_BOUND,
        )
        # model_copy does not validate, so the indexed tuple is kept as it is.
        return self.model_copy(update={**(update or {}), "seen_signals": seen})

    def orders_in_window(self, ts: datetime) -> int:
        """Approved orders in the 60 s window ending at ``ts``: (ts - 60 s, ts]."""
        start = ts - ORDER_RATE_WINDOW
        return sum(1 for order_ts in self.recent_order_ts if start < order_ts <= ts)

    def unrealized_pnl(self) -> Decimal:
        """Open positions marked at the last reference price (at cost when none is known)."""
        total = ZERO
        for token, quantity in self.positions.items():
            if quantity:
                avg = self.avg_price.get(token, ZERO)
                total += (self.last_price.get(token, avg) - avg) * quantity
        return total

    def gross_exposure(self, positions: Mapping[int, int] | None = None) -> Decimal:
        """Sum of |quantity| * last reference price, of ``positions`` (default: current)."""
        held = self.positions if positions is None else positions
        total = ZERO
        for token, quantity in held.items():
            if quantity:
                price = self.last_price.get(token, self.avg_price.get(token, ZERO))
                total += abs(quantity) * price
        return total


# Any valid limits: stored_overrides checks one override against them, so only it can fail.
_ANY_LIMITS = RiskLimits(
    max_order_quantity=1,
    max_order_notional=Decimal(1),
    max_position_quantity=1,
    max_gross_exposure=Decimal(1),
    max_daily_loss=Decimal(1),
    max_orders_per_minute=1,
)
