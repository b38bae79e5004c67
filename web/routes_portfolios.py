"""Portfolio routes: the list, one portfolio, its fills, its equity curve, rejected signals.

A route about one portfolio answers from the Redis mirror when it holds the portfolio,
else on the worker that owns the portfolio's key (:func:`on_owner`), so the tables
fallback reads a local table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web as aiohttp_web

from alpha_panda.ownership import Ownership
from alpha_panda.topics import Tables
from web.auth import ApiError, Principal
from web.plumbing import Handler, Page, json_response
from web.read_model import (
    DEFAULT_EQUITY_LIMIT,
    DEFAULT_FILLS_LIMIT,
    DEFAULT_REJECTIONS_LIMIT,
    ReadApi,
    check_strategy_id,
    parse_limit,
)
from web.routing import ROUTED_HEADER, OwnerUnreachableError, forward

if TYPE_CHECKING:
    from web.api import ApiServices

log = structlog.get_logger(__name__)

Guard = Callable[[aiohttp_web.Request], Awaitable[Principal]]
OnOwner = Callable[[str, Handler], Handler]
# ReadApi.fills / ReadApi.equity: (strategy_id, limit) -> the response body
Read = Callable[[str, int], Awaitable[dict[str, Any]]]


def owner_router(app: Any, api: ReadApi) -> Callable[[str, Handler], Handler]:
    """``on_owner(table, handler)``: ``handler`` answered from the Redis mirror when it holds
    the portfolio, else run on the worker that owns the ``strategy_id`` key of ``table``.

    Not Faust's ``@app.table_route``: it hashes the JSON-serialized key and picks the
    wrong worker for most keys (alpha_panda/ownership.py).
    """
    ownership = Ownership(app)
    rebalancing = ApiError(
        503,
        "service_unavailable",
        "the worker owning this portfolio is not known yet (rebalancing); retry",
        {"Retry-After": "2"},
    )

    def on_owner(table: str, handler: Handler) -> Handler:
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

    return on_owner


def register_portfolio_views(app: Any, services: ApiServices, page: Page) -> None:
    api = services.api
    authn = services.authenticator
    on_owner = owner_router(app, api)

    async def guard(request: aiohttp_web.Request) -> Principal:
        return await authn.authenticate(request.headers.get("Authorization"))

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

    page("/api/v1/portfolios", portfolios)
    page("/api/v1/portfolios/{strategy_id}", portfolio)
    limited = limited_view(guard, on_owner)
    fills = limited(Tables.RECENT_FILLS, DEFAULT_FILLS_LIMIT, api.fills)
    page("/api/v1/portfolios/{strategy_id}/fills", fills)
    equity = limited(Tables.PORTFOLIOS, DEFAULT_EQUITY_LIMIT, api.equity)
    page("/api/v1/portfolios/{strategy_id}/equity", equity)
    register_rejection_views(services, page, guard)


def limited_view(guard: Guard, on_owner: OnOwner) -> Callable[[str, int, Read], Handler]:
    """``limited(table, default_limit, read)``: the view of a list about one portfolio
    (its fills, its equity curve), run on the worker that owns its key in ``table``."""

    def limited(table: str, default_limit: int, read: Read) -> Handler:
        async def here(
            self: Any, request: aiohttp_web.Request, strategy_id: str
        ) -> aiohttp_web.Response:
            limit = parse_limit(request.query.get("limit"), default_limit)
            return json_response(await read(strategy_id, limit))

        routed = on_owner(table, here)

        async def view(
            self: Any, request: aiohttp_web.Request, strategy_id: str
        ) -> aiohttp_web.StreamResponse:
            await guard(request)
            parse_limit(request.query.get("limit"), default_limit)  # a 400 before routing
            return await routed(self, request, check_strategy_id(strategy_id))

        return view

    return limited


def register_rejection_views(services: ApiServices, page: Page, guard: Guard) -> None:
    api = services.api

    async def rejected(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        await guard(request)
        limit = parse_limit(request.query.get("limit"), DEFAULT_REJECTIONS_LIMIT)
        raw_id = request.query.get("strategy_id")
        strategy_id = check_strategy_id(raw_id) if raw_id is not None else None
        return json_response(await api.rejected(strategy_id, limit))

    page("/api/v1/signals/rejected", rejected)
