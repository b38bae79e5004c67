"""A local Kite Connect server on loopback: REST, the ticker WebSocket, and fault controls.

It speaks the parts of Kite Connect v3 Alpha Panda uses, with the same paths, forms, JSON
envelopes, error types and HTTP statuses, so the client code that talks to it is the code that
talks to Kite. The market behind it (price walk, books, matcher) is `fake_market.py`.

REST: GET /connect/login (hands out a request token, redirecting when a redirect URL is set),
POST /session/token (checksum checked), DELETE /session/token, GET /user/profile,
POST /orders/regular, DELETE /orders/regular/{id} (cancel), GET /orders, GET /orders/{id},
GET /orders/{id}/trades, GET /trades,
GET /instruments[/{exchange}] (CSV), GET /instruments/historical/{token}/{interval}.
Ticker: GET /ws?api_key=..&access_token=.. upgrades to the ticker protocol (binary frames in
ltp/quote/full, 1-byte heartbeats, order-update text frames); a bad or expired token gets 403
before the upgrade, as Kite does.
Controls (loopback only, for tests and demos) under /_control/: expire tokens, fail the next
N REST calls with 500 or 429, delay responses, drop WebSocket connections, reject the next
order with a message, set a book, pause/step the walk, place an order "by hand" (as from Kite
web). Each has a method on `FakeKite` for in-process tests.

Faithful where it matters to a client: orders placed are accepted first and filled (or
rejected) afterwards, with each status change pushed to the user's ticker connections; each
level a MARKET order touches is one trade; 10 orders/s and 400/min answer 429; MARKET and
SL-M orders without a non-zero market_protection are refused (the 2026 rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from alpha_panda.zerodha.fake_market import (
    DEFAULT_INSTRUMENTS,
    FakeInstrument,
    FakeMarket,
    Fill,
    match,
)
from alpha_panda.zerodha.models import IST, format_kite_time, parse_kite_time
from alpha_panda.zerodha.ticker_protocol import (
    HEARTBEAT_FRAME,
    TickMode,
    encode_error_message,
    encode_frame,
    encode_order_update,
    encode_packet,
    parse_client_message,
)

log = structlog.get_logger(__name__)

MAX_TOKENS_PER_CONNECTION = 3000
MAX_CONNECTIONS_PER_KEY = 3
ORDERS_PER_SECOND = 10
MAX_ORDER_QUANTITY = 10_000_000
ORDERS_PER_MINUTE = 400
ORDERS_PER_DAY = 5000
INTERVALS = {
    "minute": 1,
    "3minute": 3,
    "5minute": 5,
    "10minute": 10,
    "15minute": 15,
    "30minute": 30,
    "60minute": 60,
    "day": 1440,
}
MAX_CANDLES = 5000
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class KiteHTTPError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _error_response(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"status": "error", "message": message, "data": None, "error_type": error_type},
        status=status,
    )


def _jsonable(value: Any) -> Any:
    # Kite writes prices as JSON numbers. float(Decimal) of a price with at most 15 significant
    # digits prints back as the same digits, so a client reading with parse_float=Decimal
    # gets the exact price.
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return format_kite_time(value)
    return value


def _ok(data: Any) -> web.Response:
    return web.json_response({"status": "success", "data": _jsonable(data)})


@dataclass
class _User:
    user_id: str
    user_name: str
    login_time: datetime


@dataclass
class _Order:
    order_id: str
    exchange_order_id: str | None
    user: _User
    instrument: FakeInstrument
    transaction_type: str
    quantity: int
    product: str
    order_type: str
    validity: str
    price: Decimal
    trigger_price: Decimal
    market_protection: Decimal
    tag: str | None
    placed_by_app: bool
    order_timestamp: datetime
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    turnover: Decimal = Decimal(0)
    triggered: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    exchange_timestamp: datetime | None = None

    @property
    def pending_quantity(self) -> int:
        if self.status in ("COMPLETE", "CANCELLED", "REJECTED"):
            return 0
        return self.quantity - self.filled_quantity - self.cancelled_quantity

    @property
    def average_price(self) -> Decimal:
        if not self.filled_quantity:
            return Decimal(0)
        return (self.turnover / self.filled_quantity).quantize(
            Decimal("0.0001"), rounding=ROUND_HALF_EVEN
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "placed_by": self.user.user_id,
            "order_id": self.order_id,
            "exchange_order_id": self.exchange_order_id,
            "parent_order_id": None,
            "status": self.status,
            "status_message": self.status_message,
            "status_message_raw": self.status_message,
            "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_timestamp,
            "exchange_timestamp": self.exchange_timestamp,
            "variety": "regular",
            "modified": False,
            "exchange": self.instrument.exchange,
            "tradingsymbol": self.instrument.tradingsymbol,
            "instrument_token": self.instrument.instrument_token,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "validity_ttl": 0,
            "product": self.product,
            "quantity": self.quantity,
            "disclosed_quantity": 0,
            "price": self.price,
            "trigger_price": self.trigger_price,
            "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": self.market_protection,
            "meta": {},
            "tag": self.tag,
            "tags": [self.tag] if self.tag else [],
            "guid": f"fake-{self.order_id}",
        }


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    access_token: str
    user: _User
    subscriptions: dict[int, TickMode] = field(default_factory=dict)


class FakeKite:
    """The local Kite server. `async with FakeKite(port=0) as kite:` runs it on loopback.

    `tick_interval_s=None` stops the automatic walk: a test then drives the market with
    `await kite.step()` and gets exactly the frames it caused.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = "fake_api_key",
        api_secret: str = "fake_api_secret",
        seed: int = 7,
        instruments: tuple[FakeInstrument, ...] = DEFAULT_INSTRUMENTS,
        tick_interval_s: float | None = 0.2,
        heartbeat_interval_s: float = 1.0,
        redirect_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        orders_per_day: int = ORDERS_PER_DAY,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self.api_key = api_key
        self.api_secret = api_secret
        self.market = FakeMarket(instruments, seed=seed)
        self._seed = seed
        self.tick_interval_s = tick_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.redirect_url = redirect_url
        self._clock = clock
        self._monotonic = monotonic
        self._request_tokens: dict[str, str] = {}  # request token -> user id
        self._tokens: dict[str, _User] = {}  # live access tokens
        self.orders: dict[str, _Order] = {}
        self.trades: dict[str, list[dict[str, Any]]] = {}
        self._order_seq = 0
        self._trade_seq = 0
        self._order_times: deque[float] = deque()
        self.orders_per_second = ORDERS_PER_SECOND
        self.orders_per_day = orders_per_day
        self._order_day: date | None = None
        self._orders_today = 0
        self._connections: list[_Connection] = []
        self._fail_next: list[int] = []
        self._reject_next: list[str] = []
        self.delay_s = 0.0
        self.walk_paused = False
        self.stalled = False  # connections stay open but nothing is sent (half-open link)
        self.rest_calls = 0
        self.rejected_upgrades = 0
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def login_url(self) -> str:
        return f"{self.root_url}/connect/login"

    async def __aenter__(self) -> FakeKite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_middleware, self._faults_middleware])
        r = app.router
        r.add_get("/connect/login", self._login)
        r.add_post("/session/token", self._session_token)
        r.add_delete("/session/token", self._logout)
        r.add_get("/user/profile", self._profile)
        r.add_post("/orders/{variety}", self._place_order)
        r.add_delete("/orders/{variety}/{order_id}", self._cancel_order)
        r.add_get("/orders", self._orders)
        r.add_get("/orders/{order_id}", self._order_history)
        r.add_get("/orders/{order_id}/trades", self._order_trades)
        r.add_get("/trades", self._all_trades)
        r.add_get("/instruments", self._instruments)
        r.add_get("/instruments/historical/{token}/{interval}", self._historical)
        r.add_get("/instruments/{exchange}", self._instruments)
        r.add_get("/ws", self._ws)
        r.add_post("/_control/{action}", self._control)
        r.add_get("/_control/state", self._control_state)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))
        if self.tick_interval_s is not None:
            self._tasks.append(asyncio.create_task(self._walk_loop(self.tick_interval_s)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- test and demo controls ----------------------------------------------------------

    def issue_request_token(self, user_id: str = "FK0001") -> str:
        """What Kite's login page hands the redirect URL: a single-use request token."""
        token = secrets.token_hex(16)
        self._request_tokens[token] = user_id
        return token

    def issue_token(self, user_id: str = "FK0001", user_name: str = "Fake User") -> str:
        """An access token without the login dance (tests)."""
        token = secrets.token_hex(16)
        self._tokens[token] = _User(user_id, user_name, self._clock())
        return token

    async def expire_tokens(self) -> int:
        """Every access token dies (the 06:00 IST expiry); their ticker connections close."""
        expired = set(self._tokens)
        self._tokens.clear()
        await self._close([c for c in self._connections if c.access_token in expired], 1000)
        return len(expired)

    def fail_next(self, count: int, status: int = 500) -> None:
        self._fail_next.extend([status] * count)

    def reject_next(self, message: str) -> None:
        self._reject_next.append(message)

    def stall(self, stalled: bool = True) -> None:
        """Keep the ticker connections open but send nothing (no ticks, heartbeats or order
        updates), like a half-open TCP link: what a client's no-data watchdog is for."""
        self.stalled = stalled

    async def drop_connections(self) -> int:
        conns = list(self._connections)
        await self._close(conns, 1001)
        return len(conns)

    async def _close(self, conns: list[_Connection], code: int) -> None:
        # Forgotten first, so a client reconnecting at once is not refused as a 4th
        # connection while the old close handshakes are still running; closed together, so
        # one unresponsive client does not hold up the rest.
        for conn in conns:
            with contextlib.suppress(ValueError):
                self._connections.remove(conn)
        await asyncio.gather(*(c.ws.close(code=code) for c in conns), return_exceptions=True)

    def set_book(
        self, token: int, bids: list[tuple[Decimal, int]], asks: list[tuple[Decimal, int]]
    ) -> None:
        self.market.set_book(token, bids, asks)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def subscriptions(self) -> list[dict[int, TickMode]]:
        return [dict(c.subscriptions) for c in self._connections]

    async def step(self) -> None:
        """One market step: move prices, trigger and match open orders, push ticks."""
        self.market.step()
        await self._match_open_orders()
        await self._publish()

    async def place_manual_order(
        self,
        tradingsymbol: str,
        transaction_type: str,
        quantity: int,
        *,
        exchange: str = "NSE",
        user_id: str | None = None,
    ) -> str:
        """An order placed by hand on Kite web/mobile: no tag, not from the app."""
        user = next(iter(self._tokens.values()), None)
        if user is None or (user_id and user.user_id != user_id):
            user = _User(user_id or "FK0001", "Fake User", self._clock())
        form = {
            "tradingsymbol": tradingsymbol,
            "exchange": exchange,
            "transaction_type": transaction_type,
            "quantity": str(quantity),
            "product": "CNC",
            "order_type": "MARKET",
            "market_protection": "-1",
        }
        order = self._new_order(form, user, placed_by_app=False)
        await self._accept(order)
        return order.order_id

    # --- middlewares ---------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except KiteHTTPError as exc:
            return _error_response(exc.status, exc.error_type, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error_type = "InputException" if exc.status < 500 else "GeneralException"
            return _error_response(exc.status, error_type, exc.reason)
        except Exception:
            # The fake answers like Kite does for its own faults, never with a bare 500 page.
            log.exception("fake_kite.handler_failed", path=request.path)
            return _error_response(500, "GeneralException", "internal error")

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_control") or request.path == "/ws":
            return await handler(request)
        self.rest_calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._fail_next:
            status = self._fail_next.pop(0)
            if status == 429:
                return _error_response(429, "NetworkException", "Too many requests")
            if status == 503:
                return _error_response(503, "NetworkException", "Gateway unavailable")
            return _error_response(status, "GeneralException", "Something went wrong (fake)")
        return await handler(request)

    # --- auth ----------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> _User:
        if request.headers.get("X-Kite-Version") != "3":
            raise KiteHTTPError(400, "InputException", "X-Kite-Version: 3 header required")
        header = request.headers.get("Authorization", "")
        prefix = f"token {self.api_key}:"
        if not header.startswith(prefix):
            raise KiteHTTPError(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        user = self._tokens.get(header[len(prefix) :])
        if user is None:
            raise KiteHTTPError(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        return user

    # --- session -------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        if request.query.get("api_key") != self.api_key:
            raise KiteHTTPError(400, "InputException", "Invalid `api_key`.")
        request_token = self.issue_request_token()
        if self.redirect_url:
            sep = "&" if "?" in self.redirect_url else "?"
            raise web.HTTPFound(
                f"{self.redirect_url}{sep}action=login&type=login&status=success"
                f"&request_token={request_token}"
            )
        return _ok({"request_token": request_token})

    async def _session_token(self, request: web.Request) -> web.Response:
        form = await request.post()
        api_key = str(form.get("api_key", ""))
        request_token = str(form.get("request_token", ""))
        checksum = str(form.get("checksum", ""))
        if not (api_key and request_token and checksum):
            raise KiteHTTPError(
                400, "InputException", "`api_key`, `request_token` and `checksum` are required."
            )
        if api_key != self.api_key:
            raise KiteHTTPError(403, "TokenException", "Invalid `api_key`.")
        expected = hashlib.sha256((api_key + request_token + self.api_secret).encode()).hexdigest()
        if not secrets.compare_digest(checksum, expected):
            raise KiteHTTPError(403, "TokenException", "Invalid `checksum`.")
        user_id = self._request_tokens.pop(request_token, None)
        if user_id is None:
            raise KiteHTTPError(403, "TokenException", "Token is invalid or has expired.")
        now = self._clock()
        access_token = secrets.token_hex(16)
        user = _User(user_id, "Fake User", now)
        self._tokens[access_token] = user
        return _ok(
            {
                "user_type": "individual",
                "email": f"{user_id.lower()}@example.invalid",
                "user_name": user.user_name,
                "user_shortname": "Fake",
                "broker": "ZERODHA",
                "exchanges": ["NSE", "BSE", "NFO"],
                "products": ["CNC", "NRML", "MIS"],
                "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "avatar_url": None,
                "user_id": user_id,
                "api_key": api_key,
                "access_token": access_token,
                "public_token": secrets.token_hex(8),
                "refresh_token": "",
                "login_time": now,
                "meta": {"demat_consent": "consent"},
            }
        )

    async def _logout(self, request: web.Request) -> web.Response:
        self._auth(request)
        token = request.headers["Authorization"].split(":", 1)[1]
        self._tokens.pop(token, None)
        return _ok(True)

    async def _profile(self, request: web.Request) -> web.Response:
        user = self._auth(request)
        return _ok({"user_id": user.user_id, "user_name": user.user_name, "broker": "ZERODHA"})

    # --- orders ------------------------------------------------------------------------

    def _rate_limited(self) -> str | None:
        """Why this order is over Kite's limits (10/s, 400/min, 5,000/day), or None."""
        now = self._monotonic()
        while self._order_times and now - self._order_times[0] >= 60:
            self._order_times.popleft()
        last_second = sum(1 for t in self._order_times if now - t < 1)
        if last_second >= self.orders_per_second or len(self._order_times) >= ORDERS_PER_MINUTE:
            return "Too many requests"
        day = self._clock().astimezone(IST).date()
        if day != self._order_day:
            self._order_day, self._orders_today = day, 0
        if self._orders_today >= self.orders_per_day:
            return "Daily order limit reached"
        self._order_times.append(now)
        self._orders_today += 1
        return None

    async def _place_order(self, request: web.Request) -> web.Response:
        user = self._auth(request)
        if request.match_info["variety"] != "regular":
            raise KiteHTTPError(400, "InputException", "Only the regular variety is supported.")
        limited = self._rate_limited()
        if limited:
            raise KiteHTTPError(429, "NetworkException", limited)
        form = {k: str(v) for k, v in (await request.post()).items()}
        order = self._new_order(form, user, placed_by_app=True)
        await self._accept(order)
        return _ok({"order_id": order.order_id})

    def _new_order(self, form: dict[str, str], user: _User, *, placed_by_app: bool) -> _Order:
        def need(name: str) -> str:
            value = form.get(name, "").strip()
            if not value:
                raise KiteHTTPError(400, "InputException", f"Missing `{name}`.")
            return value

        def decimal(name: str) -> Decimal:
            raw = form.get(name, "").strip() or "0"
            try:
                value = Decimal(raw)
            except InvalidOperation:
                raise KiteHTTPError(400, "InputException", f"Invalid `{name}`.") from None
            # Finite, under a billion, at most 8 places: anything else is no price Kite takes
            # (and would make the decimal arithmetic below raise instead of answering 400).
            # (adjusted() and the exponent are read without arithmetic, which could overflow.)
            if not value.is_finite() or value.adjusted() >= 9 or _places(value) > 8:
                raise KiteHTTPError(400, "InputException", f"Invalid `{name}`.")
            return value

        exchange, symbol = need("exchange"), need("tradingsymbol")
        instrument = self.market.by_symbol.get((exchange, symbol))
        if instrument is None or instrument.is_index:
            raise KiteHTTPError(400, "InputException", "Invalid `tradingsymbol`.")
        side = need("transaction_type")
        if side not in ("BUY", "SELL"):
            raise KiteHTTPError(400, "InputException", "Invalid `transaction_type`.")
        try:
            quantity = int(need("quantity"))
        except ValueError:
            raise KiteHTTPError(400, "InputException", "Invalid `quantity`.") from None
        if not 0 < quantity <= MAX_ORDER_QUANTITY or quantity % instrument.lot_size:
            raise KiteHTTPError(400, "InputException", "Invalid `quantity`.")
        product = need("product")
        if product not in ("MIS", "CNC", "NRML", "MTF"):
            raise KiteHTTPError(400, "InputException", "Invalid `product`.")
        order_type = need("order_type")
        if order_type not in ("MARKET", "LIMIT", "SL", "SL-M"):
            raise KiteHTTPError(400, "InputException", "Invalid `order_type`.")
        validity = form.get("validity", "DAY") or "DAY"
        if validity not in ("DAY", "IOC", "TTL"):
            raise KiteHTTPError(400, "InputException", "Invalid `validity`.")
        price, trigger = decimal("price"), decimal("trigger_price")
        protection = decimal("market_protection")
        if order_type in ("LIMIT", "SL") and price <= 0:
            raise KiteHTTPError(400, "InputException", "Invalid `price`.")
        if order_type in ("SL", "SL-M") and trigger <= 0:
            raise KiteHTTPError(400, "InputException", "Invalid `trigger_price`.")
        for value, name in ((price, "price"), (trigger, "trigger_price")):
            if value and value % instrument.tick_size:
                raise KiteHTTPError(
                    400,
                    "InputException",
                    f"Tick size for this script is {instrument.tick_size}. Kindly enter "
                    f"{name} in the multiple of tick size for this script",
                )
        if not (protection == -1 or 0 <= protection <= 100):
            raise KiteHTTPError(400, "InputException", "Invalid `market_protection`.")
        if order_type in ("MARKET", "SL-M") and protection == 0:
            raise KiteHTTPError(
                400,
                "InputException",
                "Market orders without market protection are not allowed. Set `market_protection`.",
            )
        tag = form.get("tag") or None
        if tag is not None and (len(tag) > 20 or not tag.isalnum()):
            raise KiteHTTPError(400, "InputException", "Invalid `tag`.")
        now = self._clock()
        self._order_seq += 1
        order_id = f"{now.astimezone(IST):%y%m%d}{self._order_seq:010d}"
        order = _Order(
            order_id=order_id,
            exchange_order_id=None,
            user=user,
            instrument=instrument,
            transaction_type=side,
            quantity=quantity,
            product=product,
            order_type=order_type,
            validity=validity,
            price=price,
            trigger_price=trigger,
            market_protection=protection,
            tag=tag,
            placed_by_app=placed_by_app,
            order_timestamp=now,
        )
        self.orders[order_id] = order
        self.trades[order_id] = []
        return order

    async def _record(self, order: _Order, status: str, message: str | None = None) -> None:
        order.status = status
        order.status_message = message
        order.exchange_timestamp = self._clock() if order.exchange_order_id else None
        snapshot = order.snapshot()
        order.history.append(snapshot)
        if status in ("PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING"):
            return  # transit states are in the history; the ticker pushes settled ones
        update = dict(snapshot)
        update.update(
            {
                "app_id": 1 if order.placed_by_app else 0,
                "user_id": order.user.user_id,
                "account_id": order.user.user_id,
                "unfilled_quantity": order.pending_quantity,
            }
        )
        text = encode_order_update(_jsonable(update))
        for conn in list(self._connections):
            if conn.user.user_id == order.user.user_id and not conn.ws.closed and not self.stalled:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.send_str(text)

    async def _accept(self, order: _Order) -> None:
        await self._record(order, "PUT ORDER REQ RECEIVED")
        await self._record(order, "VALIDATION PENDING")
        if self._reject_next:
            message = self._reject_next.pop(0)
            await self._record(order, "REJECTED", message)
            return
        await self._record(order, "OPEN PENDING")
        order.exchange_order_id = f"13{self._order_seq:014d}"
        if order.order_type in ("SL", "SL-M"):
            await self._record(order, "TRIGGER PENDING")
            await self._try_trigger(order)
            return
        await self._record(order, "OPEN")
        await self._fill(order)

    async def _try_trigger(self, order: _Order) -> None:
        mid = self.market.mid(order.instrument.instrument_token)
        crossed = (
            mid >= order.trigger_price
            if order.transaction_type == "BUY"
            else mid <= order.trigger_price
        )
        if crossed:
            order.triggered = True
            await self._record(order, "OPEN")
            await self._fill(order)

    async def _fill(self, order: _Order) -> None:
        limit = order.price if order.order_type in ("LIMIT", "SL") else None
        remaining = order.quantity - order.filled_quantity
        book = self.market.book(order.instrument.instrument_token)
        fills: list[Fill] = match(book, order.transaction_type, remaining, limit)
        for fill in fills:
            self._trade(order, fill)
            order.filled_quantity += fill.quantity
            order.turnover += fill.price * fill.quantity
            done = order.filled_quantity == order.quantity
            await self._record(order, "COMPLETE" if done else "OPEN")
        if order.filled_quantity < order.quantity and order.validity == "IOC":
            order.cancelled_quantity = order.quantity - order.filled_quantity
            await self._record(order, "CANCELLED")

    def _trade(self, order: _Order, fill: Fill) -> None:
        self._trade_seq += 1
        now = self._clock()
        self.market.record_trade(order.instrument.instrument_token, fill.price, fill.quantity)
        self.trades[order.order_id].append(
            {
                "trade_id": str(10_000_000 + self._trade_seq),
                "order_id": order.order_id,
                "exchange": order.instrument.exchange,
                "tradingsymbol": order.instrument.tradingsymbol,
                "instrument_token": order.instrument.instrument_token,
                "product": order.product,
                "average_price": fill.price,
                "quantity": fill.quantity,
                "exchange_order_id": order.exchange_order_id,
                "transaction_type": order.transaction_type,
                "fill_timestamp": now,
                "order_timestamp": order.order_timestamp,
                "exchange_timestamp": now,
            }
        )

    async def _match_open_orders(self) -> None:
        for order in list(self.orders.values()):
            if order.status == "TRIGGER PENDING":
                await self._try_trigger(order)
            elif order.status == "OPEN":
                await self._fill(order)

    def _user_order(self, request: web.Request) -> _Order:
        user = self._auth(request)
        order = self.orders.get(request.match_info["order_id"])
        if order is None or order.user.user_id != user.user_id:
            raise KiteHTTPError(400, "OrderException", "Couldn't find that `order_id`.")
        return order

    async def _cancel_order(self, request: web.Request) -> web.Response:
        """Kite's cancel: an order still working is cancelled (its unfilled quantity
        counted as cancelled, the change pushed to the ticker); one already complete,
        cancelled or rejected is refused with 400, as Kite refuses it."""
        order = self._user_order(request)
        if request.match_info["variety"] != "regular":
            raise KiteHTTPError(400, "InputException", "Only the regular variety is supported.")
        if order.status in ("COMPLETE", "CANCELLED", "REJECTED"):
            raise KiteHTTPError(
                400,
                "InputException",
                f"Order cannot be cancelled as it is already in {order.status} state.",
            )
        order.cancelled_quantity = order.quantity - order.filled_quantity
        await self._record(order, "CANCELLED")
        return _ok({"order_id": order.order_id})

    async def _orders(self, request: web.Request) -> web.Response:
        user = self._auth(request)
        return _ok([o.snapshot() for o in self.orders.values() if o.user.user_id == user.user_id])

    async def _order_history(self, request: web.Request) -> web.Response:
        return _ok(self._user_order(request).history)

    async def _order_trades(self, request: web.Request) -> web.Response:
        return _ok(self.trades[self._user_order(request).order_id])

    async def _all_trades(self, request: web.Request) -> web.Response:
        user = self._auth(request)
        return _ok(
            [
                trade
                for order_id, trades in self.trades.items()
                if self.orders[order_id].user.user_id == user.user_id
                for trade in trades
            ]
        )

    # --- instruments and history -----------------------------------------------------------

    async def _instruments(self, request: web.Request) -> web.Response:
        self._auth(request)
        exchange = request.match_info.get("exchange")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "instrument_token",
                "exchange_token",
                "tradingsymbol",
                "name",
                "last_price",
                "expiry",
                "strike",
                "tick_size",
                "lot_size",
                "instrument_type",
                "segment",
                "exchange",
            ]
        )
        for inst in self.market.instruments.values():
            if exchange and inst.exchange != exchange:
                continue
            writer.writerow(
                [
                    inst.instrument_token,
                    inst.instrument_token >> 8,
                    inst.tradingsymbol,
                    inst.name,
                    0,
                    "",
                    0,
                    inst.tick_size,
                    inst.lot_size,
                    inst.instrument_type,
                    inst.segment,
                    inst.exchange,
                ]
            )
        return web.Response(text=out.getvalue(), content_type="text/csv")

    async def _historical(self, request: web.Request) -> web.Response:
        self._auth(request)
        try:
            token = int(request.match_info["token"])
        except ValueError:
            raise KiteHTTPError(400, "InputException", "Invalid `instrument_token`.") from None
        instrument = self.market.instruments.get(token)
        if instrument is None:
            raise KiteHTTPError(400, "InputException", "Invalid `instrument_token`.")
        interval = request.match_info["interval"]
        minutes = INTERVALS.get(interval)
        if minutes is None:
            raise KiteHTTPError(400, "InputException", "Invalid `interval`.")
        try:
            start = parse_kite_time(request.query["from"])
            end = parse_kite_time(request.query["to"])
        except (KeyError, ValueError):
            raise KiteHTTPError(400, "InputException", "Invalid `from` or `to`.") from None
        assert start is not None and end is not None
        if end < start:
            raise KiteHTTPError(400, "InputException", "`from` is after `to`.")
        step = timedelta(minutes=minutes)
        if (end - start) / step > MAX_CANDLES:
            raise KiteHTTPError(400, "InputException", "interval exceeds max limit")
        with_oi = request.query.get("oi") == "1"
        return _ok({"candles": self._candles(instrument, start, end, step, with_oi)})

    def _candles(
        self,
        inst: FakeInstrument,
        start: datetime,
        end: datetime,
        step: timedelta,
        with_oi: bool,
    ) -> list[list[Any]]:
        # Seeded by the instrument and the first bar, so the same request answers the same bars.
        rng = random.Random(f"{self._seed}:{inst.instrument_token}:{int(start.timestamp())}")
        tick = inst.price_step
        price = inst.price
        out: list[list[Any]] = []
        moment = start
        while moment <= end:
            open_ = price
            close = max(tick, open_ + rng.randint(-5, 5) * tick)
            high = max(open_, close) + rng.randint(0, 3) * tick
            low = max(tick, min(open_, close) - rng.randint(0, 3) * tick)
            row: list[Any] = [
                moment.astimezone(IST).strftime("%Y-%m-%dT%H:%M:%S%z"),
                open_,
                high,
                low,
                close,
                0 if inst.is_index else rng.randint(100, 10_000),
            ]
            if with_oi:
                row.append(0)
            out.append(row)
            price = close
            moment += step
        return out

    # --- ticker WebSocket ------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        api_key = request.query.get("api_key", "")
        token = request.query.get("access_token", "")
        user = self._tokens.get(token) if api_key == self.api_key else None
        if user is None:
            self.rejected_upgrades += 1
            raise KiteHTTPError(403, "TokenException", "Invalid `api_key` or `access_token`.")
        if len(self._connections) >= MAX_CONNECTIONS_PER_KEY:
            raise KiteHTTPError(429, "NetworkException", "Too many connections for this key")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Connection(ws, token, user)
        self._connections.append(conn)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_client_text(conn, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            with contextlib.suppress(ValueError):
                self._connections.remove(conn)
        return ws

    async def _on_client_text(self, conn: _Connection, text: str) -> None:
        try:
            request = parse_client_message(text)
        except ValueError as exc:
            await conn.ws.send_str(encode_error_message(f"bad request: {exc}"))
            return
        if request.action == "unsubscribe":
            for token in request.tokens:
                conn.subscriptions.pop(token, None)
            return
        changed: list[int] = []
        for token in request.tokens:
            if token not in conn.subscriptions and (
                len(conn.subscriptions) >= MAX_TOKENS_PER_CONNECTION
            ):
                await conn.ws.send_str(
                    encode_error_message(
                        f"max {MAX_TOKENS_PER_CONNECTION} instruments per connection"
                    )
                )
                break
            mode = request.mode if request.mode is not None else TickMode.QUOTE
            if request.action == "subscribe" and token in conn.subscriptions:
                continue  # subscribing again keeps the mode
            conn.subscriptions[token] = mode
            changed.append(token)
        # Like Kite, a fresh subscription gets the current state promptly.
        await self._publish_to(conn, [t for t in changed if t in self.market.instruments])

    async def _publish(self) -> None:
        for conn in list(self._connections):
            await self._publish_to(conn, list(conn.subscriptions))

    async def _publish_to(self, conn: _Connection, tokens: list[int]) -> None:
        if self.stalled:
            return
        now = self._clock()
        packets = [
            encode_packet(self.market.tick(token, conn.subscriptions[token], now))
            for token in tokens
            if token in self.market.instruments and token in conn.subscriptions
        ]
        if packets and not conn.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_bytes(encode_frame(packets))

    async def _walk_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self.walk_paused:
                await self.step()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            for conn in list(self._connections):
                if not conn.ws.closed and not self.stalled:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await conn.ws.send_bytes(HEARTBEAT_FRAME)

    # --- control endpoints -----------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        if request.remote not in _LOOPBACK:
            raise KiteHTTPError(403, "PermissionException", "controls answer loopback only")
        body: dict[str, Any] = {}
        if request.can_read_body:
            try:
                parsed = await request.json()
            except ValueError:
                raise KiteHTTPError(400, "InputException", "body must be JSON") from None
            if not isinstance(parsed, dict):
                raise KiteHTTPError(400, "InputException", "body must be a JSON object")
            body = parsed
        action = request.match_info["action"]
        try:
            result = await self._control_action(action, body)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise KiteHTTPError(400, "InputException", f"bad {action} request: {exc}") from None
        return _ok(result)

    async def _control_action(self, action: str, body: dict[str, Any]) -> Any:
        if action == "expire_token":
            return {"expired": await self.expire_tokens()}
        if action == "fail":
            status = int(body.get("status", 500))
            if status not in (429, 500, 502, 503):
                raise ValueError("status must be 429, 500, 502 or 503")
            self.fail_next(int(body["count"]), status)
            return {"pending": len(self._fail_next)}
        if action == "delay":
            seconds = float(body["seconds"])
            if not 0 <= seconds <= 60:
                raise ValueError("seconds must be within 0..60")
            self.delay_s = seconds
            return {"delay_s": seconds}
        if action == "stall_ws":
            self.stall(bool(body["stalled"]))
            return {"stalled": self.stalled}
        if action == "drop_ws":
            return {"dropped": await self.drop_connections()}
        if action == "reject_next":
            self.reject_next(str(body["message"]))
            return {"pending": len(self._reject_next)}
        if action == "request_token":
            return {"request_token": self.issue_request_token(str(body.get("user_id", "FK0001")))}
        if action == "book":
            token = int(body["instrument_token"])
            if token not in self.market.instruments:
                raise ValueError("unknown instrument_token")
            sides = []
            for side in ("bids", "asks"):
                levels = [(Decimal(str(p)), int(q)) for p, q in body.get(side, [])]
                if any(not p.is_finite() or p <= 0 or q <= 0 for p, q in levels):
                    raise ValueError(f"{side}: prices and quantities must be positive")
                sides.append(levels)
            self.set_book(token, sides[0], sides[1])
            return {"instrument_token": token}
        if action == "walk":
            self.walk_paused = bool(body["paused"])
            return {"paused": self.walk_paused}
        if action == "step":
            await self.step()
            return {"stepped": True}
        if action == "manual_order":
            order_id = await self.place_manual_order(
                str(body["tradingsymbol"]),
                str(body["transaction_type"]),
                int(body["quantity"]),
                exchange=str(body.get("exchange", "NSE")),
            )
            return {"order_id": order_id}
        raise KiteHTTPError(404, "InputException", f"unknown control {action!r}")

    async def _control_state(self, request: web.Request) -> web.Response:
        if request.remote not in _LOOPBACK:
            raise KiteHTTPError(403, "PermissionException", "controls answer loopback only")
        return _ok(
            {
                "orders": len(self.orders),
                "trades": sum(len(t) for t in self.trades.values()),
                "connections": len(self._connections),
                "live_tokens": len(self._tokens),
                "rest_calls": self.rest_calls,
                "rejected_upgrades": self.rejected_upgrades,
                "walk_paused": self.walk_paused,
                "stalled": self.stalled,
            }
        )
