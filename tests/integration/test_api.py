"""The read API against a real portfolio-manager worker (broker, PostgreSQL, Redis).

State is seeded by producing fills, ticks and a rejection to the pipeline topics; every
number asserted below is computed by hand from those records (see EXPECTED).

One worker serves most assertions (a start costs ~5 s); a second one, pointed at a dead
Redis, must serve the same numbers from its tables.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import (
    PLACEHOLDER_JWT_SECRET,
    AuthSettings,
    RedisSettings,
    Stage,
    load_settings,
)
from alpha_panda.topics import MARKET_TICKS, ORDERS_FILLED_PAPER, SIGNALS_REJECTED
from models.envelope import new_event_id
from models.events import (
    RejectionReason,
    Side,
)
from tests.factories import RELIANCE, T0, TCS, fill, rejection, signal, tick
from tests.integration.harness import Deployment, StageProcess, produce, wait_for
from tests.unit.web.test_api import EXPECTED_MOM, MOM_FILLS
from web.auth import issue_token
from web.summary import equity_summary

pytestmark = pytest.mark.integration

SECRET = "integration-test-secret-" + "z" * 40
PASSWORD = "correct horse battery"
MAX_FAILURES = 3
DEAD_REDIS = "redis://127.0.0.1:1/0"

# mom: the read API's worked example (MOM_FILLS, EXPECTED_MOM; computed by hand in
#   tests/unit/web/test_api.py), marked at 2901.35.
# meanrev: BUY 4 TCS @ 3900 (fees 5.00): cash 984,395.00; marked at 3912.50: value
#   15,650.00, unrealised +50.00, equity 1,000,045.00, net 45.00.
EXPECTED = {
    "meanrev": {
        "strategy_id": "meanrev",
        "cash": "984395.00",
        "equity": "1000045.00",
        "market_value": "15650.00",
        "realised_pnl": "0.00",
        "unrealised_pnl": "50.00",
        "net_pnl": "45.00",
        "fees_paid": "5.00",
        "trade_count": 1,
        "starting_cash": "1000000.00",
        "positions_count": 1,
    },
    "mom": EXPECTED_MOM,
}


FILLS = [
    *MOM_FILLS,
    fill("mr-4", Side.BUY, 4, "3900.00", "5.00", strategy_id="meanrev", token=TCS, second=4),
]


def tick_record(token: int, price: str, second: int) -> Any:
    t = tick(price, second, token, volume=100 + second)
    return MARKET_TICKS.record(t, event_id=new_event_id(), ts=t.exchange_ts, source="test")


def seed_records() -> list[Any]:
    records = [
        ORDERS_FILLED_PAPER.record(f, event_id=f"ev-{f.fill_id}", ts=f.filled_ts, source="test")
        for f in FILLS
    ]
    records += [tick_record(RELIANCE, "2901.35", 10), tick_record(TCS, "3912.50", 10)]
    rejected = rejection(
        signal(quantity=5000, price="2901.35", strategy_id="mom", ts=T0 + timedelta(seconds=11)),
        RejectionReason.MAX_ORDER_QUANTITY,
        "quantity 5000 exceeds max_order_quantity 1000",
        signal_event_id="signal-big",
        rejected_by="risk-manager",
    )
    records.append(
        SIGNALS_REJECTED.record(rejected, event_id="rej-1", ts=rejected.rejected_ts, source="test")
    )
    return records


# -- HTTP ------------------------------------------------------------------------------


def call(
    port: int,
    path: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], Any]:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, raw, got = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), dict(err.headers)
    ctype = got.get("Content-Type", "")
    return status, got, json.loads(raw) if "json" in ctype else raw.decode()


def serving(port: int) -> bool:
    try:
        return call(port, "/api/v1/openapi.json")[0] == 200
    except OSError:  # not listening yet
        return False


def login(port: int, username: str, password: str = PASSWORD) -> str:
    status, _, body = call(
        port, "/api/v1/auth/login", body={"username": username, "password": password}
    )
    assert status == 200, body
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


def summaries(port: int, token: str) -> dict[str, dict[str, Any]]:
    status, _, body = call(port, "/api/v1/portfolios", token=token)
    assert status == 200, body
    return {row["strategy_id"]: row for row in body["portfolios"]}


def numbers(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in EXPECTED["mom"]}


def wait_for_numbers(port: int, token: str, source: str, timeout: float = 30) -> None:
    def settled() -> Any:
        try:
            rows = summaries(port, token)
        except (AssertionError, OSError):
            return False
        return (
            {sid: numbers(r) for sid, r in rows.items()} == EXPECTED
            and {r["source"] for r in rows.values()} == {source}
        ) or rows

    wait_for(settled, timeout=timeout, what=f"portfolios from {source}")


class EventStream:
    """A minimal SSE client over a raw socket (urllib would buffer the stream)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        while self.file.readline() not in (b"\r\n", b""):
            pass  # headers

    def next_event(self, name: str, deadline_s: float = 15) -> Any:
        deadline = time.monotonic() + deadline_s
        event = None
        while time.monotonic() < deadline:
            line = self.file.readline().decode().strip()
            # chunked framing: size lines are hex digits, skip them
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == name:
                return json.loads(line[len("data: ") :])
        raise AssertionError(f"no {name} event within {deadline_s}s")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- setup -----------------------------------------------------------------------------


