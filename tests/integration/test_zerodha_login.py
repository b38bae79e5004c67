"""The daily Kite login against the local Kite server: the API's callback route and the CLI.

Real parts: FakeKite on loopback (checksum checked, single-use request tokens), the
configuration database (SQLite file), the read API's aiohttp application.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import faust
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from alpha_panda import db
from alpha_panda.broker_session import load_session, next_token_expiry
from alpha_panda.cli import main
from alpha_panda.metrics import StageMetrics
from alpha_panda.runtime import StageContext
from alpha_panda.settings import (
    AuthSettings,
    DatabaseSettings,
    Settings,
    Stage,
    ZerodhaSettings,
    get_settings,
    load_settings,
)
from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import KiteRestClient
from tests.integration.kite_thread import kite_in_thread as kite_thread
from web.api import build_services, register_views
from web.auth import issue_token
from web.live import ChangeWaiter

pytestmark = pytest.mark.integration

JWT_SECRET = "login-test-secret-" + "q" * 40
API_SECRET = "fake_api_secret"


class User:
    def __init__(self, username: str, role: str) -> None:
        self.username = username
        self.role = role
        self.disabled = False
        self.password_hash = "unused"
        self.token_version = 0  # matches issue_token's default version


class Harness:
    def __init__(self, client: TestClient[Any, Any], settings: Settings, kite: FakeKite) -> None:
        self.client = client
        self.settings = settings
        self.kite = kite
        self.sessions = db.session_factory(db.create_engine(settings.database.url))

    def bearer(self, username: str) -> dict[str, str]:
        role = "admin" if username == "root" else "trader"
        token = issue_token(self.settings, username, role, datetime.now(UTC)).access_token
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeKite(port=0, tick_interval_s=None) as kite:
        settings = load_settings(
            data_dir=tmp_path,
            database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/store.db"),
            auth=AuthSettings(jwt_secret=SecretStr(JWT_SECRET)),
            zerodha=ZerodhaSettings(
                api_key=SecretStr(kite.api_key),
                api_secret=SecretStr(API_SECRET),
                root_url=kite.root_url,
                ws_url=kite.ws_url,
                login_url=kite.login_url,
            ),
        )
        engine = db.create_engine(settings.database.url)
        await db.upgrade(engine)
        await engine.dispose()
        app = faust.App(f"login-test-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1")
        ctx = StageContext(
            app=app,
            settings=settings,
            stage=Stage.PORTFOLIO_MANAGER,
            metrics=StageMetrics("portfolio-manager"),
        )
        users = {"root": User("root", "admin"), "alice": User("alice", "trader")}

        async def lookup(name: str) -> User | None:
            return users.get(name)

        from tests.unit.web.test_api import model, tables_with_mom

        services = build_services(settings, model(tables_with_mom()), None, users=lookup)
        services.waiter_factory = lambda: ChangeWaiter(None, poll_s=0.05)
        register_views(ctx, model(tables_with_mom()), services)
        client: TestClient[Any, Any] = TestClient(TestServer(app.web.web_app))
        await client.start_server()
        try:
            yield Harness(client, settings, kite)
        finally:
            services.closing.set()
            for close in services.on_close:
                await close()
            await client.close()


async def test_the_browser_flow_stores_the_token_through_the_callback(harness: Harness) -> None:
    response = await harness.client.get("/api/v1/zerodha/login-url", headers=harness.bearer("root"))
    assert response.status == 200
    url = (await response.json())["login_url"]
    query = parse_qs(urlsplit(url).query)
    state = parse_qs(query["redirect_params"][0])["state"][0]

    # What Kite's login page does: hands the browser a request token for the redirect.
    async with aiohttp.ClientSession() as http, http.get(url) as page:
        request_token = (await page.json())["data"]["request_token"]
    before = datetime.now(UTC)
    callback = await harness.client.get(
        "/api/v1/zerodha/callback",
        params={
            "action": "login",
            "type": "login",
            "status": "success",
            "request_token": request_token,
            "state": state,
        },
    )
    body_text = await callback.text()
    assert callback.status == 200, body_text
    session = (await callback.json())["session"]
    assert session["user_id"] == "FK0001" and session["valid"] is True

    stored = await load_session(harness.sessions)
    assert stored is not None
    token = stored.access_token.get_secret_value()
    assert token and token not in body_text and request_token not in body_text
    assert stored.expires_at == next_token_expiry(stored.login_time)
    assert stored.login_time >= before
    # The stored token is the one Kite issued: it works there.
    async with aiohttp.ClientSession() as http:
        kite = KiteRestClient(
            http,
            root_url=harness.kite.root_url,
            api_key=harness.kite.api_key,
            access_token=lambda: token,
        )
        assert await kite.orders() == []

    status = await harness.client.get("/api/v1/zerodha/session", headers=harness.bearer("alice"))
    status_text = await status.text()
    assert status.status == 200
    assert (await status.json())["session"]["user_id"] == "FK0001"
    assert token not in status_text and API_SECRET not in status_text

    # A request token is single use: replaying the redirect is refused with Kite's message.
    again = await harness.client.get(
        "/api/v1/zerodha/callback", params={"request_token": request_token, "state": state}
    )
    assert again.status == 400
    assert (await again.json())["error"]["code"] == "kite_refused"


async def test_the_callback_needs_a_state_or_an_admin(harness: Harness) -> None:
    request_token = harness.kite.issue_request_token()
    bare = await harness.client.get(
        "/api/v1/zerodha/callback", params={"request_token": request_token}
    )
    assert bare.status == 401
    forged = await harness.client.get(
        "/api/v1/zerodha/callback", params={"request_token": request_token, "state": "x.y.z"}
    )
    assert forged.status == 400
    assert (await forged.json())["error"]["code"] == "invalid_login"
    trader = await harness.client.get(
        "/api/v1/zerodha/callback",
        params={"request_token": request_token},
        headers=harness.bearer("alice"),
    )
    assert trader.status == 403
    assert await load_session(harness.sessions) is None
    admin = await harness.client.get(
        "/api/v1/zerodha/callback",
        params={"request_token": request_token},
        headers=harness.bearer("root"),
    )
    assert admin.status == 200, await admin.text()
    assert await load_session(harness.sessions) is not None


async def test_only_an_admin_gets_a_login_url(harness: Harness) -> None:
    assert (await harness.client.get("/api/v1/zerodha/login-url")).status == 401
    trader = await harness.client.get("/api/v1/zerodha/login-url", headers=harness.bearer("alice"))
    assert trader.status == 403


async def test_a_cancelled_login_and_a_missing_token_are_400s(harness: Harness) -> None:
    for params in (
        {"status": "cancelled", "request_token": "abc", "state": "s"},
        {"status": "success"},
    ):
        response = await harness.client.get(
            "/api/v1/zerodha/callback", params=params, headers=harness.bearer("root")
        )
        assert response.status == 400, params
        assert (await response.json())["error"]["code"] == "invalid_login"


# -- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def kite_in_thread() -> Iterator[FakeKite]:
    """FakeKite on its own loop in a thread: the CLI runs asyncio.run in the test's thread."""
    with kite_thread(tick_interval_s=None) as handle:
        yield handle.kite


