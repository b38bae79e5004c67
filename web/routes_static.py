"""Documents and the dashboard: the OpenAPI document, the dashboard page, its static files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web as aiohttp_web

from web.auth import ApiError
from web.openapi import openapi_document
from web.plumbing import API_HEADERS, PAGE_HEADERS, Page

STATIC_DIR = Path(__file__).with_name("static")
# Files the dashboard page loads; nothing else under static/ is served.
STATIC_FILES = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}


def static_file(name: str) -> tuple[bytes, str]:
    content_type = STATIC_FILES.get(name)
    if content_type is None:
        raise ApiError(404, "not_found", "no such file")
    return (STATIC_DIR / name).read_bytes(), content_type


def register_document_views(app: Any, page: Page) -> None:
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


def register_dashboard_views(page: Page) -> None:
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
