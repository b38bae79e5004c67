"""Pre-trade risk rules and the per-strategy decision.

Pure domain logic: time comes from ``signal.signal_ts``, nothing does I/O. Each rule is a
function returning a :class:`Rejection` or None; :func:`evaluate` runs them in
:data:`RULE_ORDER` (documented in docs/TRADING_RULES.md) and the first rejection wins.

Before the rules run, the state is rolled to the signal's trading day and the signal's
``reference_price`` is recorded as the instrument's last price, so every rule (and the
daily-loss mark in particular) sees the market as the strategy saw it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from alpha_panda.domain.session_rules import SessionRules, session_rejection
from models.events import OrderType, RejectionReason, Side, TradingSignal
from tables.portfolio import average_cost_step
from tables.risk_state import (
    ORDER_RATE_WINDOW,
    KillSwitch,
    RiskLimits,
    StrategyRiskState,
    trading_day_of,
)


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: RejectionReason
    detail: str = Field(default="", max_length=500)


class RiskDecision(BaseModel):
    """The outcome of one signal.

    ``duplicate`` is True when the signal's event id was already decided: ``new_state`` is
    the unchanged state and ``rejection`` is the original outcome's reason (None if it was
    approved), so a caller that crashed before producing the decision can re-emit it under
    the same derived event id; downstream deduplicates by that id. Nothing new is decided
    and no limit is consumed twice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rejection: Rejection | None
    new_state: StrategyRiskState
    duplicate: bool = False

    @property
    def approved(self) -> bool:
        return self.rejection is None


def signed_quantity(signal: TradingSignal) -> int:
    return signal.quantity if signal.side is Side.BUY else -signal.quantity


def order_price(signal: TradingSignal) -> Decimal:
    """The price the order's notional is judged at: its limit, else the reference price."""
    if signal.order_type is OrderType.LIMIT and signal.limit_price is not None:
        return signal.limit_price
    return signal.reference_price


def check_kill_switch(signal: TradingSignal, kill_switch: KillSwitch) -> Rejection | None:
    """Operator halt; the only rule that reads the kill switch rather than limits/state."""
    if kill_switch.halt_all:
        return Rejection(reason=RejectionReason.KILL_SWITCH, detail="all trading halted")
    if kill_switch.halts(signal.strategy_id):
        return Rejection(
            reason=RejectionReason.KILL_SWITCH,
            detail=f"strategy {signal.strategy_id} halted",
        )
    return None


