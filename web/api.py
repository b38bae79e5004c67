"""The read API of the portfolio manager: portfolios, fills, equity, rejected signals.

Layers, from the outside in:

- :func:`register_api` wires everything to the Faust web server of the portfolio-manager
  worker (called from ``agents/portfolio_manager.py``).
- The views are thin: authenticate, parse parameters, call :class:`ReadApi`, render JSON.
- :class:`ReadApi` turns stored state into response bodies. Every valuation goes through
  :meth:`tables.portfolio.Portfolio.valuation`, the one implementation of P&L.
- :class:`PortfolioReader` fetches stored state: from the Redis mirror when it is
  configured and its circuit breaker lets calls through, otherwise (or when a Redis call
  fails) from the worker's Faust tables. Each response says which in ``source``.

Money leaves as strings of decimals quantised to paise; quantities are integers.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import structlog
from aiohttp import web as aiohttp_web

from alpha_panda.circuit_breaker import CircuitOpenError
from alpha_panda.mirror import RedisMirror
from alpha_panda.ownership import Ownership
from alpha_panda.topics import Tables
from models.events import STRATEGY_ID_FULL_PATTERN
from tables.portfolio import Portfolio, PortfolioValuation
from web.auth import (
    ApiError,
    Authenticator,
    LoginService,
    LoginThrottle,
    Principal,
    UserLike,
    UserLookup,
    error_body,
)
from web.live import ChangeWaiter, LiveUpdate, redis_subscriber, serve_events
from web.openapi import openapi_document
from web.routing import ROUTED_HEADER, OwnerUnreachableError, forward
from web.zerodha import register_zerodha_views

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext
    from alpha_panda.settings import Settings

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
STATIC_DIR = Path(__file__).with_name("static")
# Files the dashboard page loads; nothing else under static/ is served.
STATIC_FILES = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
REDIS_CONNECT_TIMEOUT_S = 0.3
REDIS_SOCKET_TIMEOUT_S = 0.5


# -- formatting ------------------------------------------------------------------------


def money(value: Decimal) -> str:
    """``value`` in rupees, rounded half-up to paise, as a plain decimal string."""
    rounded = value.quantize(PAISE, rounding=ROUND_HALF_UP)
    if rounded == 0:
        rounded = abs(rounded)  # never "-0.00"
    return f"{rounded:f}"


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


def parse_prices(raw: Mapping[str, Any]) -> dict[int, Decimal]:
    """``{token: {"price": "2901.35", ...}}`` (table or mirror form) -> ``{token: price}``."""
    prices: dict[int, Decimal] = {}
    for token, entry in raw.items():
        try:
            value = json.loads(entry) if isinstance(entry, str | bytes) else entry
            price = Decimal(str(value["price"]))
            if price.is_finite() and price > 0:
                prices[int(token)] = price
        except (ValueError, KeyError, TypeError, InvalidOperation):
            log.warning("bad_price_entry", token=str(token)[:32])
    return prices


def summary_row(
    portfolio: Portfolio, valuation: PortfolioValuation, source: Source
) -> dict[str, Any]:
    return {
        "strategy_id": portfolio.strategy_id,
        "cash": money(valuation.cash),
        "equity": money(valuation.equity),
        "market_value": money(valuation.market_value),
        "realised_pnl": money(valuation.realized_pnl),
        "unrealised_pnl": money(valuation.unrealized_pnl),
        "net_pnl": money(valuation.net_pnl),
        "fees_paid": money(valuation.fees_paid),
        "trade_count": portfolio.trade_count,
        "starting_cash": money(portfolio.starting_cash),
        # Open positions; flat ones stay in the detail view for their realised P&L.
        "positions_count": sum(1 for p in valuation.positions if p.quantity != 0),
        "last_fill_ts": portfolio.last_fill_ts.isoformat() if portfolio.last_fill_ts else None,
        "source": source,
    }


def detail_body(
    portfolio: Portfolio, valuation: PortfolioValuation, source: Source
) -> dict[str, Any]:
    body = summary_row(portfolio, valuation, source)
    body["positions"] = [
        {
            "instrument_token": p.instrument_token,
            "symbol": p.symbol,
            "quantity": p.quantity,
            "avg_price": money(p.avg_price),
            "last_price": money(p.mark_price),
            "priced": p.priced,
            "market_value": money(p.market_value),
            "unrealised_pnl": money(p.unrealized_pnl),
            "realised_pnl": money(p.realized_pnl),
        }
        for p in valuation.positions
    ]
    return body


def fill_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    price = Decimal(str(raw["fill_price"]))
    quantity = int(raw["quantity"])
    return {
        "fill_id": str(raw["fill_id"]),
        "order_id": str(raw["order_id"]),
        "signal_event_id": str(raw["signal_event_id"]),
        "instrument_token": int(raw["instrument_token"]),
        "symbol": str(raw["symbol"]),
        "side": str(raw["side"]),
        "quantity": quantity,
        "fill_price": money(price),
        "notional": money(price * quantity),
        "fees": money(Decimal(str(raw["fees"]))),
        "execution_mode": str(raw["execution_mode"]),
        "filled_ts": str(raw["filled_ts"]),
        "reason": str(raw.get("reason") or ""),
    }


def _parse_ts(value: Any) -> datetime:
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError("naive timestamp")
    return ts


def rejection_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    signal = raw["signal"]
    return {
        "event_id": str(raw["event_id"]),
        "signal_event_id": str(raw["signal_event_id"]),
        "strategy_id": str(signal["strategy_id"]),
        "instrument_token": int(signal["instrument_token"]),
        "symbol": str(signal["symbol"]),
        "side": str(signal["side"]),
        "quantity": int(signal["quantity"]),
        "reference_price": money(Decimal(str(signal["reference_price"]))),
        "reason": str(raw["reason"]),
        "detail": str(raw.get("detail", "")),
        "rejected_by": str(raw["rejected_by"]),
        "rejected_ts": str(raw["rejected_ts"]),
    }


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
    """What the API needs of a Faust table (a plain dict is one, for tests)."""

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
        out[str(strategy_id)] = Portfolio.from_json_dict(data)
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
        if not complete and not all(self.owns(Tables.LAST_PRICES, str(t)) for t in tokens):
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
        return {"portfolios": rows}

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
        return {"strategy_id": strategy_id, "source": source, "fills": rows}

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
        return {
            "strategy_id": strategy_id,
            "source": source,
            "samples": [{"ts": ts, "equity": money(value)} for ts, value in samples],
        }

    async def rejected(self, strategy_id: str | None, limit: int) -> dict[str, Any]:
        source, lists = await self.reader.rejections(strategy_id)
        return {"source": source, "rejections": merge_rejections(lists, limit)}

    async def live_update(self) -> LiveUpdate:
        snap = await self.reader.snapshot()
        return LiveUpdate(data=self._portfolio_list(snap), from_mirror=snap.from_mirror)


# -- HTTP plumbing ---------------------------------------------------------------------

API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Scripts and styles only from this origin: the page builds the DOM with textContent,
    # and this stops an injected <script> should that ever slip.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> aiohttp_web.Response:
    return aiohttp_web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={**API_HEADERS, **(headers or {})},
    )


def error_response(error: ApiError) -> aiohttp_web.Response:
    return json_response(error.body(), error.status, error.headers)


def route_label(request: aiohttp_web.Request) -> str:
    """The route pattern (``/api/v1/portfolios/{strategy_id}``), never the raw path."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