async def prepare_database(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        for name in ("alice", "bob", "carol"):
            await db.create_user(sessions, name, PASSWORD)
    finally:
        await engine.dispose()


async def change_password(url: str, username: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.set_password(db.session_factory(engine), username, PASSWORD + "-changed")
    finally:
        await engine.dispose()


async def disable(url: str, username: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.set_user_disabled(db.session_factory(engine), username, True)
    finally:
        await engine.dispose()


def seeded_deployment(
    broker: EmbeddedBroker, data_dir: Path, pg_url: str, redis_url: str
) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": broker.bootstrap})))
    asyncio.run(produce(broker.bootstrap, seed_records()))
    return Deployment(
        bootstrap=broker.bootstrap,
        data_dir=data_dir,
        database_url=pg_url,
        redis_url=redis_url,
        extra_env={
            "ALPHA_PANDA_AUTH_JWT_SECRET": SECRET,
            "ALPHA_PANDA_AUTH_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
            "ALPHA_PANDA_AUTH_LOGIN_WINDOW_S": "300",
        },
    )


def test_read_api_from_redis_and_from_the_tables(
    fresh_broker: EmbeddedBroker,
    second_broker: EmbeddedBroker,
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    asyncio.run(prepare_database(pg_url))
    deployment = seeded_deployment(fresh_broker, tmp_path / "redis", pg_url, redis_url)
    # The fallback worker gets its own broker with the same records rather than being a
    # restart of the first: the subject is reading the tables when Redis is down, not
    # changelog recovery (a restart's subject, in test_restarts.py).
    dead_redis = seeded_deployment(second_broker, tmp_path / "tables", pg_url, DEAD_REDIS)
    worker = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    fallback = StageProcess(dead_redis, Stage.PORTFOLIO_MANAGER).start()  # boots meanwhile
    try:
        worker.wait_ready(require="mirror in sync")
        port = worker.port
        token = login(port, "alice")

        # -- portfolios equal the hand computation, read from the Redis mirror ---------
        wait_for_numbers(port, token, "redis")

        status, _, detail = call(port, "/api/v1/portfolios/mom", token=token)
        assert status == 200
        assert numbers(detail) == EXPECTED["mom"] and detail["source"] == "redis"
        assert detail["positions"] == [
            {
                "instrument_token": RELIANCE,
                "symbol": "RELIANCE",
                "quantity": 9,
                "avg_price": "2903.33",
                "last_price": "2901.35",
                "priced": True,
                "market_value": "26112.15",
                "unrealised_pnl": "-17.85",
                "realised_pnl": "100.00",
            }
        ]

        status, _, fills = call(port, "/api/v1/portfolios/mom/fills?limit=2", token=token)
        assert status == 200
        assert [f["fill_id"] for f in fills["fills"]] == ["f3", "f2"]
        assert (fills["fills"][0]["fill_price"], fills["fills"][0]["fees"]) == ("2920.00", "8.00")

        status, _, equity = call(port, "/api/v1/portfolios/mom/equity", token=token)
        assert status == 200 and equity["source"] == "redis"
        assert equity["samples"][-1]["equity"] == "1000055.40"

        status, _, rejected = call(port, "/api/v1/signals/rejected?strategy_id=mom", token=token)
        assert status == 200
        assert [(r["event_id"], r["reason"]) for r in rejected["rejections"]] == [
            ("rej-1", "max_order_quantity")
        ]
        assert rejected["rejections"][0]["detail"].startswith("quantity 5000 exceeds")

        # -- the terminal summary reads the same mirror --------------------------------
        line = equity_summary(
            load_settings(
                redis=RedisSettings(
                    url=deployment.redis_url, key_prefix=deployment.redis_key_prefix
                ),
                data_dir=deployment.data_dir,
            )
        )
        assert line == "meanrev equity 1,000,045.00 (+45.00)  mom equity 1,000,055.40 (+55.40)"

        # -- refusals ------------------------------------------------------------------
        assert call(port, "/api/v1/portfolios/nope", token=token)[0] == 404
        assert call(port, "/api/v1/portfolios/nope", token=token)[2]["error"]["code"] == "not_found"
        for bad in ["limit=0", "limit=501", "limit=x"]:
            status, _, body = call(port, f"/api/v1/portfolios/mom/fills?{bad}", token=token)
            assert (status, body["error"]["code"]) == (400, "bad_request"), bad

        carol = login(port, "carol")
        asyncio.run(disable(deployment.database_url, "carol"))
        bob = login(port, "bob")
        asyncio.run(change_password(deployment.database_url, "bob"))
        iat = int(datetime.now(UTC).timestamp())
        claims = {"sub": "alice", "role": "admin", "ver": 0, "iat": iat, "exp": iat + 600}
        year_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
        auth_settings = load_settings(auth=AuthSettings(jwt_secret=SecretStr(SECRET)))
        other_key = load_settings(auth=AuthSettings(jwt_secret=SecretStr("x" * 48)))
        now = datetime.now(UTC)
        cases = {
            "missing": ({}, "unauthorized"),
            "malformed": ({"Authorization": "Bearer garbage"}, "invalid_token"),
            "bad signature": (
                {
                    "Authorization": "Bearer "
                    + issue_token(other_key, "alice", "trader", now).access_token
                },
                "invalid_token",
            ),
            "expired": (
                {
                    "Authorization": "Bearer "
                    + issue_token(
                        auth_settings, "alice", "trader", now - timedelta(days=1)
                    ).access_token
                },
                "token_expired",
            ),
            "disabled": ({"Authorization": f"Bearer {carol}"}, "invalid_token"),
            "revoked": ({"Authorization": f"Bearer {bob}"}, "invalid_token"),
            "placeholder-signed": (
                {"Authorization": "Bearer " + jwt.encode(claims, PLACEHOLDER_JWT_SECRET)},
                "invalid_token",
            ),
            "over-long-lived": (
                {"Authorization": "Bearer " + jwt.encode({**claims, "exp": year_2100}, SECRET)},
                "invalid_token",
            ),
            "oversized": (
                {"Authorization": "Bearer " + jwt.encode({**claims, "pad": "x" * 3000}, SECRET)},
                "invalid_token",
            ),
            "deleted": (
                {
                    "Authorization": "Bearer "
                    + issue_token(auth_settings, "ghost", "trader", now).access_token
                },
                "invalid_token",
            ),
        }
        for name, (headers, code) in cases.items():
            status, got, body = call(port, "/api/v1/portfolios/mom", headers=headers)
            assert status == 401, name
            assert got["WWW-Authenticate"].startswith("Bearer"), name
            assert body["error"]["code"] == code, name
        assert call(port, "/api/v1/portfolios", token=token)[0] == 200  # alice still fine

        # -- live: a tick moves unrealised P&L on the stream ---------------------------
        stream = EventStream(port, f"/api/v1/stream?access_token={token}")
        try:
            assert stream.status == 200
            first = stream.next_event("portfolios")
            assert {r["strategy_id"]: r["unrealised_pnl"] for r in first["portfolios"]} == {
                "meanrev": "50.00",
                "mom": "-17.85",
            }
            asyncio.run(produce(deployment.bootstrap, [tick_record(RELIANCE, "2911.35", 20)]))
            # (2911.35 - 2903.333...) * 9 = 72.15
            moved = stream.next_event("portfolios")
            assert {r["strategy_id"]: r["unrealised_pnl"] for r in moved["portfolios"]}[
                "mom"
            ] == "72.15"
        finally:
            stream.close()
        asyncio.run(produce(deployment.bootstrap, [tick_record(RELIANCE, "2901.35", 21)]))
        wait_for_numbers(port, token, "redis")

        # -- login throttling (last: it also blocks this client's address) -------------
        for _ in range(MAX_FAILURES):
            status, _, body = call(
                port, "/api/v1/auth/login", body={"username": "bob", "password": "wrong!!!"}
            )
            assert (status, body["error"]["code"]) == (401, "invalid_credentials")
        status, got, body = call(
            port, "/api/v1/auth/login", body={"username": "bob", "password": PASSWORD}
        )
        assert (status, body["error"]["code"]) == (429, "too_many_requests")
        assert 0 < int(got["Retry-After"]) <= 300

        status, _, metrics = call(port, "/metrics")
        assert 'route="/api/v1/portfolios/{strategy_id}"' in metrics
        assert 'route="/api/v1/auth/login",stage="portfolio-manager",status="429"' in metrics

        # -- Redis down: the other worker serves the same numbers from its tables -------
        # Its /health stays 503 (the redis check fails), so wait on the API itself.
        wait_for(
            lambda: serving(fallback.port), timeout=60, what="the fallback worker's web server"
        )
        token = login(fallback.port, "alice")
        wait_for_numbers(fallback.port, token, "tables", timeout=60)
        status, _, detail = call(fallback.port, "/api/v1/portfolios/mom", token=token)
        assert (status, detail["source"], detail["positions"][0]["unrealised_pnl"]) == (
            200,
            "tables",
            "-17.85",
        )
        status, _, fills = call(fallback.port, "/api/v1/portfolios/mom/fills", token=token)
        assert (fills["source"], len(fills["fills"])) == ("tables", 3)
        status, _, rejected = call(fallback.port, "/api/v1/signals/rejected", token=token)
        assert (rejected["source"], [r["event_id"] for r in rejected["rejections"]]) == (
            "tables",
            ["rej-1"],
        )
    finally:
        worker.stop()
        fallback.stop()
