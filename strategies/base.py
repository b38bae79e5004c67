"""The contract every strategy implements, and the bookkeeping they all share.

A strategy is pure: it sees one instrument's ticks in exchange-time order and returns
the signals they imply. Time comes only from ``tick.exchange_ts``; there is no I/O, no
clock and no logging here, so replaying the same ticks always gives the same signals.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from decimal import Context, Decimal
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from alpha_panda.domain.own_position import OwnPosition
from models.events import (
    ExecutionMode,
    InstrumentToken,
    MarketTick,
    OrderType,
    Price,
    Side,
    StrategyId,
    TradingSignal,
    UtcDatetime,
)

# Bumped when the exported state layout changes, so an old table entry is refused
# loudly instead of being misread.
STATE_VERSION = 1

# Upper bound on any window/lookback: the window is exported into a Faust table on
# every change, so it must stay small enough to serialise cheaply.
MAX_WINDOW = 10_000


def _reject_bool(value: object) -> object:
    # pydantic's lax mode turns JSON `true` into 1; for a share count or window that
    # is a config typo, not a value.
    if isinstance(value, bool):
        raise ValueError("Input should be a whole number, not a boolean")
    return value


WholeNumber = Annotated[int, BeforeValidator(_reject_bool)]

_DISPLAY = Context(prec=40)


def format_decimal(value: Decimal, like: Decimal, min_places: int = 2) -> str:
    """`value` rounded to at least `min_places` decimals, or as many as `like` has.

    Used in signal reasons so a rounded figure printed next to its threshold never
    looks like it is on the wrong side of it.
    """
    exponent = like.as_tuple().exponent
    places = max(min_places, -exponent) if isinstance(exponent, int) else min_places
    quantum = _QUANTA.get(places)
    if quantum is None:
        quantum = _QUANTA[places] = Decimal(1).scaleb(-places)
    return str(value.quantize(quantum, context=_DISPLAY))


# places -> Decimal("1E-places"), built once: every signal's reason formats a few figures.
_QUANTA: dict[int, Decimal] = {}


class StrategyConfig(BaseModel):
    """Which strategy instance this is and what it trades."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy_id: StrategyId
    instrument_token: InstrumentToken
    symbol: str = Field(min_length=1, max_length=64)
    execution_mode: ExecutionMode = ExecutionMode.PAPER


class StrategyParams(BaseModel):
    """Base for each strategy's tunable parameters.

    Every strategy here sizes its entries with a fixed share count, so that field
    lives on the base and the signal-building code can rely on it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: WholeNumber = Field(gt=0, description="Shares bought on each entry.")


class _ExportedState(BaseModel):
    """Validated shape of :meth:`BaseStrategy.export_state` output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    kind: str
    strategy_id: StrategyId
    instrument_token: InstrumentToken
    last_exchange_ts: UtcDatetime | None
    position: int = Field(ge=0)
    # When the current position was opened (absent in snapshots from before it existed):
    # the MIS square-off closes a position carried into a later trading day.
    opened_ts: UtcDatetime | None = None
    prices: list[Price]
    extra: dict[str, Any] = Field(default_factory=dict)


ParamsT = TypeVar("ParamsT", bound=StrategyParams)


