"""`alpha-panda record` against the embedded broker: partitions merged in event-time
order, --from-offset and --from-time, and unreadable records reported, not written."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from alpha_panda.admin import ensure_topics
from alpha_panda.backtest.record import read_market_ticks, write_jsonl
from alpha_panda.backtest.sources import BadInput, jsonl_ticks
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import load_settings
from alpha_panda.topics import MARKET_TICKS
from tests.factories import T0, tick
from tests.integration.harness import produce

pytestmark = pytest.mark.integration

TOKENS = (256265, 738561, 2953217)  # keyed by token: they land on different partitions


def test_record_merges_partitions_by_event_time_and_reports_bad_records(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = load_settings(broker={"url": fresh_broker.bootstrap})
    asyncio.run(ensure_topics(settings))
    ticks = [tick(str(100 + n), n, TOKENS[n % 3]) for n in range(9)]
    records = [
        MARKET_TICKS.record(t, event_id=f"e{n}", ts=t.exchange_ts, source="test")
        for n, t in enumerate(ticks)
    ]
    garbage = (MARKET_TICKS.name, str(TOKENS[0]).encode(), b"not an envelope")
    asyncio.run(produce(fresh_broker.bootstrap, [*records[:4], garbage, *records[4:]]))

    read = asyncio.run(read_market_ticks(settings))
    assert [t.event_id for t in read.ticks] == [f"e{n}" for n in range(9)]
    assert len({t.partition for t in read.ticks}) > 1, "the test needs several partitions"
    (problem,) = read.problems
    assert problem.kind is BadInput.MALFORMED
    assert problem.where.startswith(f"{MARKET_TICKS.name}[")
    assert "invalid_json" in problem.reason

    path = tmp_path / "ticks.jsonl"
    assert write_jsonl(read, path) == 9
    assert [event_id for _, _, event_id in jsonl_ticks(path)] == [f"e{n}" for n in range(9)]  # type: ignore[misc]

    later = asyncio.run(read_market_ticks(settings, from_time=T0 + timedelta(seconds=5)))
    assert [t.event_id for t in later.ticks] == ["e5", "e6", "e7", "e8"]

    from_two = asyncio.run(read_market_ticks(settings, from_offset=2))
    assert [t.event_id for t in from_two.ticks] == [t.event_id for t in read.ticks if t.offset >= 2]
    assert 0 < len(from_two.ticks) < 9
    assert from_two.problems == read.problems  # the garbage record sits at offset >= 2
