"""The local Kite server's /_control/ endpoints and error answers, over real HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp

from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import KiteRestClient

INFY = 408065


async def control(
    http: aiohttp.ClientSession, kite: FakeKite, action: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{kite.root_url}/_control/{action}", json=body) as resp:
        return resp.status, await resp.json()


async def test_controls_drive_the_faults(
    kite: FakeKite, http: aiohttp.ClientSession, client: KiteRestClient
) -> None:
    assert await control(http, kite, "fail", {"count": 2, "status": 429}) == (
        200,
        {"status": "success", "data": {"pending": 2}},
    )
    status, body = await control(http, kite, "reject_next", {"message": "RMS says no"})
    assert status == 200
    status, body = await control(
        http, kite, "book", {"instrument_token": INFY, "bids": [["1.00", 5]], "asks": [["1.05", 5]]}
    )
    assert status == 200 and kite.market.mid(INFY) == Decimal("1.00")
    status, body = await control(http, kite, "walk", {"paused": True})
    assert body["data"] == {"paused": True} and kite.walk_paused
    status, body = await control(http, kite, "manual_order", {
        "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 3
    })  # fmt: skip
    order = kite.orders[body["data"]["order_id"]]
    # The pending reject applies to the next order, whoever places it.
    assert (order.status, order.status_message, order.placed_by_app) == (
        "REJECTED",
        "RMS says no",
        False,
    )
    status, body = await control(http, kite, "request_token", {})
    assert status == 200 and len(body["data"]["request_token"]) == 32
    async with http.get(f"{kite.root_url}/_control/state") as resp:
        state = (await resp.json())["data"]
    assert state["orders"] == 1 and state["walk_paused"] is True
    status, body = await control(http, kite, "expire_token", {})
    assert body["data"] == {"expired": 1}


async def test_bad_control_requests_are_400_json(
    kite: FakeKite, http: aiohttp.ClientSession
) -> None:
    for action, body in (
        ("fail", {"count": 1, "status": 404}),
        ("fail", {}),
        ("delay", {"seconds": -1}),
        ("book", {"instrument_token": 1}),
    ):
        status, payload = await control(http, kite, action, body)
        assert status == 400, (action, payload)
        assert payload["status"] == "error" and payload["error_type"] == "InputException"
    async with http.post(f"{kite.root_url}/_control/fail", data=b"{not json") as resp:
        assert resp.status == 400
    status, payload = await control(http, kite, "nope", {})
    assert status == 404 and payload["error_type"] == "InputException"


async def test_unknown_routes_and_missing_version_are_json_errors(
    kite: FakeKite, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{kite.root_url}/nothing/here") as resp:
        assert resp.status == 404
        assert (await resp.json())["status"] == "error"
    async with http.get(f"{kite.root_url}/orders") as resp:
        assert resp.status == 400
        assert "X-Kite-Version" in (await resp.json())["message"]
    async with http.get(
        f"{kite.root_url}/orders", headers={"X-Kite-Version": "3", "Authorization": "token x:y"}
    ) as resp:
        assert resp.status == 403
        assert (await resp.json())["error_type"] == "TokenException"


async def test_login_redirects_to_the_registered_url(http: aiohttp.ClientSession) -> None:
    async with FakeKite(tick_interval_s=None, redirect_url="http://127.0.0.1:1/cb") as kite:
        async with http.get(
            kite.login_url, params={"v": "3", "api_key": kite.api_key}, allow_redirects=False
        ) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
        assert location.startswith("http://127.0.0.1:1/cb?action=login")
        assert "status=success" in location and "request_token=" in location
        async with http.get(kite.login_url, params={"api_key": "other"}) as resp:
            assert resp.status == 400


async def test_hostile_inputs_get_4xx_never_5xx(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    headers = {"X-Kite-Version": "3", "Authorization": f"token {kite.api_key}:{token_box['token']}"}
    base = {
        "tradingsymbol": "INFY",
        "exchange": "NSE",
        "transaction_type": "BUY",
        "quantity": "1",
        "product": "MIS",
        "order_type": "LIMIT",
        "price": "1500",
    }
    bad_forms = [
        {"price": "NaN"},
        {"price": "1e999999999"},
        {"price": "-5"},
        {"price": "abc"},
        {"quantity": "1.5"},
        {"quantity": "99999999999999999999999"},
        {"order_type": "SL", "trigger_price": "Infinity"},
        {"order_type": "MARKET", "price": "", "market_protection": "1e999999"},
        {"tag": "x" * 21},
        {"validity": "GTC"},
        {"exchange": "MCX"},
    ]
    for change in bad_forms:
        async with http.post(
            f"{kite.root_url}/orders/regular", data={**base, **change}, headers=headers
        ) as resp:
            assert 400 <= resp.status < 500, (change, resp.status, await resp.text())
    for path in (
        "/instruments/historical/abc/minute?from=2026-11-27+09:15:00&to=2026-11-27+09:20:00",
        "/instruments/historical/408065/minute?from=2026-13-45&to=2026-11-27+09:20:00",
        "/instruments/historical/408065/minute?from=2026-11-27+09:20:00&to=2026-11-27+09:15:00",
        "/instruments/historical/408065/minute?from=2000-01-01+00:00:00&to=2026-01-01+00:00:00",
        "/instruments/historical/408065/day",
        "/orders/%00/trades",
    ):
        async with http.get(f"{kite.root_url}{path}", headers=headers) as resp:
            assert 400 <= resp.status < 500, (path, resp.status, await resp.text())
    for body in (
        {"instrument_token": INFY, "bids": [["abc", 1]]},
        {"instrument_token": INFY, "bids": [["1.00", -1]]},
        {"instrument_token": INFY, "asks": [["1.00"]]},
        {"count": "many"},
    ):
        action = "fail" if "count" in body else "book"
        status, _ = await control(http, kite, action, body)
        assert status == 400, body
    assert kite.orders == {}
