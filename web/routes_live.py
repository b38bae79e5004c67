"""The live route: ``GET /api/v1/stream``, server-sent events of the portfolio list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web as aiohttp_web

from alpha_panda.http_errors import JSON_HEADERS
from web.auth import ApiError
from web.live import serve_events
from web.plumbing import STREAM_PATH, Page

if TYPE_CHECKING:
    from web.api import ApiServices

log = structlog.get_logger(__name__)


def register_live_views(services: ApiServices, page: Page) -> None:
    api = services.api
    authn = services.authenticator

    async def stream(self: Any, request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        header = request.headers.get("Authorization")
        token = request.query.get("access_token")
        principal = await authn.authenticate(header, token)
        if request.method == "HEAD":  # Faust maps HEAD to GET; a HEAD must not stream
            return aiohttp_web.Response(content_type="text/event-stream", headers=JSON_HEADERS)

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
