"""The read API's Kite login routes (served by the portfolio-manager worker).

- ``GET /api/v1/zerodha/login-url`` (admin bearer): Kite's login URL carrying a signed,
  15-minute ``state`` in ``redirect_params``.
- ``GET /api/v1/zerodha/callback``: the app's registered redirect URL. Kite sends the
  browser here with ``request_token`` and our ``state``; a valid state (or an admin bearer
  token) lets it exchange the request token and store the access token.
- ``GET /api/v1/zerodha/session`` (bearer): who is logged in and until when.

No response ever carries the access token, the request token or the api_secret.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web as aiohttp_web

from alpha_panda import db
from alpha_panda.broker_session import load_session
from alpha_panda.kite_login import (
    LoginInputError,
    complete_login,
    issue_state,
    login_url,
    parse_request_token,
    require_credentials,
    verify_state,
)
from alpha_panda.zerodha.errors import KiteError
from web import schemas
from web.auth import ApiError
from web.plumbing import json_response

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext
    from web.api import ApiServices

log = structlog.get_logger(__name__)

KITE_TIMEOUT_S = 15.0


class _Store:
    """The configuration database, opened on first use and closed with the web server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Any = None
        self._sessions: db.SessionFactory | None = None

    def sessions(self) -> db.SessionFactory:
        if self._sessions is None:
            self._engine = db.create_engine(self.url)
            self._sessions = db.session_factory(self._engine)
        return self._sessions

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine, self._sessions = self._engine, None, None
            await engine.dispose()


def register_zerodha_views(
    ctx: StageContext,
    services: ApiServices,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    settings = ctx.settings
    store = _Store(settings.database.url)
    services.on_close.append(store.close)

    def configured() -> None:
        try:
            require_credentials(settings, secret=True)
        except LoginInputError as exc:
            raise ApiError(409, "zerodha_not_configured", str(exc)) from None

    async def admin(request: aiohttp_web.Request) -> str:
        principal = await services.authenticator.authenticate(request.headers.get("Authorization"))
        if principal.role != "admin":
            raise ApiError(403, "forbidden", "only an admin may log the platform in to Kite")
        return principal.username

    async def login_url_view(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        username = await admin(request)
        configured()
        state = issue_state(settings, username, now())
        return json_response(
            schemas.ZerodhaLoginUrl(login_url=login_url(settings, state)).model_dump()
        )

    async def callback(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        configured()
        query = request.query
        state = query.get("state")
        try:
            if state is not None:
                started_by = verify_state(settings, state, now())
            elif request.headers.get("Authorization"):
                started_by = await admin(request)
            else:
                raise ApiError(
                    401,
                    "unauthorized",
                    "start the login from /api/v1/zerodha/login-url (the state is missing)",
                )
            if query.get("status", "success") != "success":
                raise LoginInputError(f"Kite reported the login as {query.get('status')!r}")
            request_token = parse_request_token(query.get("request_token", ""))
        except LoginInputError as exc:
            raise ApiError(400, "invalid_login", str(exc)) from None
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=KITE_TIMEOUT_S)
            ) as http:
                record = await complete_login(
                    settings, request_token, sessions=store.sessions(), http=http, now=now
                )
        except KiteError as exc:
            raise ApiError(400, "kite_refused", f"Kite refused the login: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Kite is a dependency, not this server: a 424, never a 5xx of ours.
            raise ApiError(
                424, "kite_unavailable", f"cannot reach Kite: {type(exc).__name__}"
            ) from None
        log.info("zerodha_login_completed", user_id=record.user_id, started_by=started_by)
        body = schemas.ZerodhaLoggedIn(
            session=schemas.KiteSession.model_validate(record.public(now()))
        )
        return json_response(body.model_dump())

    async def session_view(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        await services.authenticator.authenticate(request.headers.get("Authorization"))
        try:
            record = await load_session(store.sessions())
        except Exception as exc:
            log.warning("zerodha_session_read_failed", error=type(exc).__name__)
            raise ApiError(
                503,
                "store_unavailable",
                "the configuration database is unavailable",
                {"Retry-After": "2"},
            ) from None
        session = record.public(now()) if record is not None else None
        body = schemas.ZerodhaSession.model_validate(
            {"configured": settings.zerodha.configured, "session": session}
        )
        return json_response(body.model_dump())

    ctx.app.page("/api/v1/zerodha/login-url")(login_url_view)
    ctx.app.page("/api/v1/zerodha/callback")(callback)
    ctx.app.page("/api/v1/zerodha/session")(session_view)
