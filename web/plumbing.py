"""HTTP plumbing of the read API: JSON responses and headers, the middleware (metrics per
route, the JSON error format, no HTML 500 pages), the client address."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web as aiohttp_web

from alpha_panda.http_errors import JSON_HEADERS, route_label
from web.auth import ApiError, error_body

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext

log = structlog.get_logger(__name__)

Handler = Callable[..., Awaitable[aiohttp_web.StreamResponse]]
# Registers a handler at a path on the stage's Faust web server (see web/api.py).
Page = Callable[..., None]

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
        headers={**JSON_HEADERS, **(headers or {})},
    )


def error_response(error: ApiError) -> aiohttp_web.Response:
    return json_response(error.body(), error.status, error.headers)


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
