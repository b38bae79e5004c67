"""The host's per-instrument in-order path gives exactly the signals of the other two."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from alpha_panda.db import InstrumentRef, RuntimeConfig, StrategyConfigRecord
from alpha_panda.domain.session_rules import SessionRules
from alpha_panda.domain.strategy_host import StrategyHost, StrategyStateEntry
from alpha_panda.market_calendar import NseCalendar
from models.events import ExecutionMode, MarketTick, TradingSignal

INSTRUMENTS = (
    InstrumentRef(token=738561, symbol="RELIANCE"),
    InstrumentRef(token=408065, symbol="INFY"),
)
START = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)  # Monday 09:15 IST


def config(lookback: int = 3) -> RuntimeConfig:
    def record(sid: str, kind: str, params: dict[str, Any]) -> StrategyConfigRecord:
        return StrategyConfigRecord(
            strategy_id=sid,
            kind=kind,
            instruments=INSTRUMENTS,
            parameters=params,
            enabled=True,
            execution_mode=ExecutionMode.PAPER,
            risk_limits={},
            updated_at=START,
        )

    return RuntimeConfig(
        strategies=(
            record(
                "mom", "momentum", {"lookback": lookback, "threshold_pct": "0.2", "quantity": 5}
            ),
            record(
                "mr",
                "mean_reversion",
                {"window": 5, "entry_z": "1.2", "exit_z": "0.2", "quantity": 3},
            ),
        ),
        halt_all=False,
        halted_strategies=frozenset(),
        halt_reasons={},
    )


def ticks(count: int, seed: int = 3) -> list[tuple[MarketTick, str]]:
    rng = random.Random(seed)
    prices = {i.token: Decimal("1000") for i in INSTRUMENTS}
    out = []
    for n in range(count):
        ref = INSTRUMENTS[n % 2]
        prices[ref.token] += Decimal(rng.randint(-40, 40)) / 20
        tick = MarketTick(
            instrument_token=ref.token,
            symbol=ref.symbol,
            last_price=prices[ref.token],
            volume=n,
            exchange_ts=START + timedelta(seconds=30 * n),  # through the MIS cut-off
        )
        out.append((tick, f"tick-{n}"))
    return out


Signals = list[tuple[str, TradingSignal]]


def live(host: StrategyHost, stream: list[tuple[MarketTick, str]]) -> Signals:
    entries: dict[str, StrategyStateEntry | None] = {}
    out: Signals = []
    for offset, (tick, event_id) in enumerate(stream):
        for a in host.assignments_for(tick.instrument_token):
            outcome = host.on_tick(a, tick, event_id, offset, entries.get(a.key))
            out += outcome.signals
            entries[a.key] = outcome.new_entry
    return out


def per_assignment(host: StrategyHost, stream: list[tuple[MarketTick, str]]) -> Signals:
    out: Signals = []
    for tick, event_id in stream:
        for a in host.assignments_for(tick.instrument_token):
            out += host.on_tick_in_order(a, tick, event_id)
    return out


def per_instrument(host: StrategyHost, stream: list[tuple[MarketTick, str]]) -> Signals:
    out: Signals = []
    for tick, event_id in stream:
        out += host.on_instrument_tick_in_order(tick, event_id)
    return out


@pytest.mark.parametrize(
    "sessions", [None, SessionRules(NseCalendar.default(), timedelta(minutes=10))]
)
def test_three_paths_same_signals(sessions: SessionRules | None) -> None:
    stream = ticks(2000)
    results = []
    for path in (live, per_assignment, per_instrument):
        host = StrategyHost(sessions=sessions)
        assert host.configure(config()) == []
        results.append(path(host, stream))
    assert len(results[0]) > 20  # both strategies traded, entries and exits
    assert {s.strategy_id for _, s in results[0]} == {"mom", "mr"}
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_reconfiguring_reroutes_the_per_instrument_path() -> None:
    stream = ticks(600)
    host, reference = StrategyHost(), StrategyHost()
    host.configure(config(lookback=3))
    reference.configure(config(lookback=3))
    first = per_instrument(host, stream[:300])
    assert first == per_assignment(reference, stream[:300])
    # New parameters: a fresh momentum instance (new fingerprint), mean reversion kept.
    host.configure(config(lookback=8))
    reference.configure(config(lookback=8))
    assert per_instrument(host, stream[300:]) == per_assignment(reference, stream[300:])
