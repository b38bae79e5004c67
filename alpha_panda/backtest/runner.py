"""One backtest or a parameter sweep, from a described tick source.

A :class:`TickSource` is a small picklable description (a file, or the random walk's
settings), so each process of a sweep opens its own copy of the ticks; market.ticks is
read once by the caller and handed over as a file.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from alpha_panda.backtest.config import runtime_config
from alpha_panda.backtest.engine import (
    BacktestConfigError,
    BacktestEngine,
    BacktestResult,
    BacktestSetup,
    StrategySummary,
)
from alpha_panda.backtest.kite import InstrumentCandles, candle_items
from alpha_panda.backtest.record import TopicRead, topic_items
from alpha_panda.backtest.sources import (
    OnBadInput,
    SourceItem,
    TickGuard,
    jsonl_ticks,
    random_walk_ticks,
)
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.random_walk import parse_instruments
from strategies.factory import StrategyConfigError, StrategyFactory


@dataclass(frozen=True)
class FileSource:
    path: Path

    def items(self) -> Iterator[SourceItem]:
        return jsonl_ticks(self.path)

    @property
    def total(self) -> int | None:
        return None

    def describe(self) -> str:
        return str(self.path)

    @property
    def label(self) -> str:
        return f"{self.path}:"


@dataclass(frozen=True)
class RandomWalkSource:
    instruments: str  # the ALPHA_PANDA_FEED_INSTRUMENTS format
    seed: int
    volatility_bps: Decimal
    count: int
    start: datetime
    interval: timedelta

    def items(self) -> Iterator[SourceItem]:
        return random_walk_ticks(
            parse_instruments(self.instruments),
            seed=self.seed,
            volatility_bps=self.volatility_bps,
            count=self.count,
            start=self.start,
            interval=self.interval,
        )

    @property
    def total(self) -> int | None:
        return self.count

    def describe(self) -> str:
        return f"random walk, seed {self.seed}, {self.count} ticks"

    @property
    def label(self) -> str:
        return "random walk step "


@dataclass(frozen=True)
class TopicSource:
    """market.ticks as read by :func:`alpha_panda.backtest.record.read_market_ticks`; bad
    records are reported with their partition and offset."""

    read: TopicRead

    def items(self) -> Iterator[SourceItem]:
        return topic_items(self.read)

    @property
    def total(self) -> int | None:
        return len(self.read.ticks)

    def describe(self) -> str:
        return f"{len(self.read.ticks)} ticks of market.ticks"

    @property
    def label(self) -> str:
        return ""


@dataclass(frozen=True)
class KiteSource:
    """Kite historical candles, fetched beforehand (see :mod:`alpha_panda.backtest.kite`)."""

    candles: tuple[InstrumentCandles, ...]
    interval: str

    def items(self) -> Iterator[SourceItem]:
        return candle_items(self.candles, self.interval)

    @property
    def total(self) -> int | None:
        return 4 * sum(len(c.candles) for c in self.candles)

    def describe(self) -> str:
        return f"Kite {self.interval} candles of {len(self.candles)} instruments"

    @property
    def label(self) -> str:
        return ""


TickSource = FileSource | RandomWalkSource | TopicSource | KiteSource


class Progress:
    """``ticks, ticks/s`` on one stderr line, from the first update after ``after_s``."""

    def __init__(self, total: int | None, *, after_s: float = 2.0, out: TextIO = sys.stderr):
        self.total = total
        self.after_s = after_s
        self.out = out
        self.started = time.monotonic()
        self.shown = False
        self._last = 0.0

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        if elapsed < self.after_s or (now - self._last < 0.25 and count != self.total):
            return
        self._last = now
        rate = count / elapsed if elapsed else 0.0
        if self.total:
            width = 30
            done = int(width * count / self.total)
            bar = f"[{'#' * done}{'.' * (width - done)}] {100 * count / self.total:5.1f}% "
        else:
            bar = ""
        self.out.write(f"\r{bar}{count:,} ticks  {rate:,.0f} ticks/s")
        self.out.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.out.write("\n")
            self.out.flush()


def run_backtest(
    source: TickSource,
    setup: BacktestSetup,
    on_bad_input: OnBadInput,
    progress: Progress | None = None,
) -> tuple[BacktestResult, TickGuard]:
    guard = TickGuard(setup.instruments, on_bad_input, label=source.label)
    engine = BacktestEngine(setup)
    try:
        result = engine.run(guard.ticks(source.items()), progress)
    finally:
        if progress is not None:
            progress.close()
    return result, guard


# -- sweeps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepParam:
    name: str  # "lookback" (every strategy that has it) or "mom.lookback" (one strategy)
    values: tuple[str, ...]


def parse_param(text: str) -> SweepParam:
    name, sep, values = text.partition("=")
    items = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not name.strip() or not items:
        raise BacktestConfigError(f"--param {text!r}: expected name=value1,value2,...")
    return SweepParam(name.strip(), items)


def _targets(config: RuntimeConfig, name: str) -> list[tuple[str, str]]:
    """(strategy id, parameter) pairs a sweep parameter name applies to."""
    sid, dot, field = name.rpartition(".")
    found = []
    for record in config.strategies:
        if dot and record.strategy_id != sid:
            continue
        model = StrategyFactory.strategy_class(record.kind, record.strategy_id).params_model
        if field in model.model_fields:
            found.append((record.strategy_id, field))
    if not found:
        raise BacktestConfigError(f"--param {name}: no strategy in this run has that parameter")
    return found


def grid(config: RuntimeConfig, params: Sequence[SweepParam]) -> list[dict[str, str]]:
    """Every combination, in a fixed order: the first --param varies slowest."""
    for p in params:
        _targets(config, p.name)
    return [
        dict(zip((p.name for p in params), combo, strict=True))
        for combo in itertools.product(*(p.values for p in params))
    ]


def apply_combination(config: RuntimeConfig, combination: dict[str, str]) -> RuntimeConfig:
    """``config`` with the combination's values; validated by each strategy's model."""
    params = {r.strategy_id: dict(r.parameters) for r in config.strategies}
    for name, value in combination.items():
        for sid, field in _targets(config, name):
            params[sid][field] = value
    records = []
    for record in config.strategies:
        try:
            StrategyFactory.validate_params(
                record.kind, params[record.strategy_id], record.strategy_id
            )
        except StrategyConfigError as exc:
            raise BacktestConfigError(str(exc)) from None
        records.append(record.model_copy(update={"parameters": params[record.strategy_id]}))
    return runtime_config(records)


@dataclass(frozen=True)
class SweepRow:
    index: int
    combination: dict[str, str]
    summaries: tuple[StrategySummary, ...]
    fills: int
    skipped: int

    @property
    def net_pnl(self) -> Decimal:
        return sum((s.net_pnl for s in self.summaries), Decimal(0))

    @property
    def fees(self) -> Decimal:
        return sum((s.fees for s in self.summaries), Decimal(0))

    @property
    def max_drawdown(self) -> Decimal:
        return max((s.max_drawdown for s in self.summaries), default=Decimal(0))

    @property
    def sharpe_like(self) -> float:
        values = [s.sharpe_like for s in self.summaries]
        return sum(values) / len(values) if values else 0.0


RANK_KEYS = ("net_pnl", "sharpe_like", "max_drawdown")


def _sweep_one(job: tuple[int, TickSource, BacktestSetup, OnBadInput, dict[str, str]]) -> SweepRow:
    index, source, setup, on_bad_input, combination = job
    config = apply_combination(setup.config, combination)
    result, guard = run_backtest(
        source,
        dataclasses.replace(setup, config=config),
        on_bad_input,
    )
    return SweepRow(index, combination, tuple(result.summaries), len(result.fills), guard.skipped)


def sweep(
    source: TickSource,
    setup: BacktestSetup,
    on_bad_input: OnBadInput,
    params: Sequence[SweepParam],
    *,
    jobs: int,
    rank_by: str = "net_pnl",
) -> list[SweepRow]:
    """Run the grid, ``jobs`` processes at a time; rows ranked best first.

    Deterministic: each run depends only on its inputs, and ties keep grid order.
    """
    combinations = grid(setup.config, params)
    for combination in combinations:
        apply_combination(setup.config, combination)  # refuse a bad value before forking
    work: list[Any] = [(i, source, setup, on_bad_input, c) for i, c in enumerate(combinations)]
    if jobs <= 1:
        rows = [_sweep_one(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            rows = list(pool.map(_sweep_one, work))
    if rank_by == "max_drawdown":
        return sorted(rows, key=lambda r: (r.max_drawdown, r.index))
    return sorted(rows, key=lambda r: (-getattr(r, rank_by), r.index))
