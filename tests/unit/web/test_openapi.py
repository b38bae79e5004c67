"""The OpenAPI document against the routes the portfolio-manager worker really registers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_urldispatcher import StaticResource

from alpha_panda.factory import create_app
from alpha_panda.settings import Stage, load_settings
from web.openapi import documented_operations, openapi_document


def registered_operations(app: Any) -> set[tuple[str, str]]:
    web = app.web
    # Faust adds its blueprints (/router, /table, its "/" index) when the server starts.
    web.blueprints.apply(web)
    return {
        (route.method, documented_path(route.resource))
        for route in web.web_app.router.routes()
        # aiohttp answers HEAD for every GET view; OpenAPI leaves HEAD implicit.
        if route.method != "HEAD" and route.resource is not None
    }


def documented_path(resource: Any) -> str:
    """A route's path as OpenAPI writes it: aiohttp's static route serves every file under
    its prefix, which the document spells ``{prefix}/{filename}``."""
    if isinstance(resource, StaticResource):
        return f"{resource.canonical}/{{filename}}"
    return str(resource.canonical)


async def served_document(app: Any) -> dict[str, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    try:
        response = await client.get("/api/v1/openapi.json")
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document
    finally:
        await client.close()


@pytest.mark.parametrize("tables_enabled", [True, False])
async def test_every_route_is_documented_and_every_documented_route_exists(
    tmp_path: Path, tables_enabled: bool
) -> None:
    app = create_app(
        load_settings(data_dir=tmp_path),
        Stage.PORTFOLIO_MANAGER,
        web_tables_enabled=tables_enabled,
    )
    routes = registered_operations(app)
    document = await served_document(app)
    documented = documented_operations(document)

    assert routes - documented == set(), "registered but not documented"
    assert documented - routes == set(), "documented but not registered"
    assert ("GET", "/api/v1/portfolios/{strategy_id}") in routes  # the API is really there
    assert (("GET", "/table/{name}/{key}/") in routes) is tables_enabled


def test_document_is_internally_consistent() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    text = repr(document)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas, ref
    for path, item in document["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, (method, path)
            assert operation["responses"], (method, path)
            protected = path.startswith(
                (
                    "/api/v1/portfolios",
                    "/api/v1/signals",
                    "/api/v1/stream",
                    "/api/v1/zerodha/login-url",
                    "/api/v1/zerodha/session",
                )
            )
            assert bool(operation["security"]) is protected, (method, path)
            if protected:
                assert "401" in operation["responses"], (method, path)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


def test_error_schema_is_the_api_error_format() -> None:
    error = openapi_document()["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]


async def test_the_dashboard_not_fausts_index_answers_at_root(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path), Stage.PORTFOLIO_MANAGER)
    roots = [r for r in registered_operations(app) if r == ("GET", "/")]
    assert roots  # Faust's production index is registered at "/" as well
    client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    try:
        response = await client.get("/")
        assert response.status == 200
        assert response.content_type == "text/html"
        assert 'id="login-form"' in await response.text()
    finally:
        await client.close()