def check_daily_loss(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    """Refuse everything once today's realized + unrealized P&L reaches -max_daily_loss.

    A DAILY_LOSS_HALT rejection means the strategy is halted for the rest of the IST day
    (:func:`evaluate` sets ``halted_for_day``). Closing orders are refused too: an operator
    decides how to unwind a strategy that has hit its loss limit.
    """
    if state.halted_for_day:
        return Rejection(
            reason=RejectionReason.DAILY_LOSS_HALT,
            detail=f"halted for {state.trading_day} after reaching the daily loss limit",
        )
    pnl = state.realized_pnl_today + state.unrealized_pnl()
    if pnl <= -limits.max_daily_loss:
        return Rejection(
            reason=RejectionReason.DAILY_LOSS_HALT,
            detail=f"daily P&L {pnl} <= -{limits.max_daily_loss}; halted for {state.trading_day}",
        )
    return None


def check_instrument_allowed(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    allowed = limits.allowed_instruments
    if allowed is not None and signal.instrument_token not in allowed:
        return Rejection(
            reason=RejectionReason.INSTRUMENT_NOT_ALLOWED,
            detail=f"instrument {signal.instrument_token} ({signal.symbol}) not in allow-list",
        )
    return None


def check_short_selling(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    if limits.allow_short or signal.side is not Side.SELL:
        return None
    held = state.position(signal.instrument_token)
    if held - signal.quantity < 0:
        return Rejection(
            reason=RejectionReason.SHORT_SELLING_NOT_ALLOWED,
            detail=f"sell {signal.quantity} with position {held} would go short",
        )
    return None


def check_order_quantity(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    if signal.quantity > limits.max_order_quantity:
        return Rejection(
            reason=RejectionReason.MAX_ORDER_QUANTITY,
            detail=f"quantity {signal.quantity} > max {limits.max_order_quantity}",
        )
    return None


def check_order_notional(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    notional = signal.quantity * order_price(signal)
    if notional > limits.max_order_notional:
        return Rejection(
            reason=RejectionReason.MAX_ORDER_NOTIONAL,
            detail=f"notional {notional} > max {limits.max_order_notional}",
        )
    return None


def check_position(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    """|resulting position| over the max is refused unless the order shrinks the position.

    The exception lets a strategy unwind after its limit was lowered below what it holds.
    """
    held = state.position(signal.instrument_token)
    resulting = held + signed_quantity(signal)
    if abs(resulting) > limits.max_position_quantity and abs(resulting) > abs(held):
        return Rejection(
            reason=RejectionReason.MAX_POSITION,
            detail=f"resulting position {resulting} exceeds max {limits.max_position_quantity}",
        )
    return None


def check_gross_exposure(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    """Gross exposure after the order, marked at last reference prices.

    As with the position rule, an order that lowers the exposure is never refused.
    """
    token = signal.instrument_token
    before = state.gross_exposure()
    after = state.gross_exposure(
        {**state.positions, token: state.position(token) + signed_quantity(signal)}
    )
    if after > limits.max_gross_exposure and after > before:
        return Rejection(
            reason=RejectionReason.MAX_GROSS_EXPOSURE,
            detail=f"gross exposure after order {after} > max {limits.max_gross_exposure}",
        )
    return None


def check_order_rate(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState
) -> Rejection | None:
    count = state.orders_in_window(signal.signal_ts)
    if count >= limits.max_orders_per_minute:
        return Rejection(
            reason=RejectionReason.ORDER_RATE,
            detail=(
                f"{count} orders approved in the 60 s before {signal.signal_ts.isoformat()} "
                f">= max {limits.max_orders_per_minute}"
            ),
        )
    return None


Rule = Callable[[TradingSignal, RiskLimits, StrategyRiskState], Rejection | None]

# After the kill switch (checked first, outside this list): halts, then what is wrong with
# the order itself, then what it would do to the book, then the transient rate limit last
# so a signal refused for a lasting reason reports that reason.
RULE_ORDER: tuple[Rule, ...] = (
    check_daily_loss,
    check_instrument_allowed,
    check_short_selling,
    check_order_quantity,
    check_order_notional,
    check_position,
    check_gross_exposure,
    check_order_rate,
)


def check_session(
    signal: TradingSignal, limits: RiskLimits, state: StrategyRiskState, sessions: SessionRules
) -> Rejection | None:
    """Market hours and the MIS cut-off (alpha_panda/domain/session_rules.py), in event time."""
    found = session_rejection(
        signal,
        sessions,
        product=limits.product,
        allow_pre_open=limits.allow_pre_open,
        held=state.position(signal.instrument_token),
    )
    return None if found is None else Rejection(reason=found[0], detail=found[1])


def first_rejection(
    signal: TradingSignal,
    limits: RiskLimits,
    state: StrategyRiskState,
    kill_switch: KillSwitch,
    sessions: SessionRules | None = None,
) -> Rejection | None:
    """The kill switch, the trading day (when ``sessions`` is given), then
    :data:`RULE_ORDER`; the first rejection wins."""
    rejection = check_kill_switch(signal, kill_switch)
    if rejection is not None:
        return rejection
    # Right after the operator's switch: a closed market is the most lasting reason.
    if sessions is not None:
        rejection = check_session(signal, limits, state, sessions)
        if rejection is not None:
            return rejection
    for rule in RULE_ORDER:
        rejection = rule(signal, limits, state)
        if rejection is not None:
            return rejection
    return None


def evaluate(
    signal: TradingSignal,
    signal_event_id: str,
    limits: RiskLimits,
    state: StrategyRiskState,
    kill_switch: KillSwitch,
    sessions: SessionRules | None = None,
) -> RiskDecision:
    """Decide one signal of ``state``'s strategy and return the state after it.

    ``sessions`` enables the trading-day checks; None (``market.enforce_sessions`` off)
    judges the signal at any hour.

    Approval applies the order at ``reference_price`` (position, average cost, realized
    P&L, rate window). Rejection records only the mark, the seen id and a day halt.
    """
    if signal.strategy_id != state.strategy_id:
        raise ValueError(
            f"signal of strategy {signal.strategy_id!r} given state of {state.strategy_id!r}"
        )
    seen = state.seen(signal_event_id)
    if seen is not None:
        original = (
            None
            if seen.rejection is None
            else Rejection(reason=seen.rejection, detail="replay of an earlier decision")
        )
        return RiskDecision(rejection=original, new_state=state, duplicate=True)

    marked = state.on_day(trading_day_of(signal.signal_ts)).with_mark(
        signal.instrument_token, signal.reference_price
    )
    rejection = first_rejection(signal, limits, marked, kill_switch, sessions)
    if rejection is not None:
        if rejection.reason is RejectionReason.DAILY_LOSS_HALT:
            marked = marked.model_copy(update={"halted_for_day": True})
        return RiskDecision(
            rejection=rejection, new_state=marked.with_seen(signal_event_id, rejection.reason)
        )
    return RiskDecision(rejection=None, new_state=_apply_order(signal, signal_event_id, marked))


def _apply_order(
    signal: TradingSignal, signal_event_id: str, state: StrategyRiskState
) -> StrategyRiskState:
    token = signal.instrument_token
    quantity, avg_price, realized = average_cost_step(
        state.position(token),
        state.avg_price.get(token, Decimal("0")),
        signed_quantity(signal),
        signal.reference_price,
    )
    window_start = signal.signal_ts - ORDER_RATE_WINDOW
    recent = tuple(ts for ts in state.recent_order_ts if ts > window_start)
    return state.with_seen(
        signal_event_id,
        None,
        update={
            "positions": {**state.positions, token: quantity},
            "avg_price": {**state.avg_price, token: avg_price},
            "realized_pnl_today": state.realized_pnl_today + realized,
            "recent_order_ts": (*recent, signal.signal_ts),
        },
    )
