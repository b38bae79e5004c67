"""The read model of the portfolio manager: stored state turned into response bodies.

- :class:`ReadApi` turns stored state into response bodies. Every valuation goes through
  :meth:`tables.portfolio.Portfolio.valuation`, the one implementation of P&L.
- :class:`PortfolioReader` fetches stored state: from the Redis mirror when it is
  configured and its circuit breaker lets calls through, otherwise (or when a Redis call
  fails) from the worker's Faust tables. Each response says which in ``source``.

Money leaves as strings of decimals quantised to paise; quantities are integers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypeVar

import structlog

from alpha_panda.circuit_breaker import CircuitOpenError
from alpha_panda.mirror import RedisMirror
from alpha_panda.topics import Tables
from models.events import STRATEGY_ID_FULL_PATTERN
from tables.portfolio import Portfolio, PortfolioValuation
from tables.specs import PORTFOLIOS
from web import schemas
from web.auth import ApiError
from web.formatting import money, parse_prices
from web.live import LiveUpdate

log = structlog.get_logger(__name__)

T = TypeVar("T")
Source = Literal["redis", "tables"]
ListSource = Literal["redis", "tables", "redis+tables"]

PAISE = Decimal("0.01")
LIMIT_MIN, LIMIT_MAX = 1, 500
DEFAULT_FILLS_LIMIT = 50
DEFAULT_REJECTIONS_LIMIT = 50
DEFAULT_EQUITY_LIMIT = LIMIT_MAX
STRATEGY_ID_RE = re.compile(STRATEGY_ID_FULL_PATTERN)
REDIS_CONNECT_TIMEOUT_S = 0.3
REDIS_SOCKET_TIMEOUT_S = 0.5


# -- request parameters ----------------------------------------------------------------


def parse_limit(raw: str | None, default: int) -> int:
    """The ``limit`` query parameter: a plain integer in 1..500; ApiError 400 otherwise."""
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        raise ApiError(400, "bad_request", f"limit must be an integer in {LIMIT_MIN}..{LIMIT_MAX}")
    value = int(raw)
    if not LIMIT_MIN <= value <= LIMIT_MAX:
        raise ApiError(400, "bad_request", f"limit must be an integer in {LIMIT_MIN}..{LIMIT_MAX}")
    return value


def check_strategy_id(raw: str | None) -> str:
    if raw is None or not STRATEGY_ID_RE.fullmatch(raw):
        raise ApiError(
            400, "bad_request", "strategy_id must be 1-64 characters of A-Z a-z 0-9 _ . -"
        )
    return raw


# -- response rows -----------------------------------------------------------------------


def summary_row(
    portfolio: Portfolio, valuation: PortfolioValuation, source: Source
) -> dict[str, Any]:
    return schemas.PortfolioSummary(
        strategy_id=portfolio.strategy_id,
        cash=money(valuation.cash),
        equity=money(valuation.equity),
        market_value=money(valuation.market_value),
        realised_pnl=money(valuation.realized_pnl),
        unrealised_pnl=money(valuation.unrealized_pnl),
        net_pnl=money(valuation.net_pnl),
        fees_paid=money(valuation.fees_paid),
        trade_count=portfolio.trade_count,
        starting_cash=money(portfolio.starting_cash),
        # Open positions; flat ones stay in the detail view for their realised P&L.
        positions_count=sum(1 for p in valuation.positions if p.quantity != 0),
        last_fill_ts=portfolio.last_fill_ts.isoformat() if portfolio.last_fill_ts else None,
        source=source,
    ).model_dump()


def detail_body(
    portfolio: Portfolio, valuation: PortfolioValuation, source: Source
) -> dict[str, Any]:
    positions = [
        schemas.Position(
            instrument_token=p.instrument_token,
            symbol=p.symbol,
            quantity=p.quantity,
            avg_price=money(p.avg_price),
            last_price=money(p.mark_price),
            priced=p.priced,
            market_value=money(p.market_value),
            unrealised_pnl=money(p.unrealized_pnl),
            realised_pnl=money(p.realized_pnl),
        )
        for p in valuation.positions
    ]
    summary = summary_row(portfolio, valuation, source)
    return schemas.PortfolioDetail(**summary, positions=positions).model_dump()


def fill_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    price = Decimal(str(raw["fill_price"]))
    quantity = int(raw["quantity"])
    return schemas.Fill(
        fill_id=str(raw["fill_id"]),
        order_id=str(raw["order_id"]),
        signal_event_id=str(raw["signal_event_id"]),
        instrument_token=int(raw["instrument_token"]),
        symbol=str(raw["symbol"]),
        side=str(raw["side"]),
        quantity=quantity,
        fill_price=money(price),
        notional=money(price * quantity),
        fees=money(Decimal(str(raw["fees"]))),
        execution_mode=str(raw["execution_mode"]),
        filled_ts=str(raw["filled_ts"]),
        reason=str(raw.get("reason") or ""),
    ).model_dump()


def _parse_ts(value: Any) -> datetime:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError("naive timestamp")
    return ts


def rejection_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    signal = raw["signal"]
    return schemas.Rejection(
        event_id=str(raw["event_id"]),
        signal_event_id=str(raw["signal_event_id"]),
        strategy_id=str(signal["strategy_id"]),
        instrument_token=int(signal["instrument_token"]),
        symbol=str(signal["symbol"]),
        side=str(signal["side"]),
        quantity=int(signal["quantity"]),
        reference_price=money(Decimal(str(signal["reference_price"]))),
        reason=str(raw["reason"]),
        detail=str(raw.get("detail", "")),
        rejected_by=str(raw["rejected_by"]),
        rejected_ts=str(raw["rejected_ts"]),
    ).model_dump()


def merge_rejections(
    lists: Iterable[Iterable[Mapping[str, Any]]], limit: int
) -> list[dict[str, Any]]:
    """Rows from every ``strategy:instrument`` list, newest first, at most ``limit``."""
    rows: list[tuple[datetime, str, dict[str, Any]]] = []
    for entries in lists:
        for raw in entries:
            try:
                row = rejection_row(raw)
                rows.append((_parse_ts(row["rejected_ts"]), row["event_id"], row))
            except (KeyError, TypeError, ValueError, InvalidOperation):
                log.warning("bad_rejection_entry")
    # Parsed times, not the strings: "...:00Z" sorts after "...:00.5Z" as text.
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [row for _, _, row in rows[:limit]]


def rejection_key_matches(key: str, strategy_id: str | None) -> bool:
    return strategy_id is None or key.split(":", 1)[0] == strategy_id


# -- reading state ---------------------------------------------------------------------


class TableLike(Protocol):
    """What the API needs of a table: its values in their changelog JSON form, the form
    the Redis mirror holds too (``TypedTable.as_json()``; a plain dict is one, for tests).
    Both are decoded with the table spec's ``decode`` (tables/specs.py)."""

    def get(self, key: str, /) -> Any: ...
    def items(self) -> Iterable[tuple[Any, Any]]: ...


