"""The backtest hands strategies their own position as the runner does (issue 16): booked
after each fill and rejection, in tick order, before the strategy's next tick."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.backtest.engine import BacktestEngine, BacktestSetup
from alpha_panda.domain.own_position import NOTHING_BOOKED, OwnPosition
from alpha_panda.settings import load_settings
from models.envelope import new_event_id
from models.events import MarketTick, TradingSignal
from tests.factories import RELIANCE, T0, tick
from tests.unit.domain.test_session_rules import MONDAY, RISE_THEN_HOLD, ist

FAST = {"lookback": 1, "threshold_pct": "0.5", "quantity": 5}


def engine_for(risk_limits: dict[str, Any]) -> BacktestEngine:
    record = db.validated_strategy(
        "s", "momentum", [(RELIANCE, "RELIANCE")], FAST, risk_limits=risk_limits, updated_at=T0
    )
    settings = load_settings(market={"enforce_sessions": True})
    return BacktestEngine(BacktestSetup.from_settings(runtime_config([record]), settings))


def test_a_fill_is_booked_before_the_strategys_next_tick() -> None:
    engine = engine_for({"product": "CNC"})
    key = f"s:{RELIANCE}"
    engine.on_tick(tick("100", 0), new_event_id())  # builds the strategy
    strategy = engine.host._cache[key].strategy
    seen: list[OwnPosition | None] = []
    on_tick = strategy.on_tick

    def watched(t: MarketTick) -> list[TradingSignal]:
        seen.append(strategy.own_position)  # what it sees while deciding on this tick
        return on_tick(t)

    strategy.on_tick = watched  # type: ignore[method-assign]
    for i, price in enumerate(["101", "101"], start=1):
        engine.on_tick(tick(price, i), new_event_id())
    [buy] = engine.fills
    assert seen[0] == NOTHING_BOOKED  # the tick that bought saw nothing booked
    assert seen[1] == engine.own[key]  # the next one sees its fill
    assert (seen[1].quantity, seen[1].avg_price, seen[1].fees_paid) == (5, buy.fill_price, buy.fees)


def test_a_buy_refused_by_risk_is_not_squared_off() -> None:
    engine = engine_for({"product": "MIS", "max_position_quantity": 1})
    for ts, price in RISE_THEN_HOLD:
        engine.on_tick(tick(price, ts=ts), new_event_id())
    assert engine.fills == []
    # The BUY of 5 (15:01) is refused; no square-off SELL of it at 15:20 (which risk would
    # refuse as a short); the strategy, flat again, tries 15:21 and meets the cut-off.
    assert engine.rejections == Counter({("s", "max_position"): 1, ("s", "mis_cutoff"): 1})
    own = engine.own[f"s:{RELIANCE}"]
    assert (own.quantity, own.rejection_count, own.refused_buy_shares) == (0, 2, 5)
    assert own.last_rejection is not None
    assert own.last_rejection.signal.signal_ts == ist(MONDAY, 15, 21)
    assert own.last_rejection.signal.quantity == 5 and own.avg_price == Decimal(0)
