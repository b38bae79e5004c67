"""Auth routes: ``POST /api/v1/auth/login``, and the user store the authenticator reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web as aiohttp_web

from web.auth import UserLike
from web.plumbing import client_address, json_response

if TYPE_CHECKING:
    from web.api import ApiServices


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


def register_auth_views(app: Any, services: ApiServices) -> None:
    from faust.web import View

    class Login(View):  # type: ignore[misc]  # faust is untyped
        async def post(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
            issued = await services.logins.login(await request.read(), client_address(request))
            return json_response(issued.as_json())

    app.page("/api/v1/auth/login")(Login)