@dataclass(frozen=True)
class ReadModel:
    """The portfolio manager's tables, keyed as documented in agents/portfolio_manager.py."""

    portfolios: TableLike
    recent_fills: TableLike
    last_prices: TableLike
    recent_rejections: TableLike


@dataclass(frozen=True)
class Snapshot:
    portfolios: dict[str, Portfolio]
    sources: dict[str, Source]  # per portfolio: the mirror can lack what a table holds
    prices: dict[int, Decimal]
    # Entirely from the mirror, so its pub/sub announces the next change.
    from_mirror: bool


class PartialViewError(ApiError):
    """Several workers share the portfolios and Redis cannot answer: this worker's tables
    hold only its own partitions, and a partial list must never pass for the whole."""

    def __init__(self) -> None:
        super().__init__(
            503,
            "service_unavailable",
            "the Redis mirror is unavailable and this worker holds only part of the "
            "portfolios (several portfolio-manager workers); retry when the mirror is back",
            {"Retry-After": "2"},
        )


class TablesUnavailableError(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "service_unavailable",
            "the Redis mirror is unavailable and the worker's tables are still recovering",
            {"Retry-After": "2"},
        )


def _portfolios_from(raw: Mapping[str, Any]) -> dict[str, Portfolio]:
    out: dict[str, Portfolio] = {}
    for strategy_id, value in raw.items():
        if value is None:
            continue
        data = json.loads(value) if isinstance(value, str | bytes) else value
        out[str(strategy_id)] = PORTFOLIOS.decode(data)
    return out


