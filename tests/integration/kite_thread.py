"""The local Kite server on a loop of its own in a background thread.

Tests whose own thread runs ``asyncio.run`` (the CLI) or blocks (stage subprocesses,
``wait_for``) need the server to keep serving meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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
