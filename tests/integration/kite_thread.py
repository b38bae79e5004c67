"""The local Kite server on a loop of its own in a background thread.

Tests whose own thread runs ``asyncio.run`` (the CLI) or blocks (stage subprocesses,
``wait_for``) need the server to keep serving meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from alpha_panda import db
from alpha_panda.broker_session import store_session
from alpha_panda.zerodha.fake_server import FakeKite

T = TypeVar("T")


class KiteThread:
    def __init__(self, kite: FakeKite, loop: asyncio.AbstractEventLoop) -> None:
        self.kite = kite
        self.loop = loop

    def call(self, coro: Awaitable[T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's loop (its controls are not thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def sync(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return self.call(run())


@contextmanager
def kite_in_thread(**kwargs: Any) -> Iterator[KiteThread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    kite = FakeKite(port=0, **kwargs)
    handle = KiteThread(kite, loop)
    handle.call(kite.start())
    try:
        yield handle
    finally:
        handle.call(kite.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def zerodha_env(kite: KiteThread, *, poll_s: float = 0.3) -> dict[str, str]:
    """The environment of stage workers that trade at (and read tokens for) this local Kite."""
    return {
        # These tests run on the embedded broker: live orders there need the opt-in
        # (a crash would roll its log back; Kite here is the local fake).
        "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER": "true",
        "ALPHA_PANDA_ZERODHA_API_KEY": kite.kite.api_key,
        "ALPHA_PANDA_ZERODHA_API_SECRET": kite.kite.api_secret,
        "ALPHA_PANDA_ZERODHA_ROOT_URL": kite.kite.root_url,
        "ALPHA_PANDA_ZERODHA_WS_URL": kite.kite.ws_url,
        "ALPHA_PANDA_ZERODHA_TOKEN_POLL_S": str(poll_s),
        "ALPHA_PANDA_ZERODHA_ORDER_POLL_S": str(poll_s),
        "ALPHA_PANDA_REDIS_ENABLED": "false",
    }


async def store_fake_login(sessions: db.SessionFactory, token: str) -> None:
    """The local Kite's own user (``FakeKite.issue_token``'s default), logged in with ``token``."""
    await store_session(
        sessions,
        user_id="FK0001",
        user_name="Fake User",
        access_token=token,
        login_time=datetime.now(UTC),
    )
