"""The views over HTTP: the Faust app's aiohttp application served by aiohttp's test server.

No broker: the Faust app is built but never started, so these cover everything up to the
table-routed handlers (auth, parameters, error format, the stream, the pages, metrics).
The routed ones are covered against a real worker in tests/integration/test_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from alpha_panda.metrics import StageMetrics
from alpha_panda.passwords import hash_password
from alpha_panda.runtime import StageContext
from alpha_panda.settings import (
    PLACEHOLDER_JWT_SECRET,
    AuthSettings,
    Settings,
    Stage,
    load_settings,
)
from web.api import ApiServices, build_services, register_views
from web.auth import issue_token
from web.live import ChangeWaiter

from .test_api import EXPECTED_MOM, RELIANCE, model, price_entry, tables_with_mom

SECRET = "http-test-secret-" + "x" * 40


class User:
    def __init__(
        self, username: str, password_hash: str, disabled: bool = False, token_version: int = 0
    ) -> None:
        self.username = username
        self.role = "trader"
        self.disabled = disabled
        self.password_hash = password_hash
        self.token_version = token_version


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password("correct horse battery", rounds=4)


class Harness:
    def __init__(self, client: TestClient[Any, Any], ctx: StageContext, tables: dict[str, Any]):
        self.client = client
        self.ctx = ctx
        self.tables = tables
        self.settings: Settings = ctx.settings

    def token(self, username: str = "alice", at: datetime | None = None) -> str:
        issued = issue_token(self.settings, username, "trader", at or datetime.now(UTC))
        return issued.access_token

    def auth(self, username: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(username)}"}


@pytest.fixture
async def harness(password_hash: str) -> AsyncIterator[Harness]:
    settings = load_settings(
        auth=AuthSettings(jwt_secret=SecretStr(SECRET), login_max_failures=2, login_window_s=60)
    )
    app = faust.App(f"web-test-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1")
    ctx = StageContext(
        app=app,
        settings=settings,
        stage=Stage.PORTFOLIO_MANAGER,
        metrics=StageMetrics("portfolio-manager"),
    )
    users = {
        "alice": User("alice", password_hash),
        "carol": User("carol", password_hash, disabled=True),
        # Changed her password once: tokens of version 0 are revoked.
        "erin": User("erin", password_hash, token_version=1),
    }

    async def lookup(name: str) -> User | None:
        return users.get(name)

    tables = tables_with_mom()
    services: ApiServices = build_services(settings, model(tables), None, users=lookup)
    services.logins.decoy_rounds = 4
    services.waiter_factory = lambda: ChangeWaiter(None, poll_s=0.05)
    register_views(ctx, model(tables), services)
    client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))
    await client.start_server()
    try:
        yield Harness(client, ctx, tables)
    finally:
        services.closing.set()
        await client.close()


async def json_of(response: Any) -> Any:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


async def test_login_then_list_portfolios(harness: Harness) -> None:
    response = await harness.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "correct horse battery"}
    )
    assert response.status == 200
    token = await json_of(response)
    assert token["token_type"] == "bearer"
    assert response.headers["Cache-Control"] == "no-store"

    listed = await harness.client.get(
        "/api/v1/portfolios", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert listed.status == 200
    rows = (await json_of(listed))["portfolios"]
    assert [{k: r[k] for k in EXPECTED_MOM} for r in rows] == [EXPECTED_MOM]
    assert rows[0]["source"] == "tables"


async def test_every_protected_endpoint_needs_a_token(harness: Harness) -> None:
    paths = [
        "/api/v1/portfolios",
        "/api/v1/portfolios/mom",
        "/api/v1/portfolios/mom/fills",
        "/api/v1/portfolios/mom/equity",
        "/api/v1/signals/rejected",
        "/api/v1/stream",
    ]
    expired = harness.token(at=datetime.now(UTC) - timedelta(days=1))
    wrong_key = issue_token(
        load_settings(auth=AuthSettings(jwt_secret=SecretStr("another-" + "y" * 40))),
        "alice",
        "trader",
        datetime.now(UTC),
    ).access_token
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "alice", "role": "admin", "ver": 0, "iat": now, "exp": now + 600}
    placeholder_signed = jwt.encode(claims, PLACEHOLDER_JWT_SECRET, algorithm="HS256")
    year_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
    long_lived = jwt.encode({**claims, "exp": year_2100}, SECRET, algorithm="HS256")
    oversized = jwt.encode({**claims, "pad": "x" * 3000}, SECRET, algorithm="HS256")
    header, _, signature = harness.token().split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{payload}.{signature}"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    cases = {
        "missing": ({}, "unauthorized"),
        "malformed": ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
        "bad signature": ({"Authorization": f"Bearer {wrong_key}"}, "invalid_token"),
        "expired": ({"Authorization": f"Bearer {expired}"}, "token_expired"),
        "disabled": (harness.auth("carol"), "invalid_token"),
        "deleted": (harness.auth("dave"), "invalid_token"),
        "revoked": (harness.auth("erin"), "invalid_token"),
        "placeholder-signed": (bearer(placeholder_signed), "invalid_token"),
        "over-long-lived": (bearer(long_lived), "invalid_token"),
        "oversized": (bearer(oversized), "invalid_token"),
        "forged": (bearer(forged), "invalid_token"),
    }
    for path in paths:
        for name, (headers, code) in cases.items():
            response = await harness.client.get(path, headers=headers)
            assert response.status == 401, (path, name)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), (path, name)
            assert (await json_of(response))["error"]["code"] == code, (path, name)


async def test_bad_parameters_are_400_before_anything_is_read(harness: Harness) -> None:
    for path in [
        "/api/v1/signals/rejected?limit=0",
        "/api/v1/signals/rejected?limit=501",
        "/api/v1/signals/rejected?limit=ten",
        "/api/v1/signals/rejected?strategy_id=a%20b",
        "/api/v1/portfolios/mom/fills?limit=-3",
        "/api/v1/portfolios/mom/equity?limit=1.5",
        "/api/v1/portfolios/bad%20id",
    ]:
        response = await harness.client.get(path, headers=harness.auth())
        assert response.status == 400, path
        assert (await json_of(response))["error"]["code"] == "bad_request", path


async def test_rejections_endpoint(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/signals/rejected?limit=1", headers=harness.auth())
    body = await json_of(response)
    assert response.status == 200
    assert [r["event_id"] for r in body["rejections"]] == ["r2"]
    assert body["rejections"][0]["reason"] == "max_order_quantity"


async def test_login_errors_use_the_error_format(harness: Harness) -> None:
    client = harness.client
    bad = await client.post("/api/v1/auth/login", data=b"{nope")
    assert bad.status == 400
    assert set((await json_of(bad))["error"]) == {"code", "message"}

    for _ in range(2):
        wrong = await client.post(
            "/api/v1/auth/login", json={"username": "alice", "password": "wrong password!"}
        )
        assert wrong.status == 401
    throttled = await client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": "correct horse battery"}
    )
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert (await json_of(throttled))["error"]["code"] == "too_many_requests"

    wrong_method = await client.get("/api/v1/auth/login")
    assert wrong_method.status == 405


async def test_unknown_api_paths_are_json_404s(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/nope", headers=harness.auth())
    assert response.status == 404
    assert (await json_of(response))["error"]["code"] == "not_found"
    wrong_method = await harness.client.delete("/api/v1/portfolios", headers=harness.auth())
    assert wrong_method.status == 405
    assert (await json_of(wrong_method))["error"]["code"] == "method_not_allowed"


async def test_dashboard_pages_and_static_files(harness: Harness) -> None:
    for path in ["/", "/dashboard"]:
        response = await harness.client.get(path)
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        html = await response.text()
        assert 'id="login-form"' in html and "/static/dashboard.js" in html
    script = await harness.client.get("/static/dashboard.js")
    assert script.status == 200 and script.content_type == "application/javascript"
    assert "EventSource" in await script.text()
    style = await harness.client.get("/static/dashboard.css")
    assert style.status == 200 and style.content_type == "text/css"
    for name in ["dashboard.html", "..%2Fapi.py", "nope.js"]:
        missing = await harness.client.get(f"/static/{name}")
        assert missing.status == 404, name


async def test_openapi_document_is_served_without_auth(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/openapi.json")
    document = await json_of(response)
    assert document["openapi"].startswith("3.0")
    assert "/api/v1/portfolios/{strategy_id}" in document["paths"]


async def test_requests_are_counted_per_route_method_and_status(harness: Harness) -> None:
    await harness.client.get("/api/v1/portfolios/mom", headers={})
    await harness.client.get("/api/v1/portfolios/other")
    await harness.client.get("/api/v1/portfolios", headers=harness.auth())
    metrics = harness.ctx.metrics

    def count(route: str, status: str) -> float:
        value = metrics.registry.get_sample_value(
            "alpha_panda_http_requests_total",
            {"stage": "portfolio-manager", "route": route, "method": "GET", "status": status},
        )
        return value or 0.0

    assert count("/api/v1/portfolios/{strategy_id}", "401") == 2  # the pattern, not the path
    assert count("/api/v1/portfolios", "200") == 1
    seconds = metrics.registry.get_sample_value(
        "alpha_panda_http_request_seconds_count",
        {"stage": "portfolio-manager", "route": "/api/v1/portfolios", "method": "GET"},
    )
    assert seconds == 1


async def read_event(stream: Any, name: str, within_s: float = 5.0) -> Any:
    """The data of the next ``event: name`` on an SSE response."""

    async def next_event() -> Any:
        event = None
        while True:
            line = (await stream.content.readline()).decode()
            assert line, "stream ended"
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == name:
                return json.loads(line[len("data: ") :])

    return await asyncio.wait_for(next_event(), within_s)


async def test_stream_pushes_portfolios_and_changes(harness: Harness) -> None:
    stream = await harness.client.get(f"/api/v1/stream?access_token={harness.token()}")
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    first = await read_event(stream, "portfolios")
    assert first["portfolios"][0]["unrealised_pnl"] == "-17.85"

    # A new last price for the open 9 shares: (2911.35 - 2903.3333...) * 9 = 72.15
    harness.tables["last_prices"][str(RELIANCE)] = price_entry("2911.35")
    second = await read_event(stream, "portfolios")
    assert second["portfolios"][0]["unrealised_pnl"] == "72.15"
    assert second["portfolios"][0]["equity"] == "1000145.40"
    stream.close()


async def test_stream_accepts_the_header_too_and_refuses_a_bad_query_token(
    harness: Harness,
) -> None:
    ok = await harness.client.get("/api/v1/stream", headers=harness.auth())
    assert ok.status == 200
    assert (await read_event(ok, "portfolios"))["portfolios"]
    ok.close()
    refused = await harness.client.get("/api/v1/stream?access_token=abc.def.ghi")
    assert refused.status == 401
    assert (await json_of(refused))["error"]["code"] == "invalid_token"
