"""JSON errors on every stage's web port, including the ones aiohttp makes itself.

Part of the stage runtime (the factory installs it on every stage, as /health), so it
imports nothing of web/; the read API's plumbing (web/plumbing.py) takes its headers and
route label from here.

Two layers, both installed on every stage by :func:`install_json_errors`:

- :func:`json_error_middleware`, outermost: an ``HTTPException`` (404, 405, ...) raised by
  routing or by a view becomes ``{"error": {"code", "message"}}``, and an exception that
  escapes a view becomes a JSON 500 logged with its route pattern only. The portfolio
  manager's own middleware (``web/api.py``) sits inside it and already answers for
  ``/api/``; this one covers the pages, ``/health`` and every other stage.
- A request aiohttp cannot parse (a header over its 8,190-byte limit, a malformed request
  line, a bad method) never reaches any middleware: aiohttp's ``RequestHandler``
  answers it with plain text and logs the exception, whose message quotes the first
  ~100 bytes of the offending line, which for an oversized ``Authorization`` header is
  the bearer token. :class:`JsonErrorRequestHandler` answers JSON instead and logs only
  the status, the exception's type and the peer address.

aiohttp has no hook for its parse errors, so the handler class is swapped in by
:mod:`alpha_panda.workarounds.aiohttp_handler` (the defect, the versions checked and the
test that proves it is still needed are written there).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from alpha_panda.workarounds.aiohttp_handler import install_request_handler

log = structlog.get_logger(__name__)

JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    500: "internal_error",
}


def error_json(status: int, code: str, message: str) -> aiohttp_web.Response:
    return aiohttp_web.Response(
        status=status,
        text=json.dumps({"error": {"code": code, "message": message}}),
        content_type="application/json",
        headers=JSON_HEADERS,
    )


def route_label(request: aiohttp_web.Request) -> str:
    """The route pattern (``/api/v1/portfolios/{strategy_id}``), never the raw path."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@aiohttp_web.middleware
async def json_error_middleware(
    request: aiohttp_web.Request,
    handler: Callable[[aiohttp_web.Request], Awaitable[aiohttp_web.StreamResponse]],
) -> aiohttp_web.StreamResponse:
    try:
        return await handler(request)
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like stay what they are
        code = _CODES.get(exc.status, "http_error")
        response = error_json(exc.status, code, exc.reason or code)
        allow = exc.headers.get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # The route pattern, never the raw path or headers: either may carry a token.
        log.error("http_view_failed", route=route_label(request), error=type(exc).__name__)
        return error_json(500, "internal_error", "internal server error")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's per-connection handler, answering its own errors in JSON."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> aiohttp_web.StreamResponse:
        # Never the exception's text: aiohttp quotes the raw offending bytes in it.
        log.warning(
            "http_protocol_error",
            status=status,
            error=type(exc).__name__ if exc is not None else None,
            remote=request.remote,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, LineTooLong):
            code, text = "bad_request", "the request line or a header field is too long"
        elif isinstance(exc, BadHttpMessage) or 400 <= status < 500:
            code, text = "bad_request", "malformed HTTP request"
        else:
            code = _CODES.get(status, "http_error")
            try:
                text = HTTPStatus(status).phrase
            except ValueError:
                text = code
        response = error_json(status, code, text)
        response.force_close()
        return response


def install_json_errors(app: Any) -> None:
    """Both layers on the Faust ``app``'s web server; call before the worker starts."""
    web = app.web
    web.web_app.middlewares.insert(0, json_error_middleware)
    install_request_handler(app, JsonErrorRequestHandler)
