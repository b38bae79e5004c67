"""``GET /api/v1/stream``: Server-Sent Events with the portfolio summaries as they change.

The stream sends ``event: portfolios`` with the same body as ``GET /api/v1/portfolios``
whenever that body changes, and a ``: keep-alive`` comment after ``KEEPALIVE_S`` of
silence so proxies and browsers keep the connection open.

What wakes it up:

- with Redis: the mirror's pub/sub channel (one message per flush that changed
  portfolios or prices), so an idle stream costs nothing;
- without Redis (disabled, down, or its subscription broke): polling every ``POLL_S``,
  sending only on change. A broken subscription is retried every ``RESUBSCRIBE_S``.

A stream also re-checks its token (expiry, user disabled) every ``REAUTH_S`` and ends
when it no longer passes: the browser's EventSource then reconnects, gets a 401, and the
dashboard asks for a new login.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web as aiohttp_web

from web.auth import ApiError

log = structlog.get_logger(__name__)

KEEPALIVE_S = 15.0
POLL_S = 1.0
RESUBSCRIBE_S = 5.0
REAUTH_S = 15.0
# Prices move many times a second; a dashboard does not need more than this.
MIN_INTERVAL_S = 0.25
RETRY_MS = 3000


@dataclass(frozen=True)
class LiveUpdate:
    data: Any
    # True when the data came from the mirror: then its pub/sub announces every change
    # and polling is unnecessary. From the tables, changes are only seen by polling.
    from_mirror: bool


class Subscription(Protocol):
    async def next_message(self, wait_s: float) -> bool: ...
    async def close(self) -> None: ...


Subscribe = Callable[[], Awaitable[Subscription]]


def sse_event(event: str, data: Any) -> bytes:
    """One SSE event; JSON has no raw newlines, so ``data`` is always a single line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse_comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


class _RedisSubscription:
    def __init__(self, client: Any, pubsub: Any) -> None:
        self._client = client
        self._pubsub = pubsub

    async def next_message(self, wait_s: float) -> bool:
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
        return message is not None

    async def close(self) -> None:
        try:
            await self._pubsub.aclose()
        finally:
            await self._client.aclose()


def redis_subscriber(url: str, channel: str) -> Subscribe:
    async def subscribe() -> Subscription:
        import redis.asyncio as redis_asyncio

        # No socket_timeout: a subscription waits for messages as long as get_message asks.
        client = redis_asyncio.Redis.from_url(url, socket_connect_timeout=0.3)
        pubsub = client.pubsub()
        try:
            await asyncio.wait_for(pubsub.subscribe(channel), timeout=1.0)
        except BaseException:
            await pubsub.aclose()
            await client.aclose()
            raise
        return _RedisSubscription(client, pubsub)

    return subscribe


class ChangeWaiter:
    """Waits for the next moment worth re-reading the portfolios."""

    def __init__(
        self,
        subscribe: Subscribe | None,
        *,
        poll_s: float = POLL_S,
        resubscribe_s: float = RESUBSCRIBE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subscribe = subscribe
        self._poll_s = poll_s
        self._resubscribe_s = resubscribe_s
        self._clock = clock
        self._subscription: Subscription | None = None
        self._next_attempt = 0.0

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    async def _ensure_subscribed(self) -> None:
        if self._subscribe is None or self._subscription is not None:
            return
        if self._clock() < self._next_attempt:
            return
        try:
            self._subscription = await self._subscribe()
        except Exception as exc:
            self._next_attempt = self._clock() + self._resubscribe_s
            log.info("stream_subscribe_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    async def _drop(self) -> None:
        subscription, self._subscription = self._subscription, None
        self._next_attempt = self._clock() + self._resubscribe_s
        if subscription is not None:
            try:
                await subscription.close()
            except Exception as exc:
                log.debug("stream_unsubscribe_failed", error=f"{type(exc).__name__}: {exc}")

    async def wait(self, *, poll: bool) -> bool:
        """Wait up to ``poll_s``; True when something may have changed.

        With a live subscription it returns True on a message; with ``poll`` (the data is
        not from the mirror, so no message would announce its changes) or without a
        subscription, it returns True after every ``poll_s``.
        """
        await self._ensure_subscribed()
        if self._subscription is None:
            await asyncio.sleep(self._poll_s)
            return True
        try:
            got = await self._subscription.next_message(self._poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("stream_subscription_lost", error=f"{type(exc).__name__}: {exc}"[:200])
            await self._drop()
            return True
        return got or poll

    async def close(self) -> None:
        await self._drop()


def _disconnected(request: aiohttp_web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def serve_events(
    request: aiohttp_web.Request,
    *,
    snapshot: Callable[[], Awaitable[LiveUpdate]],
    waiter: ChangeWaiter,
    closing: asyncio.Event,
    should_stop: Callable[[], bool],
    still_allowed: Callable[[], Awaitable[bool]],
    keepalive_s: float = KEEPALIVE_S,
    reauth_s: float = REAUTH_S,
    min_interval_s: float = MIN_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> aiohttp_web.StreamResponse:
    response = aiohttp_web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            # nginx and similar proxies would otherwise buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    last_payload: str | None = None
    last_write = last_auth = clock()
    last_send = float("-inf")
    changed, from_mirror = True, False
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        while not closing.is_set() and not should_stop() and not _disconnected(request):
            if changed:
                pause = last_send + min_interval_s - clock()
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                changed = False
                try:
                    update = await snapshot()
                except ApiError as exc:  # e.g. tables still recovering: say so, keep trying
                    # (not named "error": EventSource uses that name for its own errors)
                    update = None
                    payload = json.dumps(exc.body(), sort_keys=True)
                    if payload != last_payload:
                        await response.write(sse_event("unavailable", exc.body()))
                        last_payload = payload
                        last_write = last_send = clock()
                    from_mirror = False
                if update is not None:
                    from_mirror = update.from_mirror
                    payload = json.dumps(update.data, separators=(",", ":"), sort_keys=True)
                    if payload != last_payload:
                        await response.write(sse_event("portfolios", update.data))
                        last_payload = payload
                        last_write = last_send = clock()
            now = clock()
            if now - last_auth >= reauth_s:
                last_auth = now
                if not await still_allowed():
                    await response.write(
                        sse_event("unauthorized", {"reason": "token no longer valid"})
                    )
                    break
            if now - last_write >= keepalive_s:
                await response.write(sse_comment("keep-alive"))
                last_write = now
            changed = await waiter.wait(poll=not from_mirror)
    except ConnectionError:
        # The client went away: nothing left to tell it.
        return response
    except Exception:
        # Headers are sent, so no error status is possible any more: end the stream and
        # let the client reconnect.
        log.exception("stream_failed")
    finally:
        await waiter.close()
    if not _disconnected(request):
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    return response
