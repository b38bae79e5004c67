"""Forwarding a single-portfolio request to the worker that owns it (web/routing.py)."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aiohttp_web
from aiohttp.test_utils import TestServer, make_mocked_request
from yarl import URL

from web.routing import ROUTED_HEADER, OwnerUnreachableError, forward


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_owner_answer_comes_back_as_it_came_with_only_the_token_passed() -> None:
    seen: list[dict[str, Any]] = []

    async def owner(request: aiohttp_web.Request) -> aiohttp_web.Response:
        seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        return aiohttp_web.json_response(
            {"error": {"code": "service_unavailable"}}, status=503, headers={"Retry-After": "2"}
        )

    app = aiohttp_web.Application()
    app.router.add_get("/api/v1/portfolios/{sid}/fills", owner)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        request = make_mocked_request(
            "GET",
            "/api/v1/portfolios/mom/fills?limit=5",
            headers={"Authorization": "Bearer t0ken", "Cookie": "not-for-the-owner"},
        )
        async with aiohttp.ClientSession() as session:
            response = await forward(session, URL(f"http://127.0.0.1:{server.port}"), request)
    finally:
        await server.close()
    assert response.status == 503
    assert response.headers["Retry-After"] == "2"
    assert response.content_type == "application/json"
    assert b"service_unavailable" in response.body  # type: ignore[operator]
    [call] = seen
    assert call["path"] == "/api/v1/portfolios/mom/fills?limit=5"
    assert call["headers"]["Authorization"] == "Bearer t0ken"
    assert call["headers"][ROUTED_HEADER] == "1"
    assert "Cookie" not in call["headers"]


async def test_an_owner_that_does_not_answer_is_a_typed_error() -> None:
    request = make_mocked_request("GET", "/api/v1/portfolios/mom")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(OwnerUnreachableError, match="Connect"):
            await forward(session, URL(f"http://127.0.0.1:{free_port()}"), request)
