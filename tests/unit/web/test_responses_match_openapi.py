"""Real responses of every read-API route, errors included, against the served document.

The document's bodies are generated from web/schemas.py; this checks the other half: that
what the views actually send is what the document says, status by status. Each request
goes through the real aiohttp application (see test_http.py's harness), and its status
must be one the operation documents, with the documented content type and a body valid
against the documented schema (OpenAPI 3.0's ``nullable`` turned into JSON Schema).
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient, TestServer

from alpha_panda.factory import create_app
from alpha_panda.settings import Stage, load_settings

from .test_http import Harness, harness, password_hash  # noqa: F401  (fixtures)

GOOD_LOGIN = {"username": "alice", "password": "correct horse battery"}

Case = tuple[str, str, str, dict[str, Any], int]  # method, template, url, options, status


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema 2020-12: ``nullable: true`` becomes a null branch."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def check(document: dict[str, Any], method: str, template: str, status: int, body: Any) -> None:
    operation = document["paths"][template][method.lower()]
    documented = operation["responses"]
    assert str(status) in documented, f"{method} {template}: {status} is not documented"
    schema = documented[str(status)]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator(
        {
            **json_schema(schema),
            "components": json_schema(document["components"]),
        },
        validate_formats=True,
    )
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], f"{method} {template} {status}: {errors}"


def cases(h: Harness) -> list[Case]:
    auth = {"headers": h.auth()}
    portfolio = "/api/v1/portfolios/{strategy_id}"
    fills = "/api/v1/portfolios/{strategy_id}/fills"
    equity = "/api/v1/portfolios/{strategy_id}/equity"
    rejected = "/api/v1/signals/rejected"
    login = "/api/v1/auth/login"
    return [
        ("POST", login, login, {"json": GOOD_LOGIN}, 200),
        ("POST", login, login, {"data": b"{nope"}, 400),
        ("POST", login, login, {"json": {**GOOD_LOGIN, "password": "wrong"}}, 401),
        ("POST", login, login, {"data": b"x" * 100_000}, 413),
        ("GET", "/api/v1/portfolios", "/api/v1/portfolios", auth, 200),
        ("GET", "/api/v1/portfolios", "/api/v1/portfolios", {}, 401),
        ("GET", portfolio, "/api/v1/portfolios/mom", auth, 200),
        ("GET", portfolio, "/api/v1/portfolios/nobody", auth, 404),
        ("GET", portfolio, "/api/v1/portfolios/bad%20id", auth, 400),
        ("GET", portfolio, "/api/v1/portfolios/mom", {}, 401),
        ("GET", fills, "/api/v1/portfolios/mom/fills", auth, 200),
        ("GET", fills, "/api/v1/portfolios/mom/fills?limit=0", auth, 400),
        ("GET", fills, "/api/v1/portfolios/nobody/fills", auth, 404),
        ("GET", equity, "/api/v1/portfolios/mom/equity", auth, 200),
        ("GET", equity, "/api/v1/portfolios/mom/equity?limit=x", auth, 400),
        ("GET", equity, "/api/v1/portfolios/nobody/equity", auth, 404),
        ("GET", rejected, rejected, auth, 200),
        ("GET", rejected, f"{rejected}?strategy_id=mom&limit=5", auth, 200),
        ("GET", rejected, f"{rejected}?strategy_id=bad%20id", auth, 400),
        ("GET", rejected, rejected, {}, 401),
        ("GET", "/api/v1/stream", "/api/v1/stream", {}, 401),
        ("GET", "/api/v1/zerodha/login-url", "/api/v1/zerodha/login-url", {}, 401),
        ("GET", "/api/v1/zerodha/login-url", "/api/v1/zerodha/login-url", auth, 403),
        ("GET", "/api/v1/zerodha/session", "/api/v1/zerodha/session", {}, 401),
    ]


async def test_every_route_answers_as_documented(harness: Harness) -> None:  # noqa: F811
    document = await (await harness.client.get("/api/v1/openapi.json")).json()
    seen: set[tuple[str, str]] = set()
    for method, template, url, options, status in cases(harness):
        response = await harness.client.request(method, url, **options)
        assert response.status == status, (method, url, await response.text())
        assert response.content_type == "application/json", (method, url)
        check(document, method, template, status, await response.json())
        seen.add((method, template))
    # Every JSON route the view layer registers (Faust's own and the stage's /health and
    # /metrics aside, checked below or in test_openapi.py) was exercised.
    json_routes = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if path.startswith("/api/v1/")
        and any("application/json" in r.get("content", {}) for r in operation["responses"].values())
        and path not in {"/api/v1/openapi.json", "/api/v1/zerodha/callback"}
    }
    assert json_routes - seen == set()


async def test_the_rows_of_a_portfolio_with_fills_match_the_document(
    harness: Harness,  # noqa: F811
) -> None:
    """The 200 bodies above must not pass because their lists are empty."""
    auth = harness.auth()
    detail = await (await harness.client.get("/api/v1/portfolios/mom", headers=auth)).json()
    assert detail["positions"], "the seeded portfolio has positions"
    fills = await (await harness.client.get("/api/v1/portfolios/mom/fills", headers=auth)).json()
    assert fills["fills"], "the seeded portfolio has fills"
    rejected = await (await harness.client.get("/api/v1/signals/rejected", headers=auth)).json()
    assert rejected["rejections"], "the seeded tables hold rejections"


def test_a_wrong_body_fails_the_check() -> None:
    """The check can fail: a money field that is not paise, a missing field."""
    from web.openapi import openapi_document

    document = openapi_document()
    good = {
        "strategy_id": "mom",
        "source": "tables",
        "samples": [{"ts": "2026-01-05T04:00:00+00:00", "equity": "100.00"}],
    }
    check(document, "GET", "/api/v1/portfolios/{strategy_id}/equity", 200, good)
    for bad in (
        {**good, "samples": [{"ts": "2026-01-05T04:00:00+00:00", "equity": "100.0"}]},
        {k: v for k, v in good.items() if k != "source"},
    ):
        with pytest.raises(AssertionError):
            check(document, "GET", "/api/v1/portfolios/{strategy_id}/equity", 200, bad)


async def test_health_and_static_answer_as_documented(tmp_path: Any) -> None:
    """The stage's own routes on the app the factory builds (its JSON error layer
    included): /health of a worker that never started is a documented 503, and a file
    aiohttp's static route does not have a documented JSON 404."""
    app = create_app(load_settings(data_dir=tmp_path), Stage.PORTFOLIO_MANAGER)
    client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    try:
        document = await (await client.get("/api/v1/openapi.json")).json()
        response = await client.get("/health")
        assert response.status == 503
        check(document, "GET", "/health", 503, await response.json())
        for name in ["nope.js", "dashboard.html", "..%2Fapi.py"]:
            missing = await client.get(f"/static/{name}")
            assert missing.status == 404, name
            assert missing.content_type == "application/json", name
            check(document, "GET", "/static/{filename}", 404, await missing.json())
        script = await client.get("/static/dashboard.js")
        assert script.status == 200 and script.content_type == "application/javascript"
        assert "script-src 'self'" in script.headers["Content-Security-Policy"]
    finally:
        await client.close()


