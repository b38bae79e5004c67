"""Kite historical candles from the local Kite server, through the OHLC path, backtested."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from alpha_panda import db
from alpha_panda.backtest import kite
from alpha_panda.backtest.config import runtime_config
from alpha_panda.backtest.engine import BacktestSetup
from alpha_panda.backtest.runner import KiteSource, run_backtest
from alpha_panda.backtest.sources import BadInput, Candle, OnBadInput, TickGuard, candle_path
from alpha_panda.settings import load_settings
from alpha_panda.zerodha.errors import TokenException
from alpha_panda.zerodha.fake_server import FakeKite

INFY, TCS = 408065, 2953217
START = datetime(2026, 11, 27, 3, 45, tzinfo=UTC)  # 09:15 IST
END = START + timedelta(minutes=59)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKite]:
    async with FakeKite(tick_interval_s=None) as k:
        yield k


async def load(fake: FakeKite, token: str | None = None) -> list[kite.InstrumentCandles]:
    return await kite.load(
        root_url=fake.root_url,
        api_key=fake.api_key,
        access_token=token or fake.issue_token(),
        instruments=[(INFY, "INFY"), (TCS, "TCS")],
        interval="minute",
        start=START,
        end=END,
    )


async def test_candles_become_four_ticks_each_merged_in_time_order(fake: FakeKite) -> None:
    candles = await load(fake)
    assert [len(c.candles) for c in candles] == [60, 60]
    items = list(kite.candle_items(candles, "minute"))
    assert len(items) == 4 * 120
    ticks = [item[1] for item in items]  # type: ignore[index]
    assert [t.exchange_ts for t in ticks] == sorted(t.exchange_ts for t in ticks)
    first_infy = [t for t in ticks if t.instrument_token == INFY][:4]
    assert tuple(t.last_price for t in first_infy) == candle_path(candles[0].candles[0])
    assert [t.exchange_ts - START for t in first_infy] == [
        timedelta(seconds=s) for s in (0, 15, 30, 45)
    ]
    # Same candles, same ids: signal and fill ids repeat from run to run.
    again = list(kite.candle_items(await load(fake), "minute"))
    assert [i[2] for i in again] == [i[2] for i in items]  # type: ignore[index]
    assert len({i[2] for i in items}) == len(items)  # type: ignore[index]


async def test_a_backtest_over_kite_candles(fake: FakeKite) -> None:
    record = db.validated_strategy(
        "mr",
        "mean_reversion",
        [(INFY, "INFY"), (TCS, "TCS")],
        {"window": 8, "entry_z": "1.2", "exit_z": "0.2", "quantity": 5},
        updated_at=START,
    )
    setup = BacktestSetup.from_settings(runtime_config([record]), load_settings())
    source = KiteSource(tuple(await load(fake)), "minute")
    assert source.total == 480
    result, guard = run_backtest(source, setup, OnBadInput.REFUSE)
    assert result.ticks == 480 and guard.skipped == 0
    assert result.fills, "an hour of candles should make the strategy trade"
    assert result.first_ts == START and result.last_ts == END + timedelta(seconds=45)


def test_an_impossible_candle_is_bad_input_not_a_crash() -> None:
    good = Candle(START, Decimal("10"), Decimal("11"), Decimal("9"), Decimal("10"), 8)
    bad = Candle(
        START + timedelta(minutes=1), Decimal("10"), Decimal("9"), Decimal("8"), Decimal("10"), 8
    )
    data = [kite.InstrumentCandles(INFY, "INFY", (good, bad))]
    guard = TickGuard(frozenset({INFY}), OnBadInput.SKIP)
    assert len(list(guard.ticks(kite.candle_items(data, "minute")))) == 4
    (problem,) = guard.examples
    assert problem.kind is BadInput.MALFORMED
    assert problem.where == f"INFY minute candle {bad.ts.isoformat()}"


def test_long_ranges_are_fetched_in_chunks_kite_accepts() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    parts = kite.chunks(start, start + timedelta(days=130), timedelta(days=60))
    assert [(a - start, b - start) for a, b in parts] == [
        (timedelta(0), timedelta(days=60)),
        (timedelta(days=60, seconds=1), timedelta(days=120, seconds=1)),
        (timedelta(days=120, seconds=2), timedelta(days=130)),
    ]


async def test_a_bad_token_is_kites_error(fake: FakeKite) -> None:
    with pytest.raises(TokenException):
        await load(fake, token="not-a-token")
