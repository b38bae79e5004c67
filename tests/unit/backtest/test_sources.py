"""Tick sources: files, the random walk, OHLC candles, and bad input refused or skipped."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.backtest.record import TopicRead, TopicTick, write_jsonl
from alpha_panda.backtest.sources import (
    BadInput,
    BadInputError,
    Candle,
    OnBadInput,
    TickGuard,
    candle_path,
    candle_ticks,
    jsonl_ticks,
    random_walk_ticks,
)
from alpha_panda.domain.random_walk import parse_instruments
from alpha_panda.topics import MARKET_TICKS
from models.events import MarketTick

D = Decimal
T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
A, B = 738561, 408065


def tick(token: int, price: str, seconds: int) -> MarketTick:
    return MarketTick(
        instrument_token=token,
        symbol="RELIANCE" if token == A else "INFY",
        last_price=D(price),
        volume=1,
        exchange_ts=T0 + timedelta(seconds=seconds),
    )


def line(t: MarketTick, event_id: str) -> bytes:
    return MARKET_TICKS.record(t, event_id=event_id, ts=t.exchange_ts, source="test").value


def write(path: Path, lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("name", ["ticks.jsonl", "ticks.jsonl.gz"])
def test_jsonl_file_yields_ticks_with_their_envelope_ids_and_line_numbers(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    write(path, [line(tick(A, "100", 0), "e1"), b"", line(tick(B, "50", 1), "e2")])
    items = list(jsonl_ticks(path))
    assert [(pos, t.last_price, event_id) for pos, t, event_id in items] == [  # type: ignore[misc]
        (1, D("100"), "e1"),
        (3, D("50"), "e2"),
    ]


def test_a_malformed_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    write(path, [line(tick(A, "100", 0), "e1"), b'{"type": "market.tick", "oops"', b"[]"])
    guard = TickGuard(frozenset({A}), OnBadInput.REFUSE)
    with pytest.raises(BadInputError, match=r"bad\.jsonl:2: malformed: .*--on-bad-input skip"):
        list(guard.ticks(jsonl_ticks(path)))


def test_skip_counts_and_reports_every_kind_of_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    write(
        path,
        [
            line(tick(A, "100", 10), "e1"),
            b"not json",
            line(tick(B, "50", 11), "e2"),  # no strategy trades B
            line(tick(A, "101", 5), "e3"),  # older than the tick before it
            line(tick(A, "102", 12), "e4"),
        ],
    )
    guard = TickGuard(frozenset({A}), OnBadInput.SKIP, label=f"{path}:")
    kept = list(guard.ticks(jsonl_ticks(path)))
    assert [event_id for _, event_id in kept] == ["e1", "e4"]
    assert guard.counts == {
        BadInput.MALFORMED: 1,
        BadInput.UNKNOWN_INSTRUMENT: 1,
        BadInput.OUT_OF_ORDER: 1,
    }
    report = "\n".join(guard.report())
    assert report.splitlines()[0] == (
        "skipped bad input: 1 malformed, 1 out_of_order, 1 unknown_instrument"
    )
    assert f"{path}:2: malformed" in report
    assert f"{path}:3: unknown_instrument: instrument 408065 (INFY)" in report
    assert f"{path}:4: out_of_order: exchange_ts 2026-01-05T03:45:05+00:00 is before" in report


def test_unknown_instrument_is_refused_by_default_policy() -> None:
    guard = TickGuard(frozenset({A}), OnBadInput.REFUSE, label="walk step ")
    items = [(0, tick(B, "50", 0), "e")]
    with pytest.raises(BadInputError, match="walk step 0: unknown_instrument"):
        list(guard.ticks(items))


def test_random_walk_is_the_feeds_walk_with_stable_ids() -> None:
    instruments = parse_instruments("1:A:100,2:B:200")

    def run() -> list[tuple[object, MarketTick, str]]:
        return list(  # type: ignore[arg-type]
            random_walk_ticks(
                instruments,
                seed=5,
                volatility_bps=D("8"),
                count=6,
                start=T0,
                interval=timedelta(seconds=1),
            )
        )

    first, second = run(), run()
    assert first == second
    assert [t.instrument_token for _, t, _ in first] == [1, 2, 1, 2, 1, 2]
    assert [t.exchange_ts for _, t, _ in first] == [T0 + timedelta(seconds=n) for n in range(6)]
    assert len({event_id for _, _, event_id in first}) == 6
    # Valid by construction: the same ticks pass full validation.
    for _, t, _ in first:
        assert MarketTick.model_validate(t.model_dump()) == t


def candle(o: str, h: str, low: str, c: str, volume: int = 100) -> Candle:
    return Candle(T0, D(o), D(h), D(low), D(c), volume)


@pytest.mark.parametrize(
    ("ohlc", "path"),
    [
        (("100", "101", "95", "98"), ("100", "101", "95", "98")),  # high nearer the open
        (("100", "108", "99", "105"), ("100", "99", "108", "105")),  # low nearer
        (("100", "103", "97", "100"), ("100", "97", "103", "100")),  # tie: low first
        (("100", "100", "100", "100"), ("100", "100", "100", "100")),
    ],
)
def test_candle_path_visits_the_nearer_extreme_first(
    ohlc: tuple[str, str, str, str], path: tuple[str, str, str, str]
) -> None:
    assert candle_path(candle(*ohlc)) == tuple(D(p) for p in path)


def test_an_impossible_candle_is_refused() -> None:
    with pytest.raises(ValueError, match="not low <= open, close <= high"):
        candle_path(candle("100", "99", "95", "98"))


def test_candle_ticks_spread_over_the_interval_with_cumulative_volume() -> None:
    candles = [
        candle("100", "101", "95", "98", 10),
        Candle(T0 + timedelta(minutes=1), D("98"), D("99"), D("97"), D("99"), 7),
    ]
    ticks = list(candle_ticks(candles, token=A, symbol="RELIANCE", interval=timedelta(minutes=1)))
    assert [t.exchange_ts - T0 for t, _ in ticks[:4]] == [
        timedelta(seconds=s) for s in (0, 15, 30, 45)
    ]
    assert [t.last_quantity for t, _ in ticks] == [2, 2, 2, 4, 1, 1, 1, 4]
    assert [t.volume for t, _ in ticks] == [2, 4, 6, 10, 11, 12, 13, 17]
    assert [index for _, index in ticks] == list(range(8))


def test_recorded_file_keeps_record_bytes_and_reads_back(tmp_path: Path) -> None:
    ticks = [tick(A, "100", 0), tick(A, "100.05", 1)]
    values = [line(t, f"id{n}") for n, t in enumerate(ticks)]
    read = TopicRead(
        [
            TopicTick(t.exchange_ts, 0, n, v, t, f"id{n}")
            for n, (t, v) in enumerate(zip(ticks, values, strict=True))
        ],
        [],
    )
    path = tmp_path / "rec.jsonl.gz"
    assert write_jsonl(read, path) == 2
    assert gzip.decompress(path.read_bytes()).splitlines() == values
    assert [(t, e) for _, t, e in jsonl_ticks(path)] == [(t, f"id{n}") for n, t in enumerate(ticks)]  # type: ignore[misc]


def test_topic_source_reports_unreadable_records_by_partition_and_offset() -> None:
    from alpha_panda.backtest.runner import TopicSource
    from alpha_panda.backtest.sources import Problem

    good = tick(A, "100", 0)
    read = TopicRead(
        [TopicTick(good.exchange_ts, 3, 7, line(good, "e1"), good, "e1")],
        [Problem("market.ticks[1]@4", BadInput.MALFORMED, "invalid_json: oops")],
    )
    source = TopicSource(read)
    guard = TickGuard(frozenset({A}), OnBadInput.SKIP, label=source.label)
    assert [e for _, e in guard.ticks(source.items())] == ["e1"]
    assert guard.examples[0].line() == "market.ticks[1]@4: malformed: invalid_json: oops"
    refuse = TickGuard(frozenset({B}), OnBadInput.REFUSE, label=source.label)
    with pytest.raises(BadInputError, match=r"market.ticks\[1\]@4: malformed"):
        list(refuse.ticks(source.items()))


def test_bad_utf8_and_a_truncated_gzip_file_are_bad_input_with_their_line(tmp_path: Path) -> None:
    ok = [line(tick(A, str(100 + n), n), f"e{n}") for n in range(200)]
    plain = tmp_path / "latin.jsonl"
    write(plain, [ok[0], b'{"type": "market.tick", "symbol": "\xe9"}', ok[1]])
    guard = TickGuard(frozenset({A}), OnBadInput.SKIP)
    assert [e for _, e in guard.ticks(jsonl_ticks(plain))] == ["e0", "e1"]
    assert guard.examples[0].where == f"{plain}:2"

    truncated = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress(b"\n".join(ok) + b"\n")
    truncated.write_bytes(whole[: len(whole) // 2])
    guard = TickGuard(frozenset({A}), OnBadInput.SKIP)
    kept = list(guard.ticks(jsonl_ticks(truncated)))
    assert 0 < len(kept) < 200
    (problem,) = guard.examples  # the lines before the break are read, then one problem
    assert problem.where == f"{truncated}:{len(kept) + 1}"
    assert problem.kind is BadInput.MALFORMED
    assert problem.reason.startswith("file unreadable from here: Compressed file ended")
