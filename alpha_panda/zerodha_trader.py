"""The Zerodha trader: places live orders at Kite and turns Kite's trades into fills.

The trading engine hands it each validated live signal (:meth:`ZerodhaTrader.submit`) and
waits for the outcome before the signal's offset may commit, so a crash never loses a
signal: it is redelivered, and its derived tag (alpha_panda/domain/live_orders.py) finds the order
already placed in ``GET /orders`` instead of placing a second one.

Placing goes through, in order: the stored access token (none or expired: refused at
once), the instruments master (tradingsymbol and exchange), a client-side rate limiter
(Kite allows 10 orders/s and 400/min; excess orders wait their turn in FIFO order), and a
circuit breaker around every REST call (Kite 5xx, timeouts, network errors open it; a
refused order does not). Every refusal becomes a rejection with Kite's message.

Fills: order updates (the ticker WebSocket's text frames, :meth:`on_order_update`) are the
primary source; :meth:`poll` (every ``poll_s`` seconds and after a reconnect) lists the
orders and collects the trades of any order of ours whose filled quantity moved. Each Kite
trade is one fill with fill id = trade id; trades already sent are remembered so a trade
is sent once per process, and a restart's re-sends are dropped by the portfolio by id.
Orders placed by hand on Kite carry no tag of ours: they are logged and counted once each,
never booked. An order that carries our tag but that this engine has no record of (its
signal's record lost, e.g. a log rolled back by a crash of the embedded broker) is an
error: its fills cannot be booked. It is logged as one, counted, and /health fails while
Kite lists it unclaimed.

The kill switch: :meth:`ZerodhaTrader.cancel_halted` cancels at Kite
(``DELETE /orders/regular/{order_id}``) every working order of ours whose strategy is
halted; each cancellation is reported as a rejection, and what filled before it is booked
as any fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from alpha_panda.broker_session import TokenWatcher
from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from alpha_panda.domain.live_orders import (
    TERMINAL_STATUSES,
    LiveOrder,
    fills_for_trades,
    is_ours,
    order_form,
    order_tag,
)
from alpha_panda.kite_instruments import InstrumentsCache
from alpha_panda.settings import Settings
from alpha_panda.zerodha.errors import InputException, KiteError, RateLimited, TokenException
from alpha_panda.zerodha.models import KiteOrder
from alpha_panda.zerodha.rest import KiteRestClient
from alpha_panda.zerodha.ticker import KiteTicker, OrderUpdateReceived, Reconnected
from models.events import OrderFill, RejectionReason, TradingSignal

log = structlog.get_logger(__name__)

RATE_LIMIT_RETRIES = 3
RATE_LIMIT_BACKOFF_S = 1.0


class RateLimiter:
    """At most ``per_second`` acquisitions in any 1 s and ``per_minute`` in any 60 s.

    Callers beyond the limit wait, first come first served (the lock queues them).
    """

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._limits = ((1.0, per_second), (60.0, per_minute))
        self._clock = clock
        self._sleep = sleep
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def _wait_needed(self, now: float) -> float:
        while self._times and now - self._times[0] >= 60.0:
            self._times.popleft()
        wait = 0.0
        for window, limit in self._limits:
            recent = [t for t in self._times if now - t < window]
            if len(recent) >= limit:
                wait = max(wait, recent[-limit] + window - now)
        return wait

    async def acquire(self) -> None:
        async with self._lock:
            while (wait := self._wait_needed(self._clock())) > 0:
                self.waited_s += wait
                await self._sleep(wait)
            self._times.append(self._clock())


@dataclass(frozen=True)
class Placed:
    order: LiveOrder
    already_placed: bool = False


@dataclass(frozen=True)
class Refused:
    reason: RejectionReason
    detail: str


Outcome = Placed | Refused


class ZerodhaTrader:
    def __init__(
        self,
        *,
        rest: KiteRestClient,
        instruments: InstrumentsCache,
        breaker: CircuitBreaker,
        limiter: RateLimiter,
        access_token: Callable[[], str | None],
        market_protection: int,
        max_signal_age_s: float = 60.0,
        send_fill: Callable[[OrderFill], Awaitable[None]],
        send_rejection: Callable[[LiveOrder, str], Awaitable[None]],
        send_cancelled: Callable[[LiveOrder, str], Awaitable[None]] | None = None,
        on_event: Callable[[str, str], None] = lambda event, detail: None,
        on_finished: Callable[[LiveOrder], None] = lambda order: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rest = rest
        self._instruments = instruments
        self.breaker = breaker
        self._limiter = limiter
        self._access_token = access_token
        self._market_protection = market_protection
        self._max_signal_age_s = max_signal_age_s
        self._send_fill = send_fill
        self._send_rejection = send_rejection
        self._send_cancelled = send_cancelled
        self._on_event = on_event
        self._on_finished = on_finished
        self._now = now
        self._retry_sleep = retry_sleep
        self.orders: dict[str, LiveOrder] = {}  # Kite order id -> our order
        self._by_tag: dict[str, str] = {}  # tag -> Kite order id (from GET /orders)
        self._sent_trades: set[str] = set()
        self._filled_seen: dict[str, int] = {}  # order id -> filled quantity collected
        self._finished: set[str] = set()
        self._manual_seen: set[str] = set()
        # Orders of ours Kite lists that no signal here claims: seen unclaimed at the last
        # poll, and unknown (unclaimed at two polls running, an error while it lasts).
        self._unclaimed: set[str] = set()
        self.unknown_orders: set[str] = set()
        self._cancel_requested: set[str] = set()
        self._unconfirmed: dict[str, tuple[str, TradingSignal]] = {}
        # Kite order id -> its product as Kite lists it: an order found placed (after a
        # restart) keeps the product it was placed with, whatever the strategy says now.
        self._listed_products: dict[str, str] = {}
        self._synced_with: str | None = None  # the token the order list was read with
        self.token_rejected: str | None = None  # the token Kite refused, if any
        self._sync_lock = asyncio.Lock()
        self._advance_lock = asyncio.Lock()

    # -- state for /health ----------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        token = self._access_token()
        if token is None:
            return False, "zerodha: no valid access token (run `alpha-panda zerodha login`)"
        if self.token_rejected == token:
            return False, "zerodha: token expired"
        if self.breaker.state is BreakerState.OPEN:
            return False, f"zerodha: circuit open ({self.breaker.last_error})"
        if self.unknown_orders:
            return False, (
                f"zerodha: {len(self.unknown_orders)} order(s) at Kite carry our tag but the "
                f"engine has no record of them, their fills are not booked: "
                f"{', '.join(sorted(self.unknown_orders))}"
            )
        return True, f"zerodha: connected, {len(self.orders) - len(self._finished)} open orders"

    @property
    def finished_orders(self) -> set[str]:
        return set(self._finished)

    # -- placing ---------------------------------------------------------------------------

    def adopt(self, orders: Mapping[str, LiveOrder]) -> None:
        """Track orders placed before a restart (from the engine's live-orders table)."""
        for order in orders.values():
            self.orders.setdefault(order.order_id, order)
            self._by_tag.setdefault(order.tag, order.order_id)

    async def submit(self, signal_event_id: str, signal: TradingSignal, product: str) -> Outcome:
        """Place ``signal``'s order with ``product``, its strategy's
        (alpha_panda/domain/products.py)."""
        token = self._access_token()
        if token is None:
            return Refused(
                RejectionReason.BROKER_UNAVAILABLE,
                "zerodha: no valid access token; run `alpha-panda zerodha login`",
            )
        if self.token_rejected == token:
            return Refused(RejectionReason.BROKER_UNAVAILABLE, "zerodha: token expired; log in")
        tag = order_tag(signal_event_id)
        try:
            await self._sync_orders(force=False)
        except (KiteError, CircuitOpenError) as exc:
            return self._refusal(exc)
        if tag in self._by_tag:
            return self._placed(
                tag, self._by_tag[tag], signal_event_id, signal, product, already=True
            )
        age_s = (self._now() - signal.signal_ts).total_seconds()
        if age_s > self._max_signal_age_s:
            return Refused(
                RejectionReason.BROKER_REJECTED,
                f"zerodha: signal is {age_s:.0f}s old (limit {self._max_signal_age_s:.0f}s): "
                "not placed at a stale price",
            )
        try:
            instrument = await self.breaker.call(
                lambda: self._instruments.get(signal.instrument_token)
            )
        except (KiteError, CircuitOpenError) as exc:
            return self._refusal(exc)
        if instrument is None:
            return Refused(
                RejectionReason.BROKER_REJECTED,
                f"zerodha: instrument {signal.instrument_token} is not in Kite's instruments "
                "master",
            )
        # Checked here against the day's master so the refusal names the rule; Kite would
        # refuse the same order with a terser message.
        if instrument.lot_size > 0 and signal.quantity % instrument.lot_size:
            return Refused(
                RejectionReason.BROKER_REJECTED,
                f"zerodha: quantity {signal.quantity} is not a multiple of the lot size "
                f"{instrument.lot_size} of {instrument.tradingsymbol}",
            )
        if (
            signal.limit_price is not None
            and instrument.tick_size > 0
            and signal.limit_price % instrument.tick_size
        ):
            return Refused(
                RejectionReason.BROKER_REJECTED,
                f"zerodha: limit price {signal.limit_price} is not a multiple of the tick size "
                f"{instrument.tick_size} of {instrument.tradingsymbol}",
            )
        try:
            form = order_form(
                signal,
                tradingsymbol=instrument.tradingsymbol,
                exchange=instrument.exchange,
                product=product,
                market_protection=self._market_protection,
                tag=tag,
            )
        except ValueError as exc:
            return Refused(RejectionReason.BROKER_REJECTED, f"zerodha: {exc}"[:500])
        for attempt in range(1, RATE_LIMIT_RETRIES + 1):
            await self._limiter.acquire()
            try:
                order_id = await self.breaker.call(lambda: self._rest.place_order(form))
            except RateLimited as exc:
                # Kite counted more than we did (another app on the same user?): wait, retry.
                self._on_event("rate_limited", "429")
                if attempt == RATE_LIMIT_RETRIES:
                    return self._refusal(exc)
                await self._retry_sleep(RATE_LIMIT_BACKOFF_S * attempt)
                continue
            except (KiteError, CircuitOpenError) as exc:
                if isinstance(exc, KiteError) and exc.retryable:
                    # The order may have reached Kite before the failure: look for its tag.
                    with contextlib.suppress(KiteError, CircuitOpenError):
                        await self._sync_orders(force=True)
                    if tag in self._by_tag:
                        return self._placed(
                            tag, self._by_tag[tag], signal_event_id, signal, product, already=True
                        )
                    # Still unknown: refused now, but should the order turn up in a later
                    # listing it is adopted and its fills booked, never left unaccounted.
                    self._unconfirmed[tag] = (signal_event_id, signal)
                return self._refusal(exc)
            self._on_event("order_placed", signal.side.value)
            log.info(
                "live_order_placed",
                order_id=order_id,
                tag=tag,
                strategy_id=signal.strategy_id,
                instrument_token=signal.instrument_token,
                side=signal.side.value,
                quantity=signal.quantity,
            )
            return self._placed(tag, order_id, signal_event_id, signal, product, already=False)
        raise AssertionError("unreachable")  # pragma: no cover

    def _placed(
        self,
        tag: str,
        order_id: str,
        signal_event_id: str,
        signal: TradingSignal,
        product: str,
        *,
        already: bool,
    ) -> Placed:
        order = self.orders.get(order_id) or LiveOrder(
            tag=tag,
            order_id=order_id,
            signal_event_id=signal_event_id,
            signal=signal,
            product=self._listed_products.get(order_id, product),
            placed_ts=self._now(),
        )
        self.orders[order_id] = order
        self._by_tag[tag] = order_id
        if already:
            self._on_event("order_already_placed", signal.side.value)
            log.info("live_order_found_placed", order_id=order_id, tag=tag)
        return Placed(order, already_placed=already)

    def _refusal(self, exc: BaseException) -> Refused:
        if isinstance(exc, TokenException):
            self.token_rejected = self._access_token()
            return Refused(RejectionReason.BROKER_UNAVAILABLE, "zerodha: token expired; log in")
        if isinstance(exc, CircuitOpenError):
            return Refused(RejectionReason.BROKER_UNAVAILABLE, f"zerodha: {exc}"[:500])
        if isinstance(exc, KiteError) and (exc.retryable or exc.status is None):
            return Refused(RejectionReason.BROKER_UNAVAILABLE, f"zerodha: {exc}"[:500])
        return Refused(RejectionReason.BROKER_REJECTED, f"zerodha: {exc}"[:500])

    # -- order list and fills --------------------------------------------------------------

    async def _sync_orders(self, *, force: bool) -> list[KiteOrder]:
        """Read today's orders (once per token unless forced): learn tags, see manual ones."""
        token = self._access_token()
        async with self._sync_lock:
            if not force and self._synced_with == token and token is not None:
                return []
            try:
                listed = await self.breaker.call(self._rest.orders)
            except TokenException:
                self.token_rejected = token
                raise
            self._synced_with = token
            self.token_rejected = None
        for order in listed:
            if is_ours(order):
                self._listed_products[order.order_id] = order.product
                for tag in self._tags_of(order):
                    self._by_tag.setdefault(tag, order.order_id)
                    if tag in self._unconfirmed and order.order_id not in self.orders:
                        signal_event_id, signal = self._unconfirmed.pop(tag)
                        self._placed(
                            tag,
                            order.order_id,
                            signal_event_id,
                            signal,
                            order.product,
                            already=True,
                        )
                        log.warning(
                            "live_order_found_after_refusal",
                            order_id=order.order_id,
                            tag=tag,
                            note="refused as unconfirmed, but Kite has it: its fills are booked",
                        )
            elif order.order_id not in self._manual_seen:
                self._manual_seen.add(order.order_id)
                self._on_event("manual_order", order.status)
                log.info(
                    "manual_order_seen",
                    order_id=order.order_id,
                    tradingsymbol=order.tradingsymbol,
                    transaction_type=order.transaction_type,
                    quantity=order.quantity,
                    status=order.status,
                    note="placed outside Alpha Panda: never booked to a portfolio",
                )
        return listed

    @staticmethod
    def _tags_of(order: KiteOrder) -> list[str]:
        return [t for t in (order.tag, *(order.tags or ())) if t]

    async def poll(self) -> None:
        """The fallback: list the orders and collect trades wherever the fill moved on."""
        if self._access_token() is None or self.token_rejected == self._access_token():
            return
        listed = await self._sync_orders(force=True)
        for order in listed:
            if order.order_id in self.orders:
                await self._advance(order)
        self._check_unclaimed(listed)

    def _check_unclaimed(self, listed: list[KiteOrder]) -> None:
        """Orders of ours that no signal here claims. One poll's grace: an order placed
        while that poll listed (its placing not yet recorded), or one whose signal is
        about to be redelivered after a restart, is claimed by then."""
        unclaimed = {o.order_id for o in listed if is_ours(o) and o.order_id not in self.orders}
        by_id = {o.order_id: o for o in listed}
        for order_id in sorted((unclaimed & self._unclaimed) - self.unknown_orders):
            order = by_id[order_id]
            self._on_event("unknown_order", order.status)
            log.error(
                "live_order_unknown",
                order_id=order_id,
                tags=self._tags_of(order),
                tradingsymbol=order.tradingsymbol,
                transaction_type=order.transaction_type,
                quantity=order.quantity,
                filled_quantity=order.filled_quantity,
                status=order.status,
                note="carries our tag but the engine has no record of it (its signal's "
                "record lost, e.g. a log rolled back): its fills are not booked; reconcile "
                "by hand",
            )
        self.unknown_orders = (self.unknown_orders | (unclaimed & self._unclaimed)) & unclaimed
        self._unclaimed = unclaimed

    async def cancel_halted(self, halted: Callable[[TradingSignal], str | None]) -> list[str]:
        """Cancel at Kite every working order of ours that ``halted`` gives a reason to
        cancel (its strategy is halted); returns the ids Kite cancelled. A failed call is
        retried next round."""
        token = self._access_token()
        if token is None or self.token_rejected == token:
            return []
        cancelled: list[str] = []
        for order_id, order in list(self.orders.items()):
            if order_id in self._finished or order_id in self._cancel_requested:
                continue
            reason = halted(order.signal)
            if reason is None:
                continue
            await self._limiter.acquire()
            try:
                done = await self.breaker.call(lambda oid=order_id: self._cancel(oid))  # type: ignore[misc]
            except (KiteError, CircuitOpenError) as exc:
                log.warning("live_cancel_failed", order_id=order_id, error=str(exc)[:300])
                continue
            self._cancel_requested.add(order_id)
            if not done:
                continue  # already over at Kite: its last update books what it filled
            self._on_event("order_cancelled", "halt")
            log.warning(
                "live_order_cancelled_by_halt",
                order_id=order_id,
                tag=order.tag,
                strategy_id=order.signal.strategy_id,
            )
            if self._send_cancelled is not None:
                await self._send_cancelled(order, f"{reason} (Kite order {order_id})")
            cancelled.append(order_id)
        return cancelled

    async def _cancel(self, order_id: str) -> bool:
        """True: Kite cancelled it; False: Kite refused because it is already over (a
        refusal that is no failure of Kite's, so it must not count against the breaker)."""
        try:
            await self._rest.cancel_order(order_id)
        except InputException:
            return False
        return True

    async def on_order_update(self, data: Mapping[str, Any]) -> None:
        """An order update from the ticker WebSocket (the primary source)."""
        try:
            order = KiteOrder.model_validate(dict(data))
        except ValueError as exc:
            log.warning("order_update_unreadable", error=str(exc)[:300])
            return
        if order.order_id in self.orders:
            await self._advance(order)
        elif not is_ours(order) and order.order_id not in self._manual_seen:
            self._manual_seen.add(order.order_id)
            self._on_event("manual_order", order.status)
            log.info(
                "manual_order_seen",
                order_id=order.order_id,
                tradingsymbol=order.tradingsymbol,
                status=order.status,
                note="placed outside Alpha Panda: never booked to a portfolio",
            )

    async def _advance(self, update: KiteOrder) -> None:
        # The update listener and the poller both get here; one at a time, so a trade
        # seen by both is sent once.
        async with self._advance_lock:
            await self._advance_locked(update)

    async def _advance_locked(self, update: KiteOrder) -> None:
        ours = self.orders[update.order_id]
        if update.order_id in self._finished:
            return
        if update.filled_quantity > self._filled_seen.get(update.order_id, 0):
            trades = await self.breaker.call(lambda: self._rest.order_trades(update.order_id))
            for fill in fills_for_trades(ours, trades):
                if fill.fill_id in self._sent_trades:
                    continue
                await self._send_fill(fill)
                self._sent_trades.add(fill.fill_id)
                self._on_event("fill", fill.side.value)
            self._filled_seen[update.order_id] = sum(
                t.quantity for t in trades if t.order_id == update.order_id
            )
        if (
            update.status in TERMINAL_STATUSES
            and self._filled_seen.get(update.order_id, 0) >= update.filled_quantity
        ):
            self._finished.add(update.order_id)
            self._on_finished(ours)
            if update.status == "REJECTED":
                message = update.status_message or "rejected by Kite or the exchange"
                await self._send_rejection(ours, f"zerodha: {message}"[:500])
                self._on_event("order_rejected", ours.signal.side.value)
            log.info(
                "live_order_finished",
                order_id=update.order_id,
                status=update.status,
                filled=update.filled_quantity,
            )


class LiveTrading:
    """The trader's I/O lifetime inside a stage: HTTP session, token, breaker, poll task.

    Built at registration (no I/O then); :meth:`start` runs inside the worker's loop. The
    engine calls :meth:`submit` from its stream; until started, a submit waits for it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        watcher: TokenWatcher,
        send_fill: Callable[[OrderFill], Awaitable[None]],
        send_rejection: Callable[[LiveOrder, str], Awaitable[None]],
        known_orders: Callable[[], Mapping[str, LiveOrder]],
        on_event: Callable[[str, str], None],
        on_breaker: Callable[[str, BreakerState], None],
        on_finished: Callable[[LiveOrder], None] = lambda order: None,
        send_cancelled: Callable[[LiveOrder, str], Awaitable[None]] | None = None,
        halted: Callable[[TradingSignal], str | None] = lambda signal: None,
    ) -> None:
        self.settings = settings
        self._send_cancelled = send_cancelled
        self._halted = halted
        self.watcher = watcher
        self._send_fill = send_fill
        self._send_rejection = send_rejection
        self._known_orders = known_orders
        self._on_event = on_event
        self._on_breaker = on_breaker
        self._on_finished = on_finished
        self._http: aiohttp.ClientSession | None = None
        self.trader: ZerodhaTrader | None = None
        self.ticker: KiteTicker | None = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        zerodha = self.settings.zerodha
        self._http = aiohttp.ClientSession()
        rest = KiteRestClient(
            self._http,
            root_url=zerodha.root_url,
            api_key=zerodha.api_key.get_secret_value(),
            access_token=self.watcher.access_token,
        )
        self.trader = ZerodhaTrader(
            rest=rest,
            instruments=InstrumentsCache(rest),
            breaker=CircuitBreaker(
                "zerodha-rest",
                failure_threshold=zerodha.breaker_failures,
                reset_timeout_s=zerodha.breaker_reset_s,
                on_state_change=self._on_breaker,
            ),
            limiter=RateLimiter(zerodha.orders_per_second, zerodha.orders_per_minute),
            access_token=self.watcher.access_token,
            market_protection=zerodha.market_protection,
            max_signal_age_s=zerodha.max_signal_age_s,
            send_fill=self._send_fill,
            send_rejection=self._send_rejection,
            send_cancelled=self._send_cancelled,
            on_event=self._on_event,
            on_finished=self._on_finished,
        )
        await self.watcher.refresh()
        self.started.set()

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def submit(self, signal_event_id: str, signal: TradingSignal, product: str) -> Outcome:
        await self.started.wait()
        assert self.trader is not None
        self.trader.adopt(self._known_orders())
        return await self.trader.submit(signal_event_id, signal, product)

    async def listen(self, should_stop: Callable[[], bool]) -> None:
        """Order updates from a ticker connection of our own (no instruments subscribed):
        the primary source of fills. After a reconnect the orders are polled at once, so a
        trade made while the connection was down is not missed."""
        await self.started.wait()
        assert self.trader is not None and self._http is not None
        zerodha = self.settings.zerodha
        self.ticker = ticker = KiteTicker(
            self._http,
            ws_url=zerodha.ws_url,
            api_key=zerodha.api_key.get_secret_value(),
            access_token=self.watcher.access_token,
            token_poll_s=zerodha.token_poll_s,
        )
        try:
            async for event in ticker.run():
                if should_stop():
                    break
                try:
                    if isinstance(event, OrderUpdateReceived):
                        await self.trader.on_order_update(event.order)
                    elif isinstance(event, Reconnected):
                        self._on_event("ticker", "reconnected")
                        self.trader.adopt(self._known_orders())
                        await self.trader.poll()
                except (KiteError, CircuitOpenError) as exc:
                    log.warning("live_order_update_failed", error=str(exc)[:300])
        finally:
            await ticker.close()

    def token_changed(self) -> None:
        if self.ticker is not None:
            self.ticker.token_changed()

    async def run(self, should_stop: Callable[[], bool]) -> None:
        await self.started.wait()
        assert self.trader is not None
        poll_s = self.settings.zerodha.order_poll_s
        while not should_stop():
            self.trader.adopt(self._known_orders())
            try:
                await self.trader.poll()
            except (KiteError, CircuitOpenError) as exc:
                log.warning("live_poll_failed", error=str(exc)[:300])
            # The kill switch: a halted strategy's working orders are cancelled at Kite.
            await self.trader.cancel_halted(self._halted)
            await asyncio.sleep(poll_s)

    async def health(self) -> tuple[bool, str]:
        if self.trader is None:
            return False, "zerodha: trader starting"
        if self.watcher.expired():
            return False, "zerodha: token expired"
        return self.trader.health()