@dataclass
class PortfolioReader:
    """Stored state, from the Redis mirror when usable, else from the Faust tables."""

    tables: ReadModel
    mirror: RedisMirror | None
    tables_ready: Callable[[], bool] = lambda: True
    # With several workers (alpha_panda/ownership.py): whether this worker actively owns
    # a key of a table (named as in alpha_panda.topics.Tables), and whether it owns every
    # partition of every table, so that its tables alone are the whole view.
    owns: Callable[[str, str], bool] = lambda table, key: True
    owns_all: Callable[[], bool] = lambda: True
    redis_factory: Callable[[str], Any] | None = None
    _client: Any = None
    _unmirrored: set[str] = field(default_factory=set)

    def _redis(self) -> Any:
        if self._client is None:
            assert self.mirror is not None
            if self.redis_factory is not None:
                self._client = self.redis_factory(self.mirror.url)
            else:
                import redis.asyncio as redis_asyncio

                self._client = redis_asyncio.Redis.from_url(
                    self.mirror.url,
                    socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
                    socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                    decode_responses=True,
                )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _via_mirror(self, fetch: Callable[[Any], Awaitable[T | None]]) -> T | None:
        """``fetch(redis)`` through the mirror's breaker; None means "use the tables".

        Shares the flusher's breaker: both talk to the same Redis, so a failed read makes
        the flusher fail fast too, and an open breaker sends reads straight to the tables
        instead of waiting for a connect timeout on every request.
        """
        if self.mirror is None:
            return None
        try:
            return await self.mirror.breaker.call(lambda: fetch(self._redis()))
        except CircuitOpenError:
            return None
        except Exception as exc:
            log.warning("redis_read_failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return None

    async def in_mirror(self, strategy_id: str) -> bool:
        """Whether the Redis mirror can answer for this portfolio (any worker may then)."""
        keys = self.mirror.keys if self.mirror is not None else None

        async def fetch(redis: Any) -> bool:
            assert keys is not None
            populated = await self._mirror_populated(redis)
            return populated and bool(await redis.exists(keys.portfolio(strategy_id)))

        return bool(await self._via_mirror(fetch))

    def _require_tables(self) -> None:
        if not self.tables_ready():
            raise TablesUnavailableError()

    async def _mirror_populated(self, redis: Any) -> bool:
        # An empty or freshly restarted Redis has no flush marker; its (missing) data must
        # not be served as "no portfolios".
        return bool(await redis.exists(self.mirror.keys.updated))  # type: ignore[union-attr]

    async def _prices_from_redis(self, redis: Any, tokens: set[int]) -> dict[str, Any]:
        if not tokens:
            return {}
        ordered = sorted(tokens)
        values = await redis.hmget(self.mirror.keys.prices, [str(t) for t in ordered])  # type: ignore[union-attr]
        return {str(t): v for t, v in zip(ordered, values, strict=True) if v is not None}

    def _prices_from_tables(self, tokens: set[int]) -> dict[int, Decimal]:
        raw = {
            str(t): v
            for t in tokens
            if self.owns(Tables.LAST_PRICES, str(t))
            and (v := self.tables.last_prices.get(str(t))) is not None
        }
        return parse_prices(raw)

    def _local_portfolios(self, strategy_id: str | None) -> dict[str, Portfolio]:
        """The portfolios this worker owns (a stale copy of a revoked key is not one)."""
        if strategy_id is None:
            raw = {
                str(k): v
                for k, v in list(self.tables.portfolios.items())
                if self.owns(Tables.PORTFOLIOS, str(k))
            }
        else:
            value = self.tables.portfolios.get(strategy_id)
            owned = value is not None and self.owns(Tables.PORTFOLIOS, strategy_id)
            raw = {strategy_id: value} if owned else {}
        return _portfolios_from(raw)

    def _from_tables(self, strategy_id: str | None) -> Snapshot:
        self._require_tables()
        complete = self.owns_all()
        if strategy_id is None and not complete:
            raise PartialViewError()
        portfolios = self._local_portfolios(strategy_id)
        tokens = {t for p in portfolios.values() for t in p.positions}
        # Only an open position's value needs its price; a flat one is worth nothing
        # whatever the price, so it need not be held here (shown unpriced if it is not).
        open_tokens = {
            t for p in portfolios.values() for t, pos in p.positions.items() if pos.quantity
        }
        if not complete and not all(self.owns(Tables.LAST_PRICES, str(t)) for t in open_tokens):
            raise PartialViewError()  # another worker holds some of its prices
        return Snapshot(
            portfolios,
            dict.fromkeys(portfolios, "tables"),
            self._prices_from_tables(tokens),
            from_mirror=False,
        )

    async def snapshot(self, strategy_id: str | None = None) -> Snapshot:
        """Every portfolio (or the one named) with the last prices of its instruments."""
        keys = self.mirror.keys if self.mirror is not None else None

        async def fetch(redis: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
            assert keys is not None
            if not await self._mirror_populated(redis):
                return None
            if strategy_id is None:
                ids = sorted(await redis.smembers(keys.portfolios))
            else:
                ids = [strategy_id]
            values = await redis.mget([keys.portfolio(s) for s in ids]) if ids else []
            raw = {s: v for s, v in zip(ids, values, strict=True) if v is not None}
            tokens = {int(t) for v in raw.values() for t in json.loads(v).get("positions", {})}
            return raw, await self._prices_from_redis(redis, tokens)

        fetched = await self._via_mirror(fetch)
        mirrored: Snapshot | None = None
        if fetched is not None:
            try:
                raw, raw_prices = fetched
                portfolios = _portfolios_from(raw)
                mirrored = Snapshot(
                    portfolios,
                    dict.fromkeys(portfolios, "redis"),
                    parse_prices(raw_prices),
                    from_mirror=True,
                )
            except (ValueError, TypeError) as exc:
                log.warning(
                    "redis_mirror_data_unreadable", error=f"{type(exc).__name__}: {exc}"[:300]
                )
        if mirrored is None:
            return self._from_tables(strategy_id)
        if strategy_id is not None and strategy_id in mirrored.portfolios:
            return mirrored
        if strategy_id is None and not self.tables_ready():
            return mirrored  # nothing local to add yet; the mirror is the best answer
        # The mirror lacks what this worker's tables hold: not flushed yet, or Redis lost
        # its data (FLUSHDB, a restart without persistence) and the flusher only rewrites
        # portfolios that change. The tables are the truth, so their extra rows are added.
        self._require_tables()
        local = self._local_portfolios(strategy_id)
        extra = {k: p for k, p in local.items() if k not in mirrored.portfolios}
        local_prices = self._prices_from_tables({t for p in extra.values() for t in p.positions})
        if strategy_id is None and set(extra) != self._unmirrored:
            self._unmirrored = set(extra)  # logged on change, not on every request
            log.info("redis_mirror_incomplete", missing=sorted(extra)[:20])
        return Snapshot(
            {**mirrored.portfolios, **extra},
            {**mirrored.sources, **dict.fromkeys(extra, "tables")},
            {**local_prices, **mirrored.prices},
            from_mirror=not extra,
        )

    async def fills(self, strategy_id: str) -> tuple[Source, list[Any]]:
        keys = self.mirror.keys if self.mirror is not None else None

        async def fetch(redis: Any) -> str | None:
            assert keys is not None
            value: str | None = await redis.get(keys.fills(strategy_id))
            return value

        raw = await self._via_mirror(fetch)
        if raw is not None:
            try:
                fills = json.loads(raw)
                if isinstance(fills, list):
                    return "redis", fills
            except ValueError:
                log.warning("redis_mirror_data_unreadable", key="fills")
        self._require_tables()
        if not self.owns(Tables.RECENT_FILLS, strategy_id):
            raise PartialViewError()  # routed here as its owner, but no longer owned
        return "tables", list(self.tables.recent_fills.get(strategy_id) or [])

    def _local_rejections(self, strategy_id: str | None) -> dict[str, list[Any]]:
        return {
            str(k): list(v or [])
            for k, v in list(self.tables.recent_rejections.items())
            if rejection_key_matches(str(k), strategy_id)
            and self.owns(Tables.RECENT_REJECTIONS, str(k))
        }

    async def rejections(self, strategy_id: str | None) -> tuple[ListSource, list[list[Any]]]:
        """Rejection lists per ``strategy:instrument`` key (unmerged)."""
        keys = self.mirror.keys if self.mirror is not None else None

        async def fetch(redis: Any) -> dict[str, str] | None:
            assert keys is not None
            if not await self._mirror_populated(redis):
                return None
            index = sorted(
                k
                for k in await redis.smembers(keys.rejection_index)
                if rejection_key_matches(k, strategy_id)
            )
            if not index:
                return {}
            values: list[str | None] = await redis.mget([keys.rejections(k) for k in index])
            return {k: v for k, v in zip(index, values, strict=True) if v is not None}

        raw = await self._via_mirror(fetch)
        mirrored: dict[str, list[Any]] | None = None
        if raw is not None:
            try:
                mirrored = {k: x for k, v in raw.items() if isinstance(x := json.loads(v), list)}
            except ValueError:
                log.warning("redis_mirror_data_unreadable", key="rejections")
        if mirrored is None:
            self._require_tables()
            if not self.owns_all():
                raise PartialViewError()
            return "tables", list(self._local_rejections(strategy_id).values())
        if not self.tables_ready():
            return "redis", list(mirrored.values())
        # As for portfolios: keys the mirror lost are filled in from this worker's table.
        extra = {k: v for k, v in self._local_rejections(strategy_id).items() if k not in mirrored}
        source: ListSource = "redis+tables" if extra else "redis"
        return source, [*mirrored.values(), *extra.values()]

    async def equity_samples(
        self, strategy_id: str, limit: int
    ) -> list[tuple[str, Decimal]] | None:
        """Mirrored ``[ts, equity]`` samples, oldest first; None when Redis cannot say."""
        keys = self.mirror.keys if self.mirror is not None else None

        async def fetch(redis: Any) -> list[str] | None:
            assert keys is not None
            values: list[str] = await redis.lrange(keys.equity(strategy_id), 0, limit - 1)
            return values

        raw = await self._via_mirror(fetch)
        if raw is None:
            return None
        samples: list[tuple[str, Decimal]] = []
        for item in reversed(raw):  # stored newest first
            try:
                ts, value = json.loads(item)
                samples.append((_parse_ts(ts).isoformat(), Decimal(str(value))))
            except (ValueError, TypeError, InvalidOperation):
                log.warning("bad_equity_sample")
        return samples


# -- response bodies -------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReadApi:
    """Response bodies of the read endpoints; raises :class:`ApiError` for refusals."""

    reader: PortfolioReader
    clock: Callable[[], datetime] = utc_now

    async def portfolios(self) -> dict[str, Any]:
        return self._portfolio_list(await self.reader.snapshot())

    @staticmethod
    def _portfolio_list(snap: Snapshot) -> dict[str, Any]:
        rows = [
            summary_row(p, p.valuation(snap.prices), snap.sources[sid])
            for sid, p in sorted(snap.portfolios.items())
        ]
        return schemas.PortfolioList(portfolios=rows).model_dump()

    async def _one(self, strategy_id: str) -> tuple[Snapshot, Portfolio]:
        snap = await self.reader.snapshot(strategy_id)
        portfolio = snap.portfolios.get(strategy_id)
        if portfolio is None:
            raise ApiError(404, "not_found", f"no portfolio for strategy {strategy_id!r}")
        return snap, portfolio

    async def portfolio(self, strategy_id: str) -> dict[str, Any]:
        snap, portfolio = await self._one(strategy_id)
        return detail_body(portfolio, portfolio.valuation(snap.prices), snap.sources[strategy_id])

    async def fills(self, strategy_id: str, limit: int) -> dict[str, Any]:
        await self._one(strategy_id)
        source, raw = await self.reader.fills(strategy_id)
        rows = []
        for entry in raw:
            try:
                rows.append(fill_row(entry))
            except (KeyError, TypeError, ValueError, InvalidOperation):
                log.warning("bad_fill_entry", strategy_id=strategy_id)
            if len(rows) >= limit:
                break
        return schemas.FillList(strategy_id=strategy_id, source=source, fills=rows).model_dump()

    async def equity(self, strategy_id: str, limit: int) -> dict[str, Any]:
        snap, portfolio = await self._one(strategy_id)
        current = portfolio.valuation(snap.prices).equity
        samples: list[tuple[str, Decimal]] = []
        source: Source = snap.sources[strategy_id]
        if source == "redis":
            mirrored = await self.reader.equity_samples(strategy_id, limit)
            if mirrored is not None:
                samples = mirrored
            else:
                source = "tables"
        if not samples:
            # Tables keep no history: the one point they can give is now.
            samples = [(self.clock().isoformat(), current)]
        return schemas.EquitySeries(
            strategy_id=strategy_id,
            source=source,
            samples=[schemas.EquitySample(ts=ts, equity=money(value)) for ts, value in samples],
        ).model_dump()

    async def rejected(self, strategy_id: str | None, limit: int) -> dict[str, Any]:
        source, lists = await self.reader.rejections(strategy_id)
        rows = merge_rejections(lists, limit)
        return schemas.RejectionList(source=source, rejections=rows).model_dump()

    async def live_update(self) -> LiveUpdate:
        snap = await self.reader.snapshot()
        return LiveUpdate(data=self._portfolio_list(snap), from_mirror=snap.from_mirror)
