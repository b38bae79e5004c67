"""Documents and the dashboard: the OpenAPI document, the dashboard page, its static files
(served by aiohttp's static route)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web as aiohttp_web

from alpha_panda.http_errors import JSON_HEADERS
from web.openapi import openapi_document
from web.plumbing import PAGE_HEADERS, Handler, Page

STATIC_DIR = Path(__file__).with_name("static")
PAGES_DIR = Path(__file__).with_name("pages")
STATIC_PREFIX = "/static"
# The files under static/, all of which aiohttp's static route serves (the dashboard page
# itself lives in pages/), with their content types: set here, not guessed from the
# platform's mime.types, which maps .js differently from one system to the next.
STATIC_FILES = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}


@aiohttp_web.middleware
async def only_static_files(request: aiohttp_web.Request, handler: Handler) -> Any:
    """A JSON 404 for any name under the prefix but the listed files: aiohttp's static
    route answers a missing file with an empty 404 of its own and a directory with a 403,
    both past the middlewares that write errors as JSON."""
    prefix = f"{STATIC_PREFIX}/"
    if request.path.startswith(prefix) and request.path[len(prefix) :] not in STATIC_FILES:
        raise aiohttp_web.HTTPNotFound()
    return await handler(request)


async def static_headers(
    request: aiohttp_web.Request, response: aiohttp_web.StreamResponse
) -> None:
    """The page headers and the content type on aiohttp's static responses (its
    ``on_response_prepare`` signal, the one place a FileResponse's headers can be set)."""
    if not request.path.startswith(f"{STATIC_PREFIX}/") or response.status != 200:
        return
    content_type = STATIC_FILES.get(request.path.rsplit("/", 1)[1])
    if content_type is not None:
        response.content_type = content_type
    response.headers.update(PAGE_HEADERS)


def register_document_views(app: Any, page: Page) -> None:
    document = json.dumps(
        openapi_document(
            faust_router=bool(app.conf.web_router_enabled),
            faust_tables=bool(app.conf.web_tables_enabled),
        )
    )

    async def openapi(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.Response(
            text=document, content_type="application/json", headers=JSON_HEADERS
        )

    page("/api/v1/openapi.json", openapi)


def register_dashboard_views(app: Any, page: Page) -> None:
    dashboard_html = (PAGES_DIR / "dashboard.html").read_text(encoding="utf-8")

    async def dashboard(self: Any, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return aiohttp_web.Response(
            text=dashboard_html, content_type="text/html", headers=PAGE_HEADERS
        )

    # Faust registers its production index at "/" later, when the server starts; aiohttp
    # resolves a path to its first registration, which is this page.
    page("/", dashboard, name="dashboard_root")
    page("/dashboard", dashboard, name="dashboard")

    web_app: aiohttp_web.Application = app.web.web_app
    web_app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static")
    web_app.middlewares.append(only_static_files)
    web_app.on_response_prepare.append(static_headers)
