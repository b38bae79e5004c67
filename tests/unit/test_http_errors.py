"""Every stage's web port answers errors in JSON, aiohttp's own parse errors included, and
never logs a raw request line or header (a bearer token must not reach a log).

The stage app is built by the real factory and served by its real (swapped) runner on a
loopback socket; requests are written raw, because a client library would refuse to send
an 8 KB header or a broken request line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import unused_port
from aiohttp.web_runner import TCPSite

from alpha_panda.factory import create_app
from alpha_panda.settings import Stage, load_settings
from alpha_panda.workarounds.aiohttp_handler import HandlerSwapAppRunner

TOKEN_MARKER = "eyJTOKENMARKERxq7"


class Served:
    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = port

    async def raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        return status, headers, body


@pytest.fixture(params=[Stage.RISK_MANAGER, Stage.PORTFOLIO_MANAGER])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    app = create_app(load_settings(data_dir=tmp_path), request.param)
    web = app.web
    web.blueprints.apply(web)  # what Faust does when its web server starts
    runner = web._runner
    assert isinstance(runner, HandlerSwapAppRunner)
    await runner.setup()
    port = unused_port()
    site = TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Served(app, port)
    finally:
        await runner.cleanup()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected
    assert headers["content-type"].startswith("application/json"), body
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    return str(error["code"])


async def test_an_oversized_header_gets_json_and_its_bytes_reach_no_log(
    served: Served, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TOKEN_MARKER + "A" * 9000
    status, headers, body = await served.raw(
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + f"Authorization: Bearer {token}\r\n\r\n".encode()
    )

    assert assert_json_error(status, headers, body, 400) == "bad_request"
    assert "too long" in json.loads(body)["error"]["message"]
    assert TOKEN_MARKER not in body.decode()
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "http_protocol_error" in logged  # the event is logged, just not the bytes
    assert TOKEN_MARKER not in logged


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: "
        + TOKEN_MARKER.encode()
        + b"\r\n\r\n",
        b"GET /" + b"a" * 9000 + b"?access_token=" + TOKEN_MARKER.encode() + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["not-http", "bad-header-name", "long-request-line"],
)
async def test_unparseable_requests_get_json_4xx_and_nothing_raw_is_logged(
    served: Served,
    request_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    status, headers, body = await served.raw(request_bytes)

    assert 400 <= status < 500
    assert_json_error(status, headers, body, status)
    out, err = capfd.readouterr()
    assert TOKEN_MARKER not in caplog.text + out + err


async def test_faust_router_views_are_off_and_unknown_paths_are_json_404(served: Served) -> None:
    routes = {r.resource.canonical for r in served.app.web.web_app.router.routes() if r.resource}
    assert not any(path.startswith("/router") for path in routes)
    assert not any(path.startswith("/table") for path in routes)

    for path in ["/router/", "/router/0/", "/router/topics", "/nope", "/table/x/y/"]:
        status, headers, body = await served.raw(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert assert_json_error(status, headers, body, 404) == "not_found", path


async def test_a_wrong_method_is_a_json_405(served: Served) -> None:
    status, headers, body = await served.raw(
        b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert assert_json_error(status, headers, body, 405) == "method_not_allowed"
