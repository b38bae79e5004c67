"""The Redis mirror's flusher keeps what is marked while its write is in flight.

The agents run while the flusher awaits Redis. A fill booked then changes a portfolio
whose older value is already in the pipeline; a rebalance's recovery asks for a resync.
Both must reach Redis on the next flush (before, the flush that was in flight dropped
them, and Redis served the older portfolio until the next fill of that strategy).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from alpha_panda.circuit_breaker import CircuitBreaker
from alpha_panda.mirror import MirrorKeys, MirrorSources, RedisMirror

KEYS = MirrorKeys("flush-test")


class GatedRedis:
    """A Redis client whose pipelines apply their SETs only when the test opens the gate."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.gate = asyncio.Event()
        self.in_flight = asyncio.Event()

    def pipeline(self, transaction: bool = False) -> GatedPipeline:
        return GatedPipeline(self)


class GatedPipeline:
    def __init__(self, redis: GatedRedis) -> None:
        self.redis = redis
        self.sets: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        self.sets[key] = value

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None  # sadd, hset, lpush, ...: not looked at here

    async def execute(self) -> None:
        self.redis.in_flight.set()
        await self.redis.gate.wait()
        self.redis.strings.update(self.sets)


def mirror_over(table: dict[str, dict[str, Any]], redis: GatedRedis) -> RedisMirror:
    mirror = RedisMirror(
        url="redis://unused",
        keys=KEYS,
        sources=MirrorSources(
            portfolio=table.get,
            fills=lambda sid: [],
            price=lambda token: None,
            rejections=lambda key: None,
            equity=lambda sid: None,
            all_keys=lambda: (list(table), [], []),
        ),
        breaker=CircuitBreaker("test", failure_threshold=5, reset_timeout_s=0),
    )
    mirror._client = redis
    return mirror


async def flush_while(mirror: RedisMirror, redis: GatedRedis, meanwhile: Any) -> None:
    """One flush, with ``meanwhile`` run while its write waits on Redis."""
    redis.gate.clear()
    redis.in_flight.clear()
    flush = asyncio.create_task(mirror.flush())
    await redis.in_flight.wait()
    meanwhile()
    redis.gate.set()
    assert await flush


def mirrored(redis: GatedRedis, sid: str) -> Any:
    return json.loads(redis.strings[KEYS.portfolio(sid)])


async def test_a_portfolio_marked_during_a_write_is_written_by_the_next_flush() -> None:
    table = {"mom": {"trade_count": 1}}
    redis = GatedRedis()
    mirror = mirror_over(table, redis)
    mirror._resync = False  # only what is marked
    mirror.mark_portfolio("mom")

    def book_a_fill() -> None:
        table["mom"] = {"trade_count": 2}
        mirror.mark_portfolio("mom")

    await flush_while(mirror, redis, book_a_fill)
    assert mirrored(redis, "mom") == {"trade_count": 1}  # read before the fill
    assert mirror.dirty_portfolios == {"mom"}
    redis.gate.set()
    assert await mirror.flush()
    assert mirrored(redis, "mom") == {"trade_count": 2}


async def test_a_resync_requested_during_a_write_runs_on_the_next_flush() -> None:
    table = {"mom": {"trade_count": 1}}
    redis = GatedRedis()
    mirror = mirror_over(table, redis)
    mirror._resync = False
    mirror.mark_portfolio("mom")

    def take_over_a_partition() -> None:
        # Recovered from the changelog: changed without a mark (see agents/portfolio_manager.py).
        table["mr"] = {"trade_count": 7}
        mirror.request_resync()

    await flush_while(mirror, redis, take_over_a_partition)
    assert KEYS.portfolio("mr") not in redis.strings
    redis.gate.set()
    assert await mirror.flush()
    assert mirrored(redis, "mr") == {"trade_count": 7}
