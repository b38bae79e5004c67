"""Pure core of the strategy runner: routing ticks to strategies, replay-safe state.

Each (strategy, instrument) has one state entry in the runner's table, written only from
the market.ticks partition of that instrument, and recording the offset of the last tick
it folded in. The runner writes an entry only after the broker acknowledged that tick's
signals, so an entry at offset o proves o's signals are durable: a tick redelivered
after a crash (offset <= o) changes nothing and emits nothing. If the crash lost the
entry instead, the tick is recomputed from the older state and yields the same signals
under the same derived event ids, which downstream drops as duplicates.

With each tick the host also hands the strategy its own position as booked
(:mod:`alpha_panda.domain.own_position`). A recomputed tick may find more booked than the
first time (fills kept arriving); a strategy that reads the view may then decide
differently, but its signals keep their tick-derived ids, so downstream still keeps one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from alpha_panda.domain.own_position import NOTHING_BOOKED, OwnPosition
from alpha_panda.domain.products import Product, strategy_product
from alpha_panda.domain.session_rules import (
    SQUARE_OFF_REASON,
    SessionRules,
    session_rejection,
    square_off_due,
)
from alpha_panda.topics import strategy_instrument_key
from models.config import RuntimeConfig
from models.envelope import derived_event_id
from models.events import MarketTick, TradingSignal
from strategies.base import BaseStrategy, StrategyConfig
from strategies.factory import StrategyConfigError, StrategyFactory

ENTRY_VERSION = 2


class StrategyStateEntry(NamedTuple):
    """One (strategy, instrument)'s value in the runner's ``strategy-state`` table: the
    strategy's exported state once it folded in the tick at ``offset``.

    A NamedTuple rather than a frozen dataclass: one is built for every tick of every
    assignment, and a frozen dataclass's ``__init__`` cost three times a dict's (0.67 vs
    0.22 µs, measured); a NamedTuple costs what the dict did.

    Its JSON keeps the short keys the runner has always written (``v``, ``fp``,
    ``offset``, ``px``, ``state``), so older changelogs read back unchanged; an entry
    written before a field existed has None there and is written back without it.
    """

    offset: int
    state: dict[str, Any]  # the strategy's export_state(), never mutated
    # The strategy's parameters when it was written (``fp``): a state that cannot be
    # restored is corrupt under the same parameters, a re-parameterisation otherwise.
    fingerprint: str | None = None
    # The instrument's last accepted price (``px``): the reference of the price band
    # check (alpha_panda/domain/price_band.py), kept here so it survives a restart.
    price: Decimal | None = None
    version: int | None = ENTRY_VERSION
    # Shares of the strategy's refused (BUY, SELL) signals the MIS square-off has taken
    # out of its implied position (``rf``, see _apply_trading_day); None: none yet.
    refused: tuple[int, int] | None = None

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.version is not None:
            out["v"] = self.version
        if self.fingerprint is not None:
            out["fp"] = self.fingerprint
        out["offset"] = self.offset
        if self.price is not None:
            out["px"] = str(self.price)
        out["state"] = self.state
        if self.refused is not None:
            out["rf"] = list(self.refused)
        return out

    @classmethod
    def from_json_dict(cls, raw: Mapping[str, Any]) -> StrategyStateEntry:
        px = raw.get("px")
        rf = raw.get("rf")
        return cls(
            offset=raw["offset"],
            state=raw["state"],
            fingerprint=raw.get("fp"),
            price=None if px is None else Decimal(px),
            version=raw.get("v"),
            refused=None if rf is None else (int(rf[0]), int(rf[1])),
        )


@dataclass(frozen=True)
class Assignment:
    """One enabled strategy trading one instrument."""

    strategy_id: str
    kind: str
    config: StrategyConfig
    params: dict[str, Any]
    fingerprint: str
    # From the strategy's risk_limits overrides, else the ALPHA_PANDA_RISK_* defaults.
    product: Product = "MIS"
    allow_pre_open: bool = False
    # "{strategy_id}:{instrument_token}", built once: it is looked up for every tick.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "key", strategy_instrument_key(self.strategy_id, self.config.instrument_token)
        )


@dataclass
class TickOutcome:
    signals: list[tuple[str, TradingSignal]]
    new_entry: StrategyStateEntry | None  # None: nothing to write (a redelivered tick)


# Shares of refused (BUY, SELL) signals the host has already taken out of a strategy's
# implied position (see _apply_trading_day); stored in its entry as "rf".
Refused = tuple[int, int]
NONE_REFUSED: Refused = (0, 0)


@dataclass
class _Cached:
    fingerprint: str
    offset: int | None
    strategy: BaseStrategy[Any]
    refused: Refused = NONE_REFUSED  # the in-order path's "rf"


@dataclass
class StrategyHost:
    # None: the trading day is not enforced (market.enforce_sessions off): no square-off.
    sessions: SessionRules | None = None
    default_product: str = "MIS"
    default_allow_pre_open: bool = False
    _routes: dict[int, list[Assignment]] = field(default_factory=dict)
    _cache: dict[str, _Cached] = field(default_factory=dict)
    # The in-order path's own positions by "strategy:instrument", as its caller booked them
    # (own_position_booked): pushed to a strategy when booked, not looked up per tick.
    in_order_own: dict[str, OwnPosition] = field(default_factory=dict)
    # token -> (assignment, cached strategy) pairs for the in-order path; emptied by configure.
    _in_order: dict[int, list[tuple[Assignment, _Cached]]] = field(default_factory=dict)

    def configure(self, config: RuntimeConfig) -> list[str]:
        """Rebuild the routing from a configuration; returns why strategies were skipped."""
        routes: dict[int, list[Assignment]] = {}
        problems: list[str] = []
        for record in config.enabled_strategies:
            try:
                StrategyFactory.validate_params(record.kind, record.parameters, record.strategy_id)
            except StrategyConfigError as exc:
                problems.append(str(exc))
                continue
            except Exception as exc:
                # A plug-in's own validator may raise anything; that strategy is skipped,
                # the others (and the runner) carry on.
                problems.append(
                    f"strategy {record.strategy_id!r}: parameters of kind {record.kind!r} "
                    f"could not be validated: {type(exc).__name__}: {exc}"
                )
                continue
            try:
                product = strategy_product(record.risk_limits, self.default_product)
            except ValueError as exc:
                # The risk manager refuses its every signal for the same reason.
                problems.append(f"strategy {record.strategy_id!r}: risk limits: {exc}")
                continue
            fingerprint = _fingerprint(record.kind, record.parameters, record.execution_mode.value)
            pre_open = bool(record.risk_limits.get("allow_pre_open", self.default_allow_pre_open))
            for instrument in record.instruments:
                routes.setdefault(instrument.token, []).append(
                    Assignment(
                        strategy_id=record.strategy_id,
                        kind=record.kind,
                        config=StrategyConfig(
                            strategy_id=record.strategy_id,
                            instrument_token=instrument.token,
                            symbol=instrument.symbol,
                            execution_mode=record.execution_mode,
                        ),
                        params=dict(record.parameters),
                        fingerprint=fingerprint,
                        product=product,
                        allow_pre_open=pre_open,
                    )
                )
        self._routes = routes
        self._in_order = {}
        return problems

    def assignments_for(self, instrument_token: int) -> list[Assignment]:
        return self._routes.get(instrument_token, [])

    @property
    def assignment_count(self) -> int:
        return sum(len(a) for a in self._routes.values())

    def on_tick(
        self,
        assignment: Assignment,
        tick: MarketTick,
        tick_event_id: str,
        offset: int,
        entry: StrategyStateEntry | None,
        own: OwnPosition | None = None,
    ) -> TickOutcome:
        """The strategy's signals for ``tick``. ``own``: its fills and rejections as
        booked (handed to the strategy, and used by the MIS square-off); None where the
        caller books none."""
        if entry is not None and offset <= entry.offset:
            return TickOutcome([], None)

        strategy = self._strategy_for(assignment, entry)
        refused = _refused_of(entry)
        try:
            emitted, refused = _emit(
                self.sessions, assignment, strategy, tick, tick_event_id, own, refused
            )
        except Exception:
            # The strategy may have taken the tick into its window before it raised, and
            # its stored entry was not advanced: the next tick must start again from the
            # stored state, as a restarted runner would, not from this half-moved object.
            self._cache.pop(assignment.key, None)
            raise
        new_entry = StrategyStateEntry(
            offset,
            strategy.export_state(),
            assignment.fingerprint,
            tick.last_price,
            refused=None if refused == NONE_REFUSED else refused,
        )
        self._cache[assignment.key] = _Cached(assignment.fingerprint, offset, strategy)
        return TickOutcome(emitted, new_entry)

    def on_tick_in_order(
        self, assignment: Assignment, tick: MarketTick, tick_event_id: str
    ) -> list[tuple[str, TradingSignal]]:
        """:meth:`on_tick` for a caller that hands over every tick once, in order, and keeps
        nothing (the backtest): the same strategy instances and signal ids, without the
        replay bookkeeping (no offsets, no exported state per tick). Not to be mixed with
        :meth:`on_tick` on one host. The strategy's own position is the one last given to
        :meth:`own_position_booked`.
        """
        cached = self._in_order_cached(assignment)
        strategy = cached.strategy
        signals, cached.refused = _emit(
            self.sessions,
            assignment,
            strategy,
            tick,
            tick_event_id,
            strategy.own_position,
            cached.refused,
        )
        return signals

    def own_position_booked(self, key: str, own: OwnPosition) -> None:
        """For the in-order path: the strategy at ``key`` ("strategy:instrument") now has
        ``own`` booked; it sees it from its next tick on. The caller books right after
        each fill and rejection (as the runner does, without the pipeline's delay)."""
        self.in_order_own[key] = own
        cached = self._cache.get(key)
        if cached is not None:
            cached.strategy.see_own_position(own)

    def _in_order_cached(self, assignment: Assignment) -> _Cached:
        cached = self._cache.get(assignment.key)
        if cached is None or cached.fingerprint != assignment.fingerprint:
            strategy = StrategyFactory.create(assignment.kind, assignment.config, assignment.params)
            strategy.see_own_position(self.in_order_own.get(assignment.key, NOTHING_BOOKED))
            cached = _Cached(assignment.fingerprint, None, strategy)
            self._cache[assignment.key] = cached
        return cached

    def on_instrument_tick_in_order(
        self, tick: MarketTick, tick_event_id: str
    ) -> list[tuple[str, TradingSignal]]:
        """:meth:`on_tick_in_order` for every assignment of the tick's instrument, in
        routing order: the same strategies and signals, with the per-assignment lookups
        done once per instrument instead of once per tick."""
        token = tick.instrument_token
        pairs = self._in_order.get(token)
        if pairs is None:
            pairs = [(a, self._in_order_cached(a)) for a in self.assignments_for(token)]
            self._in_order[token] = pairs
        sessions = self.sessions
        signals: list[tuple[str, TradingSignal]] = []
        if sessions is None:
            # _emit without the trading day, inlined: this runs for every assignment of
            # every tick of a backtest, and most ticks emit nothing.
            for assignment, cached in pairs:
                plain = cached.strategy.on_tick(tick)
                if plain:
                    signals += _with_ids(tick_event_id, assignment, plain)
        else:
            for assignment, cached in pairs:
                strategy = cached.strategy
                with_ids, cached.refused = _emit(
                    sessions,
                    assignment,
                    strategy,
                    tick,
                    tick_event_id,
                    strategy.own_position,
                    cached.refused,
                )
                signals += with_ids
        return signals

    def _strategy_for(
        self, assignment: Assignment, entry: StrategyStateEntry | None
    ) -> BaseStrategy[Any]:
        cached = self._cache.get(assignment.key)
        entry_offset = entry.offset if entry is not None else None
        # The table is the truth; the cached instance is only valid if it has folded in
        # exactly what the table has (a rebalance or restart breaks that).
        if (
            cached is not None
            and cached.fingerprint == assignment.fingerprint
            and cached.offset == entry_offset
        ):
            return cached.strategy
        strategy = StrategyFactory.create(assignment.kind, assignment.config, assignment.params)
        if entry is not None:
            try:
                strategy.restore_state(entry.state)
            except ValueError:
                if entry.fingerprint == assignment.fingerprint:
                    raise  # same parameters, unreadable state: corrupt data
                # Re-parameterised into an incompatible shape: start afresh.
                strategy = StrategyFactory.create(
                    assignment.kind, assignment.config, assignment.params
                )
        return strategy


def entry_is_behind(entry: StrategyStateEntry | None, offset: int) -> bool:
    """Whether a state entry has not yet folded in the tick at ``offset``."""
    return entry is None or offset > entry.offset


def previous_price(entries: list[StrategyStateEntry | None]) -> Decimal | None:
    """The instrument's last accepted price: the ``px`` of its most advanced entry.

    Entries written before the price was recorded have none; with no price the band
    check has no reference and checks the tick size only.
    """
    priced = [e for e in entries if e is not None and e.price is not None]
    if not priced:
        return None
    return max(priced, key=lambda e: e.offset).price


def _refused_of(entry: StrategyStateEntry | None) -> Refused:
    if entry is None or entry.refused is None:
        return NONE_REFUSED
    return entry.refused


def _apply_trading_day(
    rules: SessionRules,
    assignment: Assignment,
    strategy: BaseStrategy[Any],
    tick: MarketTick,
    signals: list[TradingSignal],
    held: int,
    opened: datetime | None,
    own: OwnPosition | None,
    refused: Refused,
) -> tuple[list[TradingSignal], Refused]:
    """Keep the strategy's implied position in line with what risk will accept, and
    add the MIS square-off (see alpha_panda/domain/session_rules.py).

    With ``own`` (the booked view), the square-off first takes out of the implied position
    the shares of the strategy's signals refused since the last square-off (by risk or the
    engine; the trading day's refusals are taken out above, when emitted): a refused BUY
    is not sold, a refused SELL's shares still are. It does not size from the booked
    quantity itself, which lags by the pipeline's latency: a BUY filling after the
    square-off's tick would be missed. Returns the signals and the refused shares now
    taken out (``refused``, moved on)."""
    for signal in signals:
        # Risk refuses it for the same rule: the signal still goes out (its rejection
        # is visible), but the strategy must not believe it was filled.
        if session_rejection(
            signal,
            rules,
            product=assignment.product,
            allow_pre_open=assignment.allow_pre_open,
            held=held,
        ):
            strategy.set_position(held, opened)
    if assignment.product != "MIS":
        return signals, refused
    unrefused = own is not None and (own.refused_buy_shares, own.refused_sell_shares) != refused
    if (strategy.position > 0 or unrefused) and square_off_due(
        rules, tick.exchange_ts, strategy.opened_ts
    ):
        if own is not None and unrefused:
            corrected = (
                strategy.position
                - (own.refused_buy_shares - refused[0])
                + (own.refused_sell_shares - refused[1])
            )
            refused = (own.refused_buy_shares, own.refused_sell_shares)
            # Long-only: a refused SELL of shares never bought leaves nothing to sell.
            strategy.set_position(max(0, corrected), strategy.opened_ts or tick.exchange_ts)

        cutoff = rules.square_off_at(tick.exchange_ts)
        when = f"{cutoff:%H:%M} IST" if cutoff is not None else "the close"
        exit_signal = strategy.close_position(
            tick, f"{SQUARE_OFF_REASON}: intraday (MIS) position closed at {when}"
        )
        if exit_signal is not None:
            signals = [*signals, exit_signal]
    return signals, refused


def _emit(
    sessions: SessionRules | None,
    assignment: Assignment,
    strategy: BaseStrategy[Any],
    tick: MarketTick,
    tick_event_id: str,
    own: OwnPosition | None,
    refused: Refused,
) -> tuple[list[tuple[str, TradingSignal]], Refused]:
    """The strategy's signals for ``tick`` (with the trading day's corrections and MIS
    square-off when ``sessions`` is set), each with its id derived from the tick's, and
    the refused shares taken out of its implied position (see _apply_trading_day)."""
    if own is not None:
        strategy.see_own_position(own)
    if sessions is None:
        signals = strategy.on_tick(tick)
        if not signals:
            return [], refused  # most ticks: nothing to derive ids for
    else:
        held, opened = strategy.position, strategy.opened_ts
        signals = strategy.on_tick(tick)
        signals, refused = _apply_trading_day(
            sessions, assignment, strategy, tick, signals, held, opened, own, refused
        )
    return _with_ids(tick_event_id, assignment, signals), refused


def _with_ids(
    tick_event_id: str, assignment: Assignment, signals: list[TradingSignal]
) -> list[tuple[str, TradingSignal]]:
    """Each signal with its event id, derived from the tick's: the same on a replay."""
    return [
        (derived_event_id(tick_event_id, assignment.strategy_id, index), signal)
        for index, signal in enumerate(signals)
    ]


def _fingerprint(kind: str, parameters: dict[str, Any], mode: str) -> str:
    blob = json.dumps([kind, parameters, mode], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
