"""The Redis mirror copies everything on its first flush and again after Redis failed
(Redis may come back empty), not only the keys that changed since."""

from __future__ import annotations

import json

import pytest
import redis

from alpha_panda.circuit_breaker import CircuitBreaker
from alpha_panda.mirror import MirrorKeys, MirrorSources, RedisMirror, rewrite_portfolios

pytestmark = pytest.mark.integration


def mirror_over(url: str, portfolios: dict[str, dict[str, str]]) -> RedisMirror:
    prices = {"101": {"price": "100.05", "symbol": "S101", "ts": "2026-01-05T03:45:00+00:00"}}
    return RedisMirror(
        url=url,
        keys=MirrorKeys("resync-test"),
        sources=MirrorSources(
            portfolio=portfolios.get,
            fills=lambda sid: [],
            price=prices.get,
            rejections=lambda key: [],
            equity=lambda sid: portfolios[sid]["cash"] if sid in portfolios else None,
            all_keys=lambda: (list(portfolios), list(prices), []),
        ),
        breaker=CircuitBreaker("test", failure_threshold=5, reset_timeout_s=0),
    )


async def test_first_flush_and_recovery_after_failure_copy_everything(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    portfolios = {"a": {"cash": "10"}, "b": {"cash": "20"}}
    mirror = mirror_over("redis://127.0.0.1:1/0", portfolios)  # nothing listens there
    assert await mirror.flush() is False

    mirror.url, mirror._client = redis_url, None  # Redis is back, empty
    assert await mirror.flush() is True
    keys = MirrorKeys("resync-test")
    assert json.loads(client.get(keys.portfolio("a"))) == {"cash": "10"}
    assert json.loads(client.get(keys.portfolio("b"))) == {"cash": "20"}
    assert client.hget(keys.prices, "101") is not None

    client.flushdb()  # data lost without a failed write: no resync, only marked keys
    mirror.mark_portfolio("a")
    assert await mirror.flush() is True
    assert client.get(keys.portfolio("a")) is not None
    assert client.get(keys.portfolio("b")) is None
    await mirror.close()


async def test_rewrite_drops_portfolios_that_no_longer_exist(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = MirrorKeys("resync-test")
    await rewrite_portfolios(redis_url, keys, {"a": {"cash": "1"}, "gone": {"cash": "2"}})
    await rewrite_portfolios(redis_url, keys, {"a": {"cash": "3"}})
    assert client.get(keys.portfolio("gone")) is None
    assert {m.decode() for m in client.smembers(keys.portfolios)} == {"a"}
    assert json.loads(client.get(keys.portfolio("a"))) == {"cash": "3"}
