"""The engine samples equity at the close of each bar, a bar being
``ts.timestamp() // bar seconds``; it skips that computation for times inside a span it
has confirmed. The samples must be those of computing it for every tick, at the very
edges of bars too."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alpha_panda.backtest.engine import BacktestEngine
from models.events import MarketTick
from tests.unit.backtest.test_report_numbers import TOKEN, setup

US = timedelta(microseconds=1)


def edge_times(bar: timedelta, rng: random.Random) -> list[datetime]:
    """Times on, one microsecond before and after bar boundaries, and between, in order."""
    start = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
    times = set()
    for n in range(40):
        edge = start + n * bar
        times.update({edge - US, edge, edge + US, edge + bar * rng.random()})
    return sorted(times)


def expected_closes(times: list[datetime], bar: timedelta) -> list[datetime]:
    """The last time of each run of equal bars, computed for every tick."""
    seconds = bar.total_seconds()
    groups = itertools.groupby(times, key=lambda ts: ts.timestamp() // seconds)
    return [list(group)[-1] for _, group in groups]


@pytest.mark.parametrize(
    "bar",
    [
        timedelta(minutes=1),
        timedelta(seconds=7),
        timedelta(milliseconds=100),
        timedelta(microseconds=333),
        timedelta(days=1),
    ],
)
def test_equity_sampled_at_each_bar_close(bar: timedelta) -> None:
    times = edge_times(bar, random.Random(5))
    ticks = [
        (
            MarketTick(
                instrument_token=TOKEN,
                symbol="RELIANCE",
                last_price=Decimal("100") + n % 7,
                volume=n + 1,
                exchange_ts=ts,
            ),
            f"tick-{n}",
        )
        for n, ts in enumerate(times)
    ]
    result = BacktestEngine(replace(setup(), bar=bar)).run(ticks)
    closes = [point.ts for point in result.ledgers["mom"].series]
    assert closes == expected_closes(times, bar)
    assert len(closes) > 40