class BaseStrategy(ABC, Generic[ParamsT]):
    """One instance serves one (strategy_id, instrument_token).

    Subclasses only say when to enter and when to exit; this class owns the parts that
    must be identical for every strategy: tick ordering, the rolling price window,
    long-only position tracking, building the signal, and state export/restore.
    """

    kind: ClassVar[str]
    params_model: ClassVar[type[StrategyParams]]

    def __init__(self, config: StrategyConfig, params: ParamsT) -> None:
        if not isinstance(params, self.params_model):
            raise TypeError(
                f"{type(self).__name__} needs {self.params_model.__name__}, "
                f"got {type(params).__name__}"
            )
        self.config = config
        self.params: ParamsT = params
        self._token = config.instrument_token
        self._window = self._history_size()
        self._prices: deque[Decimal] = deque(maxlen=self._window)
        self._last_exchange_ts: datetime | None = None
        # Shares held according to this strategy's own signals (0 = flat). It is what
        # the strategy *asked for*; whether risk let it through is not visible here,
        # except that the host corrects it for the trading day's refusals (set_position).
        self._position = 0
        self._opened_ts: datetime | None = None
        # Its fills and rejections as booked (read-only; see own_position below).
        self._own: OwnPosition | None = None

    # -- what subclasses provide -------------------------------------------------------

    @abstractmethod
    def _history_size(self) -> int:
        """How many most-recent prices (including the current one) the rule needs."""

    @abstractmethod
    def _entry_reason(self, tick: MarketTick) -> str | None:
        """Called while flat, after the tick's price joined the window: why to BUY."""

    @abstractmethod
    def _exit_reason(self, tick: MarketTick) -> str | None:
        """Called while long, after the tick's price joined the window: why to SELL."""

    def _push_price(self, price: Decimal) -> None:
        """Add a price to the window; the oldest drops out once it is full. A strategy that
        keeps running aggregates of the window extends this (and :meth:`_window_restored`)."""
        self._prices.append(price)

    def _window_restored(self) -> None:
        """Called after :meth:`restore_state` replaced the window."""

    def _export_extra(self) -> dict[str, Any]:
        """JSON-safe state beyond the price window, for strategies that keep more."""
        return {}

    def _restore_extra(self, extra: Mapping[str, Any]) -> None:
        """Inverse of :meth:`_export_extra`."""

    # -- shared behaviour --------------------------------------------------------------

    @property
    def prices(self) -> tuple[Decimal, ...]:
        """The rolling window, oldest first."""
        return tuple(self._prices)

    @property
    def window_full(self) -> bool:
        return len(self._prices) == self._window

    @property
    def position(self) -> int:
        return self._position

    @property
    def is_long(self) -> bool:
        return self._position > 0

    @property
    def last_exchange_ts(self) -> datetime | None:
        return self._last_exchange_ts

    @property
    def opened_ts(self) -> datetime | None:
        """Exchange time of the signal that opened the current position (None if flat)."""
        return self._opened_ts

    @property
    def own_position(self) -> OwnPosition | None:
        """This strategy's position on its instrument as booked from its fills, with its
        recent fills and rejections; None where no host books them (a bare instance in a
        test). Set by the host before each tick: the runner's view arrives with the fills,
        so it may lag the implied :attr:`position` by the pipeline's latency (the backtest
        books each fill before the next tick). Not part of the exported state: the host
        hands it over again with every tick."""
        return self._own

    def see_own_position(self, own: OwnPosition | None) -> None:
        """Called by the host before each tick (docs/STRATEGIES.md, "Position and fills")."""
        self._own = own

    def set_position(self, quantity: int, opened_ts: datetime | None) -> None:
        """Correct the implied position from outside the strategy's own rules.

        Used by the host when it knows a signal will not be honoured (a closed market, the
        MIS cut-off) so the strategy does not go on believing in an order that never was.
        """
        if quantity < 0:
            raise ValueError("position cannot be negative (strategies are long-only)")
        self._position = quantity
        self._opened_ts = opened_ts if quantity > 0 else None

    def close_position(self, tick: MarketTick, reason: str) -> TradingSignal | None:
        """A MARKET SELL of the whole position, and flat; None when already flat.

        For exits the strategy's own rules did not decide (the MIS square-off). The tick
        must be one this instance has already processed (time still comes from it).
        """
        if self._position <= 0:
            return None
        signal = self._signal(tick, Side.SELL, self._position, reason)
        self.set_position(0, None)
        return signal

    def on_tick(self, tick: MarketTick) -> list[TradingSignal]:
        # Called for every tick of every strategy: attributes are read directly rather
        # than through the properties above (a backtest makes millions of these calls).
        if tick.instrument_token != self._token:
            raise ValueError(
                f"strategy {self.config.strategy_id!r} serves instrument "
                f"{self.config.instrument_token}, got a tick for {tick.instrument_token}"
            )
        # A replay after a crash re-delivers ticks already folded into restored state;
        # counting them twice would shift the window and change later signals.
        ts = tick.exchange_ts
        last = self._last_exchange_ts
        if last is not None and ts <= last:
            return []
        self._last_exchange_ts = ts
        self._push_price(tick.last_price)

        if self._position > 0:
            reason = self._exit_reason(tick)
            if reason is None:
                return []
            # Exit what is actually held, so a quantity change while long cannot leave
            # a remainder or oversell into a short.
            signal = self._signal(tick, Side.SELL, self._position, reason)
            self.set_position(0, None)
        else:
            reason = self._entry_reason(tick)
            if reason is None:
                return []
            quantity = self.params.quantity
            signal = self._signal(tick, Side.BUY, quantity, reason)
            self.set_position(quantity, tick.exchange_ts)
        return [signal]

    def _signal(self, tick: MarketTick, side: Side, quantity: int, reason: str) -> TradingSignal:
        """A MARKET signal, built without re-validation: every field comes from a validated
        model (the config, the params, the tick) or is checked here, so validating again
        could not fail (tests/unit/strategies/test_signal_construct.py compares the two)."""
        if quantity <= 0:
            raise ValueError(f"signal quantity must be positive, got {quantity}")
        config = self.config
        return TradingSignal.model_construct(
            strategy_id=config.strategy_id,
            instrument_token=config.instrument_token,
            symbol=config.symbol,
            side=side,
            quantity=quantity,
            order_type=OrderType.MARKET,
            limit_price=None,
            reference_price=tick.last_price,
            execution_mode=config.execution_mode,
            signal_ts=tick.exchange_ts,
            reason=reason[:500],
        )

    def export_state(self) -> dict[str, Any]:
        """JSON-serialisable snapshot (Decimals and timestamps as strings)."""
        state = _ExportedState(
            version=STATE_VERSION,
            kind=self.kind,
            strategy_id=self.config.strategy_id,
            instrument_token=self.config.instrument_token,
            last_exchange_ts=self._last_exchange_ts,
            position=self._position,
            opened_ts=self._opened_ts,
            prices=list(self._prices),
            extra=self._export_extra(),
        )
        return state.model_dump(mode="json")

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace this instance's state with an exported snapshot.

        Validates everything before changing anything, so a bad snapshot leaves the
        instance as it was. If the window size changed since export, the newest prices
        are kept (a shorter window simply refills).
        """
        try:
            parsed = _ExportedState.model_validate(dict(state))
        except ValidationError as exc:
            raise ValueError(f"invalid strategy state: {exc}") from exc
        if parsed.version != STATE_VERSION:
            raise ValueError(
                f"strategy state version {parsed.version} is not supported "
                f"(expected {STATE_VERSION})"
            )
        expected = (self.kind, self.config.strategy_id, self.config.instrument_token)
        found = (parsed.kind, parsed.strategy_id, parsed.instrument_token)
        if found != expected:
            raise ValueError(f"strategy state belongs to {found}, not {expected}")
        self._restore_extra(parsed.extra)
        self._prices = deque(parsed.prices, maxlen=self._window)
        self._window_restored()
        self._last_exchange_ts = parsed.last_exchange_ts
        self._position = parsed.position
        self._opened_ts = parsed.opened_ts if parsed.position > 0 else None