STREAM_PATH = "/api/v1/stream"


def http_middleware(ctx: StageContext) -> Any:
    """Metrics per route/method/status, the JSON error format, and no HTML 500 pages."""
    metrics = ctx.metrics

    @aiohttp_web.middleware
    async def middleware(
        request: aiohttp_web.Request,
        handler: Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]],
    ) -> aiohttp_web.StreamResponse:
        started = time.perf_counter()
        response: aiohttp_web.StreamResponse
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(exc)
        except aiohttp_web.HTTPException as exc:
            if not request.path.startswith("/api/"):
                _count(metrics, ctx.source, request, exc.status, started)
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            response = json_response(
                error_body(code, exc.reason or code), exc.status, _allow_header(exc)
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("http_handler_failed", path=request.path, method=request.method)
            response = json_response(error_body("internal_error", "internal server error"), 500)
        _count(metrics, ctx.source, request, response.status, started)
        return response

    return middleware


def _allow_header(exc: aiohttp_web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def _count(
    metrics: Any, stage: str, request: aiohttp_web.Request, status: int, started: float
) -> None:
    route = route_label(request)
    metrics.http_requests.labels(stage, route, request.method, str(status)).inc()
    # A stream's "latency" is how long the client stayed connected: not a request latency.
    if route != STREAM_PATH:
        metrics.http_seconds.labels(stage, route, request.method).observe(
            time.perf_counter() - started
        )


def client_address(request: aiohttp_web.Request) -> str:
    # The socket peer, not X-Forwarded-For: a client could forge that header to spread
    # its failures over many "addresses". Behind a proxy every client shares one address,
    # so the per-username limit still applies but the per-address one becomes global.
    return request.remote or "unknown"


def static_file(name: str) -> tuple[bytes, str]:
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        raise ApiError(404, "not_found", "no such file")
    return (STATIC_DIR / name).read_bytes(), content_type


# -- users from the configuration store ------------------------------------------------


@dataclass
class DatabaseUsers:
    """User lookups against the configuration store, connecting on first use."""

    url: str
    _engine: Any = None
    _sessions: Any = None

    async def get(self, username: str) -> UserLike | None:
        from alpha_panda import db

        if self._sessions is None:
            self._engine = db.create_engine(self.url)
            self._sessions = db.session_factory(self._engine)
        return await db.get_user_by_username(self._sessions, username)

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._sessions = self._engine, None, None
            await engine.dispose()


# -- wiring ----------------------------------------------------------------------------


@dataclass
class ApiServices:
    settings: Settings
    api: ReadApi
    authenticator: Authenticator
    logins: LoginService
    waiter_factory: Callable[[], ChangeWaiter]
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    should_stop: Callable[[], bool] = lambda: False
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def build_services(
    settings: Settings,
    model: ReadModel,
    mirror: RedisMirror | None,
    *,
    users: UserLookup | None = None,
    tables_ready: Callable[[], bool] = lambda: True,
    owns: Callable[[str, str], bool] = lambda table, key: True,
    owns_all: Callable[[], bool] = lambda: True,
) -> ApiServices:
    db_users = DatabaseUsers(settings.database.url) if users is None else None
    lookup: UserLookup = users if users is not None else db_users.get  # type: ignore[union-attr]
    reader = PortfolioReader(model, mirror, tables_ready=tables_ready, owns=owns, owns_all=owns_all)

    def waiter() -> ChangeWaiter:
        if mirror is None:
            return ChangeWaiter(subscribe=None)
        return ChangeWaiter(subscribe=redis_subscriber(mirror.url, mirror.keys.updates_channel))

    services = ApiServices(
        settings=settings,
        api=ReadApi(reader),
        authenticator=Authenticator(settings, lookup),
        logins=LoginService(
            settings,
            lookup,
            LoginThrottle(settings.auth.login_max_failures, settings.auth.login_window_s),
        ),
        waiter_factory=waiter,
    )
    services.on_close.append(reader.close)
    if db_users is not None:
        services.on_close.append(db_users.close)
    return services


def _tables_ready(app: Any) -> bool:
    """Whether the local tables hold this worker's partitions in full.

    Before the first assignment ``in_recovery`` is still False while the tables are empty,
    so the first completed recovery is required too; during a rebalance partitions move.
    """
    if not app.started or app.rebalancing:
        return False
    recovery = app.tables.recovery
    return bool(recovery.completed.is_set()) and not bool(recovery.in_recovery)


def register_api(
    ctx: StageContext,
    model: ReadModel,
    mirror: RedisMirror | None,
    *,
    users: UserLookup | None = None,
) -> ApiServices:
    """Serve the read API, the live stream and the dashboard on the stage's web server."""
    ownership = Ownership(ctx.app)
    read_tables = (
        Tables.PORTFOLIOS,
        Tables.RECENT_FILLS,
        Tables.LAST_PRICES,
        Tables.RECENT_REJECTIONS,
    )
    services = build_services(
        ctx.settings,
        model,
        mirror,
        users=users,
        tables_ready=lambda: _tables_ready(ctx.app),
        owns=ownership.owns,
        owns_all=lambda: ownership.owns_all(read_tables),
    )
    services.should_stop = lambda: bool(ctx.app.should_stop)
    register_views(ctx, model, services)
    return services


def register_views(ctx: StageContext, model: ReadModel, services: ApiServices) -> None:
    app = ctx.app
    api = services.api
    authn = services.authenticator
    web_app: aiohttp_web.Application = app.web.web_app
    web_app.middlewares.append(http_middleware(ctx))

    async def on_shutdown(_: aiohttp_web.Application) -> None:
        # Ends open event streams before aiohttp waits for in-flight handlers.
        services.closing.set()

    async def on_cleanup(_: aiohttp_web.Application) -> None:
        for close in services.on_close:
            try:
                await close()
            except Exception as exc:
                log.warning("api_close_failed", error=f"{type(exc).__name__}: {exc}")

    web_app.on_shutdown.append(on_shutdown)
    web_app.on_cleanup.append(on_cleanup)

    from faust.web import View

    Handler = Callable[..., Awaitable[aiohttp_web.StreamResponse]]

    # Faust is untyped, so its decorators are applied as plain calls (mypy --strict
    # refuses untyped decorators) and the results are typed here.
    def page(path: str, handler: Handler, name: str | None = None) -> None:
        app.page(path, name=name)(handler)

    ownership = Ownership(app)
    rebalancing = ApiError(
        503,
        "service_unavailable",
        "the worker owning this portfolio is not known yet (rebalancing); retry",
        {"Retry-After": "2"},
    )

    def on_owner(table: str, handler: Handler) -> Handler:
        """``handler`` answered from the Redis mirror when it holds the portfolio, else
        run on the worker that owns the ``strategy_id`` key of ``table``.

        Not Faust's ``@app.table_route``: it hashes the JSON-serialized key and picks the
        wrong worker for most keys (alpha_panda/ownership.py).
        """

        async def call(view: Any, request: aiohttp_web.Request, strategy_id: str) -> Any:
            if table not in app.tables or await api.reader.in_mirror(strategy_id):
                return await handler(view, request, strategy_id=strategy_id)
            owner = ownership.owner_url(table, strategy_id)
            if owner is None:
                raise rebalancing
            if ownership.is_self(owner):
                return await handler(view, request, strategy_id=strategy_id)
            if request.headers.get(ROUTED_HEADER):  # forwarded once already: never loop
                raise rebalancing
            try:
                return await forward(app.http_client, owner, request)
            except OwnerUnreachableError as exc:
                log.warning("owner_unreachable", owner=str(owner), error=str(exc))
                raise rebalancing from None

        return call

    async def guard(request: aiohttp_web.Request) -> Principal:
        return await authn.authenticate(request.headers.get("Authorization"))

    # -- auth ---------------------------------------------------------------------

    class Login(View):  # type: ignore[misc]  # faust is untyped
        async def post(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
            issued = await services.logins.login(await request.read(), client_address(request))
            return json_response(issued.as_json())

    app.page("/api/v1/auth/login")(Login)

    # -- portfolios ---------------------------------------------------------------

    async def portfolios(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        await guard(request)
        return json_response(await api.portfolios())

    async def portfolio_here(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.Response:
        return json_response(await api.portfolio(strategy_id))

    # Routed to the worker that owns the key, so the tables fallback reads a local table.
    portfolio_routed = on_owner(Tables.PORTFOLIOS, portfolio_here)

    async def portfolio(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.StreamResponse:
        await guard(request)
        return await portfolio_routed(self, request, check_strategy_id(strategy_id))

    async def fills_here(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.Response:
        limit = parse_limit(request.query.get("limit"), DEFAULT_FILLS_LIMIT)
        return json_response(await api.fills(strategy_id, limit))

    fills_routed = on_owner(Tables.RECENT_FILLS, fills_here)

    async def fills(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.StreamResponse:
        await guard(request)
        parse_limit(request.query.get("limit"), DEFAULT_FILLS_LIMIT)  # a 400 before routing
        return await fills_routed(self, request, check_strategy_id(strategy_id))

    async def equity_here(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.Response:
        limit = parse_limit(request.query.get("limit"), DEFAULT_EQUITY_LIMIT)
        return json_response(await api.equity(strategy_id, limit))

    equity_routed = on_owner(Tables.PORTFOLIOS, equity_here)

    async def equity(
        self: Any, request: aiohttp_web.Request, strategy_id: str
    ) -> aiohttp_web.StreamResponse:
        await guard(request)
        parse_limit(request.query.get("limit"), DEFAULT_EQUITY_LIMIT)
        return await equity_routed(self, request, check_strategy_id(strategy_id))

    page("/api/v1/portfolios", portfolios)
    page("/api/v1/portfolios/{strategy_id}", portfolio)
    page("/api/v1/portfolios/{strategy_id}/fills", fills)
    page("/api/v1/portfolios/{strategy_id}/equity", equity)

    # -- signals ------------------------------------------------------------------

    async def rejected(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        await guard(request)
        limit = parse_limit(request.query.get("limit"), DEFAULT_REJECTIONS_LIMIT)
        raw_id = request.query.get("strategy_id")
        strategy_id = check_strategy_id(raw_id) if raw_id is not None else None
        return json_response(await api.rejected(strategy_id, limit))

    page("/api/v1/signals/rejected", rejected)

    # -- live ---------------------------------------------------------------------

    async def stream(self: Any, request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        header = request.headers.get("Authorization")
        token = request.query.get("access_token")
        principal = await authn.authenticate(header, token)
        if request.method == "HEAD":  # Faust maps HEAD to GET; a HEAD must not stream
            return aiohttp_web.Response(content_type="text/event-stream", headers=API_HEADERS)

        async def still_allowed() -> bool:
            try:
                await authn.authenticate(header, token)
            except ApiError:
                return False
            return True

        log.info("stream_opened", username=principal.username)
        return await serve_events(
            request,
            snapshot=api.live_update,
            waiter=services.waiter_factory(),
            closing=services.closing,
            should_stop=services.should_stop,
            still_allowed=still_allowed,
        )

    page(STREAM_PATH, stream)

    # -- documents and the dashboard ----------------------------------------------

    document = json.dumps(
        openapi_document(
            faust_router=bool(app.conf.web_router_enabled),
            faust_tables=bool(app.conf.web_tables_enabled),
        )
    )

    async def openapi(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.Response(
            text=document, content_type="application/json", headers=API_HEADERS
        )

    page("/api/v1/openapi.json", openapi)

    dashboard_html = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")

    async def dashboard(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.Response(
            text=dashboard_html, content_type="text/html", headers=PAGE_HEADERS
        )

    # Faust registers its production index at "/" later, when the server starts; aiohttp
    # resolves a path to its first registration, which is this page.
    page("/", dashboard, name="dashboard_root")
    page("/dashboard", dashboard, name="dashboard")

    async def static(
        self: Any, request: aiohttp_web.Request, filename: str
    ) -> aiohttp_web.Response:
        body, content_type = static_file(filename)
        return aiohttp_web.Response(body=body, content_type=content_type, headers=PAGE_HEADERS)

    page("/static/{filename}", static)

    register_zerodha_views(ctx, services)