def test_the_zerodha_session_bodies_match_the_document() -> None:
    """The 200 bodies of the Kite session routes (the views need the configuration
    database; tests/integration/test_zerodha_login.py serves them for real): built as the
    views build them, from a stored session, valid against the document, token left out."""
    from datetime import UTC, datetime

    from pydantic import SecretStr

    from alpha_panda.broker_session import BrokerSessionRecord
    from web import schemas
    from web.openapi import openapi_document

    document = openapi_document()
    login = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)
    record = BrokerSessionRecord(
        broker="zerodha",
        user_id="AB1234",
        user_name="Alice",
        access_token=SecretStr("tok-secret"),
        login_time=login,
        expires_at=datetime(2026, 1, 6, 0, 30, tzinfo=UTC),
    )
    session = schemas.KiteSession.model_validate(record.public(login))
    logged_in = schemas.ZerodhaLoggedIn(session=session).model_dump()
    check(document, "GET", "/api/v1/zerodha/callback", 200, logged_in)
    assert "tok-secret" not in repr(logged_in)
    for stored in (session, None):
        body = schemas.ZerodhaSession(configured=True, session=stored).model_dump()
        check(document, "GET", "/api/v1/zerodha/session", 200, body)
    url = schemas.ZerodhaLoginUrl(login_url="https://kite.zerodha.com/connect/login?v=3")
    check(document, "GET", "/api/v1/zerodha/login-url", 200, url.model_dump())
