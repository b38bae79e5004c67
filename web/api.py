"""The read API of the portfolio manager: wiring of the routes to the stage's web server.

The modules, from the outside in:

- :func:`register_api` (here) wires everything to the Faust web server of the
  portfolio-manager worker (called from ``agents/portfolio_manager.py``); the routes live
  by concern in ``web/routes_auth.py`` (login), ``web/routes_portfolios.py`` (portfolios,
  fills, equity, rejected signals), ``web/routes_live.py`` (the event stream),
  ``web/routes_static.py`` (the OpenAPI document, the dashboard and its files) and
  ``web/zerodha.py`` (the broker session).
- The views are thin: authenticate, parse parameters, call :class:`ReadApi`, render JSON.
- ``web/read_model.py``: :class:`ReadApi` turns stored state into response bodies and
  :class:`PortfolioReader` fetches it, from the Redis mirror or the worker's Faust tables.
- ``web/plumbing.py``: JSON responses, headers, the metrics/error middleware.

Money leaves as strings of decimals quantised to paise; quantities are integers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web as aiohttp_web

from alpha_panda.mirror import RedisMirror
from alpha_panda.ownership import Ownership
from alpha_panda.topics import Tables
from alpha_panda.workarounds.recovery import HardenedRecovery
from web.auth import ApiError, Authenticator, LoginService, LoginThrottle, UserLookup
from web.formatting import money, parse_prices
from web.live import ChangeWaiter, redis_subscriber
from web.plumbing import Handler, http_middleware, json_response
from web.read_model import (
    PortfolioReader,
    ReadApi,
    ReadModel,
    check_strategy_id,
    merge_rejections,
    parse_limit,
)
from web.routes_auth import DatabaseUsers, register_auth_views
from web.routes_live import register_live_views
from web.routes_portfolios import register_portfolio_views
from web.routes_static import register_dashboard_views, register_document_views
from web.zerodha import register_zerodha_views

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext
    from alpha_panda.settings import Settings

# Re-exported for callers and tests that import them from here.
__all__ = [
    "ApiError",
    "ApiServices",
    "PortfolioReader",
    "ReadApi",
    "ReadModel",
    "build_services",
    "check_strategy_id",
    "json_response",
    "merge_rejections",
    "money",
    "parse_limit",
    "parse_prices",
    "register_api",
    "register_views",
]

log = structlog.get_logger(__name__)


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
    and after a rebalance it becomes True only seconds later (Faust's recovery delay), so
    the recovery of the latest rebalance must have completed (defect 3 in
    alpha_panda/workarounds/recovery.py); during a rebalance partitions move.
    """
    if not app.started or app.rebalancing:
        return False
    recovery = app.tables.recovery
    if isinstance(recovery, HardenedRecovery):
        return recovery.holds_assignment()
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

    # Faust is untyped, so its decorators are applied as plain calls (mypy --strict
    # refuses untyped decorators) and the results are typed here.
    def page(path: str, handler: Handler, name: str | None = None) -> None:
        app.page(path, name=name)(handler)

    register_auth_views(app, services)
    register_portfolio_views(app, services, page)
    register_live_views(services, page)
    register_document_views(app, page)
    register_dashboard_views(app, page)
    register_zerodha_views(ctx, services)
