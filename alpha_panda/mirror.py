"""The Redis mirror of the portfolio manager's tables: a read cache, never the truth.

Agents only mark what changed (a set insert per message). A background flusher copies
the *current* table values of everything marked to Redis in one pipeline, every
``FLUSH_INTERVAL_S``. When Redis is down the circuit breaker fails fast, the marks stay,
and the next successful flush catches up: nothing is lost because the tables hold it.

Key schema (prefix ``ALPHA_PANDA_REDIS_KEY_PREFIX``, default ``alpha-panda``):

| key | type | value |
|---|---|---|
| ``{p}:portfolios`` | set | strategy ids that have a portfolio |
| ``{p}:portfolio:{strategy_id}`` | string | JSON of a `PORTFOLIOS` value (tables/specs.py) |
| ``{p}:fills:{strategy_id}`` | string | JSON list of recent fills, newest first |
| ``{p}:prices`` | hash | ``instrument_token`` -> JSON ``{"price", "symbol", "ts"}`` |
| ``{p}:rejections`` | set | rejection list keys (``strategy_id:instrument_token``) |
| ``{p}:rejections:{key}`` | string | JSON list of recent rejections, newest first |
| ``{p}:equity:{strategy_id}`` | list | JSON ``[ts, equity]`` samples, newest first, capped |
| ``{p}:mirror:updated`` | string | ISO time of the last successful flush |
| ``{p}:mirror:log-id`` | string | id of the log the mirror was built from (log_identity.py) |
| ``{p}:updates`` | pub/sub | ``{"strategy_ids": [...]}`` after each flush that changed portfolios |
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.1
EQUITY_SAMPLES = 1_000


@dataclass(frozen=True)
class MirrorKeys:
    prefix: str

    @property
    def portfolios(self) -> str:
        return f"{self.prefix}:portfolios"

    def portfolio(self, strategy_id: str) -> str:
        return f"{self.prefix}:portfolio:{strategy_id}"

    def fills(self, strategy_id: str) -> str:
        return f"{self.prefix}:fills:{strategy_id}"

    @property
    def prices(self) -> str:
        return f"{self.prefix}:prices"

    @property
    def rejection_index(self) -> str:
        return f"{self.prefix}:rejections"

    def rejections(self, key: str) -> str:
        return f"{self.prefix}:rejections:{key}"

    def equity(self, strategy_id: str) -> str:
        return f"{self.prefix}:equity:{strategy_id}"

    @property
    def updated(self) -> str:
        return f"{self.prefix}:mirror:updated"

    @property
    def log_id(self) -> str:
        return f"{self.prefix}:mirror:log-id"

    @property
    def updates_channel(self) -> str:
        return f"{self.prefix}:updates"


@dataclass
class MirrorSources:
    """How the flusher reads current state (the portfolio manager's tables)."""

    portfolio: Callable[[str], dict[str, Any] | None]
    fills: Callable[[str], list[Any] | None]
    price: Callable[[str], dict[str, Any] | None]
    rejections: Callable[[str], list[Any] | None]
    equity: Callable[[str], str | None]  # current equity of a portfolio, as a decimal string
    # Every key the tables hold: (portfolio ids, instrument tokens, rejection keys), for a
    # full resync after Redis lost data or was unreachable.
    all_keys: Callable[[], tuple[list[str], list[str], list[str]]] | None = None


@dataclass
class RedisMirror:
    url: str
    keys: MirrorKeys
    sources: MirrorSources
    breaker: CircuitBreaker
    dirty_portfolios: set[str] = field(default_factory=set)
    dirty_prices: set[str] = field(default_factory=set)
    dirty_rejections: set[str] = field(default_factory=set)
    flushes: int = 0
    _client: Any = None
    _last_equity: dict[str, str] = field(default_factory=dict)
    _resync: bool = True  # the first flush, and after any failure, copies everything
    # The log the tables are rebuilt from (alpha_panda/log_identity.py). Until the mirror
    # is bound to it nothing is written: a mirror built from another log is cleared first.
    log_id: str | None = None
    _bound: bool = False

    def mark_portfolio(self, strategy_id: str) -> None:
        self.dirty_portfolios.add(strategy_id)

    def mark_price(self, token: str) -> None:
        self.dirty_prices.add(token)

    def mark_rejections(self, key: str) -> None:
        self.dirty_rejections.add(key)

    def request_resync(self) -> None:
        """Copy every key the sources hold on the next flush: after a rebalance, the
        partitions a worker took over may hold changes their dead owner never flushed."""
        self._resync = True

    @property
    def backlog(self) -> int:
        return len(self.dirty_portfolios) + len(self.dirty_prices) + len(self.dirty_rejections)

    async def health(self) -> tuple[bool, str]:
        state = self.breaker.state
        if state is BreakerState.CLOSED and self.breaker.last_error is None:
            return True, f"mirror in sync ({self.flushes} flushes, backlog {self.backlog})"
        return False, f"mirror {state.value}: {self.breaker.last_error} (backlog {self.backlog})"

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as redis_asyncio

            self._client = redis_asyncio.Redis.from_url(
                self.url, socket_connect_timeout=0.5, socket_timeout=1.0
            )
        return self._client

    async def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await self.flush()

    async def flush(self) -> bool:
        """Copy everything marked to Redis; on failure keep the marks for the next round."""
        if self.log_id is not None and not self._bound:
            try:
                await self.breaker.call(self._bind)
            except CircuitOpenError:
                return False
            except Exception as exc:  # Redis errors must never reach the agents
                log.warning("redis_mirror_bind_failed", error=f"{type(exc).__name__}: {exc}")
                return False
            self._bound = True
            self._resync = True
        # The marks and a resync request are taken *before* the write: the agents run
        # while it is in flight, and what they mark then (a fill booked after its value
        # was read for this write, a rebalance's resync) must stay for the next flush.
        # Taking them afterwards dropped such a mark, and Redis kept the older value.
        resync, self._resync = self._resync, False
        if resync and self.sources.all_keys is not None:
            portfolio_ids, tokens, rejection_keys = self.sources.all_keys()
            self.dirty_portfolios.update(portfolio_ids)
            self.dirty_prices.update(tokens)
            self.dirty_rejections.update(rejection_keys)
            self._last_equity.clear()
        if not self.backlog:
            return True
        portfolios, self.dirty_portfolios = self.dirty_portfolios, set()
        prices, self.dirty_prices = self.dirty_prices, set()
        rejections, self.dirty_rejections = self.dirty_rejections, set()
        try:
            await self.breaker.call(lambda: self._write(portfolios, prices, rejections))
        except CircuitOpenError:
            self._keep(portfolios, prices, rejections, resync=resync)
            return False
        except Exception as exc:  # Redis errors must never reach the agents
            log.warning("redis_mirror_write_failed", error=f"{type(exc).__name__}: {exc}")
            # Redis may come back empty (no persistence): copy everything next time.
            self._keep(portfolios, prices, rejections, resync=True)
            return False
        self.flushes += 1
        return True

    def _keep(
        self, portfolios: set[str], prices: set[str], rejections: set[str], *, resync: bool
    ) -> None:
        """A failed write's marks (and resync) go back for the next flush."""
        self.dirty_portfolios |= portfolios
        self.dirty_prices |= prices
        self.dirty_rejections |= rejections
        self._resync = self._resync or resync

    async def _write(self, portfolios: set[str], prices: set[str], rejections: set[str]) -> None:
        now = datetime.now(UTC).isoformat()
        pipe = self._redis().pipeline(transaction=False)
        for strategy_id in portfolios:
            snapshot = self.sources.portfolio(strategy_id)
            if snapshot is None:
                continue
            pipe.sadd(self.keys.portfolios, strategy_id)
            pipe.set(self.keys.portfolio(strategy_id), json.dumps(snapshot))
            pipe.set(
                self.keys.fills(strategy_id), json.dumps(self.sources.fills(strategy_id) or [])
            )
        price_values = {
            t: json.dumps(v) for t in prices if (v := self.sources.price(t)) is not None
        }
        if price_values:
            pipe.hset(self.keys.prices, mapping=price_values)
        for key in rejections:
            pipe.sadd(self.keys.rejection_index, key)
            pipe.set(self.keys.rejections(key), json.dumps(self.sources.rejections(key) or []))
        # Equity moves with every price, so sample it for every portfolio on every flush
        # that changed anything, not only for the portfolios that traded.
        for strategy_id in self._known_portfolios(portfolios):
            equity = self.sources.equity(strategy_id)
            if equity is not None and self._last_equity.get(strategy_id) != equity:
                self._last_equity[strategy_id] = equity
                pipe.lpush(self.keys.equity(strategy_id), json.dumps([now, equity]))
                pipe.ltrim(self.keys.equity(strategy_id), 0, EQUITY_SAMPLES - 1)
        pipe.set(self.keys.updated, now)
        if portfolios or prices:
            pipe.publish(
                self.keys.updates_channel,
                json.dumps({"strategy_ids": sorted(self._known_portfolios(portfolios))}),
            )
        await pipe.execute()

    async def _bind(self) -> None:
        """Clear the mirror if it was built from another log, then record this log's id."""
        client = self._redis()
        current = await client.get(self.keys.log_id)
        if current is not None and current.decode() == self.log_id:
            return
        cleared = await clear_mirror(client, self.keys)
        await client.set(self.keys.log_id, str(self.log_id))
        self._last_equity.clear()
        log.warning(
            "redis_mirror_cleared",
            reason="built from another log",
            previous_log_id=current.decode() if current is not None else None,
            log_id=self.log_id,
            keys_deleted=cleared,
        )

    def _known_portfolios(self, extra: set[str]) -> set[str]:
        return set(self._last_equity) | extra

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def rewrite_portfolios(
    url: str, keys: MirrorKeys, portfolios: Mapping[str, dict[str, Any]]
) -> None:
    """Replace the mirrored portfolios wholesale (used by `alpha-panda rebuild --apply`)."""
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(url)
    try:
        stale = {m.decode() for m in await client.smembers(keys.portfolios)} - set(portfolios)
        pipe = client.pipeline(transaction=True)
        for strategy_id in stale:
            pipe.delete(keys.portfolio(strategy_id))
        pipe.delete(keys.portfolios)
        for strategy_id, snapshot in portfolios.items():
            pipe.sadd(keys.portfolios, strategy_id)
            pipe.set(keys.portfolio(strategy_id), json.dumps(snapshot))
        await pipe.execute()
    finally:
        await client.aclose()


async def clear_mirror(client: Any, keys: MirrorKeys) -> int:
    """Delete every key of the mirror's schema (and nothing else under the prefix)."""
    portfolios = [m.decode() for m in await client.smembers(keys.portfolios)]
    rejections = [m.decode() for m in await client.smembers(keys.rejection_index)]
    doomed = [keys.portfolios, keys.prices, keys.rejection_index, keys.updated, keys.log_id]
    for strategy_id in portfolios:
        doomed += [keys.portfolio(strategy_id), keys.fills(strategy_id), keys.equity(strategy_id)]
    doomed += [keys.rejections(key) for key in rejections]
    return int(await client.delete(*doomed))
