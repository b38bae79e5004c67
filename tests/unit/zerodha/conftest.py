"""The local Kite server on loopback (real aiohttp both sides), stepped by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import KiteRestClient


class FixedClock:
    """A monotonic clock the rate-limit tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def kite(mono: FixedClock) -> AsyncIterator[FakeKite]:
    # No automatic walk: each test moves the market itself with `await kite.step()`.
    async with FakeKite(tick_interval_s=None, heartbeat_interval_s=0.05, monotonic=mono) as k:
        yield k


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def token_box(kite: FakeKite) -> dict[str, str | None]:
    return {"token": kite.issue_token()}


@pytest.fixture
def client(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> KiteRestClient:
    return KiteRestClient(
        http, root_url=kite.root_url, api_key=kite.api_key, access_token=lambda: token_box["token"]
    )
