"""Where a backtest's ticks come from, and how bad input is caught.

Every source yields ``(position, tick, event_id)`` items, or a :class:`Problem` for input
it could not read, where ``position`` says where the item came from (a file's line number,
a topic record, a generator step). :class:`TickGuard` then refuses or skips (and counts,
and reports) malformed input, instruments no strategy trades and ticks older than the
tick before them, so nothing is dropped silently.

Sources: JSON Lines files of ``MarketTick`` envelopes (``.gz`` read as gzip; written by
``alpha-panda record`` from market.ticks), market.ticks itself (see
:mod:`alpha_panda.backtest.record`), the mock feed's seeded random walk, and OHLC candles
through :func:`candle_ticks`.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import IO, cast

from alpha_panda.domain.random_walk import InstrumentSpec, RandomWalkFeed
from models.codec import DecodeError, decode
from models.envelope import EVENT_ID_NAMESPACE, EventType
from models.events import MarketTick
from tables.risk_state import trading_day_of

FILE_TOPIC = "file"  # the codec names a record's topic; a file has none


class BadInput(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    OUT_OF_ORDER = "out_of_order"


class OnBadInput(StrEnum):
    REFUSE = "refuse"
    SKIP = "skip"


@dataclass(frozen=True)
class Problem:
    where: str
    kind: BadInput
    reason: str

    def line(self) -> str:
        return f"{self.where}: {self.kind.value}: {self.reason}"


SourceItem = tuple[object, MarketTick, str] | Problem


class BadInputError(ValueError):
    """Bad input under ``--on-bad-input refuse``; names where it is and what is wrong."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(
            f"{problem.line()} (refused; --on-bad-input skip skips and reports such input)"
        )


@dataclass
class TickGuard:
    """Checks every item of a source; refuses at the first problem or skips and counts."""

    instruments: frozenset[int]
    policy: OnBadInput
    label: str = ""
    max_kept: int = 20
    counts: dict[BadInput, int] = field(default_factory=dict)
    examples: list[Problem] = field(default_factory=list)
    _last_ts: datetime | None = None

    def where(self, position: object) -> str:
        return f"{self.label}{position}"

    def ticks(self, items: Iterable[SourceItem]) -> Iterator[tuple[MarketTick, str]]:
        instruments = self.instruments
        for item in items:
            if isinstance(item, Problem):
                self.note(item)
                continue
            position, tick, event_id = item
            ts = tick.exchange_ts
            if tick.instrument_token not in instruments:
                self.note(
                    Problem(
                        self.where(position),
                        BadInput.UNKNOWN_INSTRUMENT,
                        f"instrument {tick.instrument_token} ({tick.symbol}) is traded by no "
                        "configured strategy",
                    )
                )
                continue
            last = self._last_ts
            if last is not None and ts < last:
                self.note(
                    Problem(
                        self.where(position),
                        BadInput.OUT_OF_ORDER,
                        f"exchange_ts {ts.isoformat()} is before the previous tick's "
                        f"{last.isoformat()}",
                    )
                )
                continue
            self._last_ts = ts
            yield tick, event_id

    def note(self, problem: Problem) -> None:
        """Refuse (raise) or count and keep ``problem``, as the policy says."""
        if self.policy is OnBadInput.REFUSE:
            raise BadInputError(problem)
        self.counts[problem.kind] = self.counts.get(problem.kind, 0) + 1
        if len(self.examples) < self.max_kept:
            self.examples.append(problem)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def report(self) -> list[str]:
        if not self.counts:
            return []
        lines = [
            "skipped bad input: "
            + ", ".join(f"{n} {kind.value}" for kind, n in sorted(self.counts.items()))
        ]
        lines += [f"  {p.line()}" for p in self.examples]
        if self.skipped > len(self.examples):
            lines.append(f"  ... and {self.skipped - len(self.examples)} more")
        return lines


