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


async def test_a_mirror_built_from_another_log_is_cleared_before_anything_is_served(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = MirrorKeys("resync-test")
    old = mirror_over(redis_url, {"stale": {"cash": "1"}, "kept": {"cash": "2"}})
    old.log_id = "log-1"
    assert await old.flush() is True
    await old.close()
    assert client.get(keys.log_id) == b"log-1"
    client.set("resync-test:not-the-mirrors", "x")  # other keys under the prefix stay

    same = mirror_over(redis_url, {"kept": {"cash": "2"}})
    same.log_id = "log-1"  # same log: nothing cleared (a restart of the portfolio manager)
    assert await same.flush() is True
    await same.close()
    assert client.get(keys.portfolio("stale")) is not None

    new = mirror_over(redis_url, {"kept": {"cash": "3"}})
    new.log_id = "log-2"  # a new log: what came from log-1 is gone
    assert await new.flush() is True
    await new.close()
    assert client.get(keys.log_id) == b"log-2"
    assert client.get(keys.portfolio("stale")) is None
    assert {m.decode() for m in client.smembers(keys.portfolios)} == {"kept"}
    assert json.loads(client.get(keys.portfolio("kept"))) == {"cash": "3"}
    assert client.lrange(keys.equity("stale"), 0, -1) == []
    assert client.get("resync-test:not-the-mirrors") == b"x"
