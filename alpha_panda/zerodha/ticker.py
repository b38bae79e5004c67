"""An asyncio client for Kite's ticker WebSocket: ticks, order updates, reconnects.

`async for event in ticker.run():` connects, keeps the connection alive and yields events:
`Connected` / `Reconnected` (after which every subscription has been sent again: Kite keeps
none across connections), `TicksReceived`, `OrderUpdateReceived`, `TokenRejected` (403 at the
upgrade). Why it is shaped so:

- Subscriptions live in the client (`subscribe`/`unsubscribe`, callable any time) and are
  replayed in full on every connection.
- Keep-alive is aiohttp's ping/pong; a no-data watchdog reconnects when nothing at all (not
  even Kite's one-byte heartbeats) arrives for `watchdog_s`, which catches a half-open TCP
  connection that pings alone may not.
- Reconnects back off exponentially up to a cap (`Backoff`, its sleep injectable for tests);
  the delay resets after a connection that delivered data.
- A 403 at the upgrade means the access token is bad or expired (about 06:00 IST). Retrying
  with the same token is pointless and noisy, so the client stops, yields `TokenRejected`
  once, and waits until `access_token()` returns a different token (`token_changed()` wakes
  it at once; otherwise it polls every `token_poll_s`).
- A frame that does not parse is counted (`stats.parse_errors`) and logged with the reason,
  and never stops the feed. Nothing logged carries the token (the URL is never logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from yarl import URL

from alpha_panda.zerodha.errors import mask
from alpha_panda.zerodha.ticker_protocol import (
    KiteTick,
    PacketError,
    TickMode,
    mode_message,
    parse_binary_frame,
    parse_text_frame,
    subscribe_message,
    unsubscribe_message,
)

log = structlog.get_logger(__name__)

MAX_TOKENS_PER_CONNECTION = 3000
DEFAULT_WS_URL = "wss://ws.kite.trade"


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new connection after a loss; `attempts` connection attempts it took."""

    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class TicksReceived:
    ticks: list[KiteTick]
    errors: list[PacketError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OrderUpdateReceived:
    order: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TokenRejected:
    """The upgrade answered 403: no retry until `access_token()` changes."""

    status: int = 403


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    """Only yielded with `yield_heartbeats=True` (tests, liveness displays)."""


TickerEvent = (
    Connected
    | Reconnected
    | TicksReceived
    | OrderUpdateReceived
    | TokenRejected
    | HeartbeatReceived
)


@dataclass
class TickerStats:
    connects: int = 0
    reconnects: int = 0
    frames: int = 0
    heartbeats: int = 0
    ticks: int = 0
    order_updates: int = 0
    parse_errors: int = 0
    token_rejections: int = 0
    watchdog_timeouts: int = 0
    server_errors: int = 0
    connected: bool = False
    token_rejected: bool = False
    # time.monotonic() of the last frame of any kind (heartbeats too); None before the first.
    last_frame_at: float | None = None


class Backoff:
    """Capped exponential delays: initial, initial*factor, ... up to `max_s`."""

    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        factor: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError("need 0 < initial_s <= max_s and factor >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._sleep = sleep
        self._next = initial_s
        self.delays: list[float] = []  # every delay taken (tests, metrics)

    def reset(self) -> None:
        self._next = self.initial_s

    async def wait(self) -> None:
        delay = self._next
        self._next = min(self.max_s, self._next * self.factor)
        self.delays.append(delay)
        await self._sleep(delay)


class KiteTicker:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        ws_url: str = DEFAULT_WS_URL,
        api_key: str,
        access_token: Callable[[], str | None],
        backoff: Backoff | None = None,
        keepalive_s: float = 10.0,
        watchdog_s: float = 10.0,
        token_poll_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        yield_heartbeats: bool = False,
    ) -> None:
        self._session = session
        self._ws_url = ws_url
        self._api_key = api_key
        self._access_token = access_token
        self.backoff = backoff or Backoff()
        self._keepalive_s = keepalive_s
        self._watchdog_s = watchdog_s
        self._token_poll_s = token_poll_s
        self._connect_timeout_s = connect_timeout_s
        self._yield_heartbeats = yield_heartbeats
        self._subscriptions: dict[int, TickMode] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._token_event = asyncio.Event()
        self._closing = False
        self.stats = TickerStats()

    # --- subscriptions -----------------------------------------------------------------------

    @property
    def subscriptions(self) -> dict[int, TickMode]:
        return dict(self._subscriptions)

    async def subscribe(self, tokens: Iterable[int], mode: TickMode = TickMode.FULL) -> None:
        """Add instruments (or change their mode); kept across reconnects."""
        tokens = [int(t) for t in tokens]
        new = [t for t in tokens if t not in self._subscriptions]
        if len(self._subscriptions) + len(new) > MAX_TOKENS_PER_CONNECTION:
            raise ValueError(f"Kite allows {MAX_TOKENS_PER_CONNECTION} instruments per connection")
        for token in tokens:
            self._subscriptions[token] = mode
        ws = self._ws
        if ws is not None and not ws.closed and tokens:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(subscribe_message(tokens))
                await ws.send_str(mode_message(mode, tokens))

    async def unsubscribe(self, tokens: Iterable[int]) -> None:
        tokens = [int(t) for t in tokens if int(t) in self._subscriptions]
        for token in tokens:
            del self._subscriptions[token]
        ws = self._ws
        if ws is not None and not ws.closed and tokens:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(unsubscribe_message(tokens))

    async def __aenter__(self) -> KiteTicker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def token_changed(self) -> None:
        """Wake a client waiting after a 403 (a new token was stored)."""
        self._token_event.set()

    async def close(self) -> None:
        self._closing = True
        self._token_event.set()
        if self._ws is not None:
            await self._ws.close()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TickerEvent]:
        rejected_token: str | None = None
        attempts = 0
        ever_connected = False
        reason = "first connection"
        while not self._closing:
            token = self._access_token()
            if not token or token == rejected_token:
                await self._wait_for_token()
                continue
            attempts += 1
            try:
                ws = await asyncio.wait_for(
                    self._session.ws_connect(
                        URL(self._ws_url).update_query(api_key=self._api_key, access_token=token),
                        heartbeat=self._keepalive_s,
                        max_msg_size=0,
                    ),
                    self._connect_timeout_s,
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 403:
                    rejected_token = token
                    self.stats.token_rejections += 1
                    self.stats.token_rejected = True
                    log.warning("kite_ticker.token_rejected", status=exc.status)
                    yield TokenRejected(exc.status)
                    continue
                reason = f"upgrade answered {exc.status}"
                log.warning("kite_ticker.connect_failed", reason=reason, attempt=attempts)
                await self.backoff.wait()
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = mask(f"{type(exc).__name__}: {exc}", (token,))
                log.warning("kite_ticker.connect_failed", reason=reason, attempt=attempts)
                await self.backoff.wait()
                continue

            rejected_token = None
            self.stats.token_rejected = False
            self.stats.connected = True
            self.stats.connects += 1
            self._ws = ws
            got_data = False
            try:
                await self._resubscribe(ws)
                if ever_connected:
                    self.stats.reconnects += 1
                    yield Reconnected(attempts, reason)
                else:
                    yield Connected()
                ever_connected = True
                attempts = 0
                async for event in self._receive(ws):
                    if not got_data:
                        got_data = True
                        self.backoff.reset()
                    yield event
                reason = self._close_reason(ws)
            except (aiohttp.ClientError, ConnectionError) as exc:
                reason = f"{type(exc).__name__}"
            finally:
                self.stats.connected = False
                self._ws = None
                await ws.close()
            if self._closing:
                break
            log.warning("kite_ticker.disconnected", reason=reason)
            await self.backoff.wait()

    async def _wait_for_token(self) -> None:
        self._token_event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._token_event.wait(), self._token_poll_s)

    async def _resubscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        by_mode: dict[TickMode, list[int]] = {}
        for token, mode in self._subscriptions.items():
            by_mode.setdefault(mode, []).append(token)
        if not by_mode:
            return
        await ws.send_str(subscribe_message(list(self._subscriptions)))
        for mode, tokens in by_mode.items():
            await ws.send_str(mode_message(mode, tokens))

    def _close_reason(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        return f"closed by server (code {ws.close_code})" if ws.close_code else "closed"

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[TickerEvent]:
        while True:
            try:
                msg = await asyncio.wait_for(ws.receive(), self._watchdog_s)
            except TimeoutError:
                self.stats.watchdog_timeouts += 1
                log.warning("kite_ticker.watchdog", silent_s=self._watchdog_s)
                return
            if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                self.stats.last_frame_at = time.monotonic()
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.stats.frames += 1
                parsed = parse_binary_frame(msg.data)
                if parsed.heartbeat:
                    self.stats.heartbeats += 1
                    if self._yield_heartbeats:
                        yield HeartbeatReceived()
                    continue
                if parsed.errors:
                    self.stats.parse_errors += len(parsed.errors)
                    for error in parsed.errors:
                        log.warning(
                            "kite_ticker.bad_packet",
                            index=error.index,
                            length=error.length,
                            reason=error.reason,
                        )
                if parsed.ticks:
                    self.stats.ticks += len(parsed.ticks)
                if parsed.ticks or parsed.errors:
                    yield TicksReceived(parsed.ticks, parsed.errors)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                self.stats.frames += 1
                message = parse_text_frame(msg.data)
                if message.kind == "order" and message.order is not None:
                    self.stats.order_updates += 1
                    yield OrderUpdateReceived(message.order)
                elif message.kind == "error":
                    self.stats.server_errors += 1
                    log.warning("kite_ticker.server_error", message=message.text)
                else:
                    log.info("kite_ticker.message", kind=message.kind, text=message.text)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return