def open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def jsonl_ticks(path: Path) -> Iterator[SourceItem]:
    """Each non-blank line a market.ticks envelope; position = line number (from 1).

    Lines are handed to the codec as bytes, so bad UTF-8 is a malformed line like bad
    JSON. A broken gzip stream ends the file with one problem at the line it broke on.
    """
    number = 0
    with open_binary(path) as lines:
        try:
            for number, raw in enumerate(lines, 1):
                if not raw.strip():
                    continue
                try:
                    envelope = decode(
                        raw, topic=FILE_TOPIC, offset=number, expect=EventType.MARKET_TICK
                    )
                except DecodeError as exc:
                    yield Problem(
                        f"{path}:{number}", BadInput.MALFORMED, f"{exc.failure.value}: {exc.reason}"
                    )
                    continue
                yield number, envelope.data, envelope.id
        except (OSError, EOFError) as exc:
            yield Problem(
                f"{path}:{number + 1}", BadInput.MALFORMED, f"file unreadable from here: {exc}"
            )


def random_walk_ticks(
    instruments: list[InstrumentSpec],
    *,
    seed: int,
    volatility_bps: Decimal,
    count: int,
    start: datetime,
    interval: timedelta,
) -> Iterator[SourceItem]:
    """The mock feed's random walk, ``count`` ticks ``interval`` apart from ``start``.

    Tick ids are deterministic (a uuid5 of the seed, then the step number), so signal and
    fill ids repeat from run to run. Ticks skip pydantic validation: they are valid by
    construction (see :class:`alpha_panda.domain.random_walk.RandomWalkFeed`).
    """
    feed = RandomWalkFeed(instruments, seed, volatility_bps, validate=False)
    prefix = uuid.uuid5(EVENT_ID_NAMESPACE, f"random-walk:{seed}").hex[:16]
    step = feed.step
    for n in range(count):
        yield n, step(start + n * interval), f"{prefix}{n:016x}"


# -- OHLC candles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candle:
    ts: datetime  # the candle's open time, timezone-aware
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int


def candle_path(candle: Candle) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The four prices a candle is replayed as: open, the nearer extreme, the farther, close.

    Within a candle the order of high and low is unknown; the path assumes the price went
    first to whichever extreme is closer to the open (the shorter excursion), then to the
    other, then to the close. On a tie (equally far) the low comes first, which is the
    worse order for a long-only strategy buying dips. docs/BACKTESTING.md explains.
    """
    o, h, low, c = candle.open, candle.high, candle.low, candle.close
    if not low <= min(o, c) <= max(o, c) <= h:
        raise ValueError(f"candle at {candle.ts.isoformat()}: not low <= open, close <= high")
    first, second = (h, low) if h - o < o - low else (low, h)
    return o, first, second, c


def ticks_of_candle(
    candle: Candle, *, token: int, symbol: str, interval: timedelta, volume_before: int
) -> list[MarketTick]:
    """Four ticks along :func:`candle_path`, at the candle's open and one, two and three
    quarters of ``interval`` later. Volume: a quarter of the candle's on each of the first
    three, the remainder on the close; cumulative from ``volume_before`` (the day's volume
    so far), as Kite ticks carry it. Raises ValueError for an impossible candle."""
    quarter = interval / 4
    share = candle.volume // 4
    ticks = []
    cumulative = volume_before
    for step, price in enumerate(candle_path(candle)):
        quantity = share if step < 3 else candle.volume - 3 * share
        cumulative += quantity
        ticks.append(
            MarketTick(
                instrument_token=token,
                symbol=symbol,
                last_price=price,
                volume=cumulative,
                last_quantity=quantity,
                exchange_ts=candle.ts + step * quarter,
            )
        )
    return ticks


def candle_ticks(
    candles: Iterable[Candle], *, token: int, symbol: str, interval: timedelta
) -> Iterator[tuple[MarketTick, int]]:
    """:func:`ticks_of_candle` over a series of one instrument's candles, the volume
    restarting each trading day (Asia/Kolkata). Yields (tick, index)."""
    day = None
    cumulative = 0
    index = 0
    for candle in candles:
        if trading_day_of(candle.ts) != day:
            day, cumulative = trading_day_of(candle.ts), 0
        for tick in ticks_of_candle(
            candle, token=token, symbol=symbol, interval=interval, volume_before=cumulative
        ):
            cumulative = tick.volume
            yield tick, index
            index += 1