@pytest.fixture
def cli(
    kite_in_thread: FakeKite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[..., tuple[int, str, str]]]:
    kite = kite_in_thread
    env = {
        # Its own data directory: the default (~/.alpha-panda) may name another pipeline's
        # database, which the store commands then refuse to leave.
        "ALPHA_PANDA_DATA_DIR": str(tmp_path),
        "ALPHA_PANDA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "ALPHA_PANDA_ZERODHA_API_KEY": kite.api_key,
        "ALPHA_PANDA_ZERODHA_API_SECRET": API_SECRET,
        "ALPHA_PANDA_ZERODHA_ROOT_URL": kite.root_url,
        "ALPHA_PANDA_ZERODHA_LOGIN_URL": kite.login_url,
        # Nothing listens here: the stages are "not running".
        "ALPHA_PANDA_WEB_STAGE_BASE_PORT": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    # As an operator would: the configuration database exists before anyone logs in.
    code, _, err = run("db", "upgrade")
    assert code == 0, err
    yield run
    get_settings.cache_clear()


def test_cli_login_from_a_pasted_redirect_url_then_status(
    cli: Callable[..., tuple[int, str, str]], kite_in_thread: FakeKite
) -> None:
    request_token = kite_in_thread.issue_request_token("AB1234")
    redirect = f"https://example.com/cb?action=login&type=login&status=success&request_token={request_token}"
    code, out, err = cli("zerodha", "login", stdin=redirect + "\n")
    assert code == 0, err
    assert f"api_key={kite_in_thread.api_key}" in out  # the login URL was printed
    assert "logged in as AB1234" in out
    assert "06:00:00+05:30" in out
    assert API_SECRET not in out + err

    code, out, err = cli("zerodha", "status", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["session"]["user_id"] == "AB1234" and report["session"]["valid"] is True
    assert report["feed"]["state"] == "not running"
    assert report["trader"]["state"] == "not running"
    stored = asyncio.run(_stored_token(os.environ["ALPHA_PANDA_DATABASE_URL"]))
    assert stored and stored not in out

    # The request token was single use: Kite refuses it, the CLI says so.
    code, out, err = cli("zerodha", "login", "--request-token", request_token)
    assert code == 1
    assert "Kite refused the login" in err and "Token is invalid or has expired" in err

    code, out, _ = cli("zerodha", "logout")
    assert code == 0 and "removed" in out
    code, out, _ = cli("zerodha", "status")
    assert "none stored" in out


def test_cli_login_refuses_bad_input_and_missing_secret(
    cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = cli("zerodha", "login", "--request-token", "https://x/cb?status=cancelled")
    assert code == 2 and "cancelled" in err
    monkeypatch.setenv("ALPHA_PANDA_ZERODHA_API_SECRET", "")
    code, _, err = cli("zerodha", "login", "--request-token", "abc")
    assert code == 2 and "ALPHA_PANDA_ZERODHA_API_SECRET" in err


async def _stored_token(url: str) -> str | None:
    engine = db.create_engine(url)
    try:
        record = await load_session(db.session_factory(engine))
    finally:
        await engine.dispose()
    return record.access_token.get_secret_value() if record else None
