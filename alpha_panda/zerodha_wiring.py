"""Wires the Zerodha parts into a stage: the token watcher, the trader, the tick sizes of
Kite's instruments master, their health.

Kept out of the agents so they stay thin: an agent calls ``install_*`` once at
registration (no I/O then) and gets an object to call from its handlers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp
import structlog

from alpha_panda.broker_session import IST, StageTokenWatcher, TokenWatcher
from alpha_panda.circuit_breaker import BreakerState
from alpha_panda.domain.live_orders import LiveOrder
from alpha_panda.kite_instruments import MasterTickSizes
from alpha_panda.rejections import emit_rejection
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Settings
from alpha_panda.topics import ORDERS_FILLED_LIVE
from alpha_panda.typed_table import TypedTable
from alpha_panda.zerodha.errors import KiteError
from alpha_panda.zerodha.rest import KiteRestClient
from alpha_panda.zerodha_trader import LiveTrading, Outcome
from models.envelope import derived_event_id
from models.events import OrderFill, RejectionReason, TradingSignal
from tables.specs import LIVE_ORDERS

if TYPE_CHECKING:
    from alpha_panda.tick_guard import TickGuard

log = structlog.get_logger(__name__)

BROKER = "zerodha"


def install_token_watcher(ctx: StageContext) -> StageTokenWatcher:
    watcher = StageTokenWatcher(ctx.settings.database.url, poll_s=ctx.settings.zerodha.token_poll_s)

    async def watch() -> None:
        try:
            await watcher.run(lambda: bool(ctx.app.should_stop))
        finally:
            await watcher.close()

    ctx.app.task(watch)
    return watcher


class MasterTickSizesTask:
    """Keeps a stage's tick guard on the tick sizes of today's instruments master.

    A background task fetches the master once a master day (kite_instruments.py), once a
    token is stored, and swaps the sizes into the guard whole: no tick waits for Kite.
    Until it loads (no login yet, Kite unreachable) the guard checks every instrument
    against its default, which refuses no valid NSE price, so the stage stays healthy and
    /health says which sizes it checks with. A failed fetch is retried every token poll.
    """

    def __init__(self, ctx: StageContext, guard: TickGuard, watcher: TokenWatcher) -> None:
        self._ctx = ctx
        self._guard = guard
        self._watcher = watcher
        self.master: MasterTickSizes | None = None
        self.error: str | None = None

    async def run(self) -> None:
        zerodha = self._ctx.settings.zerodha
        async with aiohttp.ClientSession() as http:
            rest = KiteRestClient(
                http,
                root_url=zerodha.root_url,
                api_key=zerodha.api_key.get_secret_value(),
                access_token=self._watcher.access_token,
            )
            self.master = master = MasterTickSizes(rest, self._guard.tick_sizes.default)
            while not self._ctx.app.should_stop:
                if self._watcher.access_token() is not None:
                    await self._refresh(master)
                await asyncio.sleep(zerodha.token_poll_s)

    async def _refresh(self, master: MasterTickSizes) -> None:
        try:
            if await master.refresh():
                self._guard.tick_sizes = master.current
        except KiteError as exc:
            self.error = str(exc)[:300]
            log.warning("tick_sizes_master_failed", error=self.error)
        else:
            self.error = None

    async def health(self) -> tuple[bool, str]:
        master = self.master
        if master is not None and master.day is not None:
            failed = f"; today's fetch failed: {self.error}" if self.error else ""
            return True, (
                f"tick sizes: {len(master.current.known)} instruments from Kite's instruments "
                f"master of {master.day.isoformat()}{failed}"
            )
        if self.error:
            why = self.error
        elif self._watcher.access_token() is None:
            why = self._watcher.describe()
        else:
            why = "loading"
        default = self._guard.tick_sizes.default
        return True, f"tick sizes: {default} for every instrument, no instruments master ({why})"


def kite_feeds_ticks(settings: Settings) -> bool:
    return settings.feed.source == "zerodha" and settings.zerodha.configured


def follow_master_tick_sizes(
    ctx: StageContext, guard: TickGuard, watcher: TokenWatcher | None = None
) -> MasterTickSizesTask:
    """Start keeping ``guard`` on the master's tick sizes (see MasterTickSizesTask);
    ``watcher`` is the stage's own when it has one already."""
    task = MasterTickSizesTask(ctx, guard, watcher or install_token_watcher(ctx))
    ctx.app.task(task.run)
    ctx.health_checks["tick_sizes"] = task.health
    return task


class LiveTradingHandle:
    """What the trading engine's handlers use: submit a signal, record a placed order,
    forget finished ones."""

    def __init__(self, ctx: StageContext, live: LiveTrading, table: TypedTable[LiveOrder]) -> None:
        self._ctx = ctx
        self.live = live
        self._table = table
        # instrument token -> tags whose orders are done: removed from the table on that
        # instrument's next tick (a table write needs a record of the key's partition).
        self.done: dict[int, set[str]] = {}

    def finished(self, order: LiveOrder) -> None:
        self.done.setdefault(order.signal.instrument_token, set()).add(order.tag)

    def forget_done(self, instrument_token: int) -> None:
        for tag in self.done.pop(instrument_token, ()):
            if tag in self._table:
                del self._table[tag]

    async def submit(self, signal_event_id: str, signal: TradingSignal, product: str) -> Outcome:
        return await self.live.submit(signal_event_id, signal, product)

    def record(self, order: LiveOrder) -> None:
        """Remember a placed order in the changelog-backed table (inside a handler), so a
        restarted engine keeps collecting its fills."""
        if order.tag not in self._table:
            self._table[order.tag] = order


def install_live_trading(
    ctx: StageContext, halted: Callable[[TradingSignal], str | None]
) -> LiveTradingHandle:
    """``halted``: why the kill switch cancels a signal's working order at Kite, or None."""
    table = ctx.table(LIVE_ORDERS)
    metrics = ctx.metrics

    async def send_fill(fill: OrderFill) -> None:
        await ctx.send(
            ORDERS_FILLED_LIVE.record(
                fill,
                event_id=derived_event_id(fill.order_id, fill.fill_id, "filled"),
                ts=fill.filled_ts,
                source=ctx.source,
            )
        )
        # Counted like a paper fill (`make run`'s summary reads it), by side.
        metrics.domain.labels(ctx.source, "fill", fill.side.value).inc()

    async def send_rejection(order: LiveOrder, detail: str) -> None:
        await emit_rejection(
            ctx,
            handled_event_id=order.signal_event_id,
            id_suffix="broker-rejected",
            ts=order.signal.signal_ts,
            signal_event_id=order.signal_event_id,
            signal=order.signal,
            reason=RejectionReason.BROKER_REJECTED,
            detail=detail,
            counted=False,
        )

    async def send_cancelled(order: LiveOrder, detail: str) -> None:
        await emit_rejection(
            ctx,
            handled_event_id=order.signal_event_id,
            id_suffix="halt-cancelled",
            ts=order.signal.signal_ts,
            signal_event_id=order.signal_event_id,
            signal=order.signal,
            reason=RejectionReason.KILL_SWITCH,
            detail=detail,
        )

    handle: LiveTradingHandle | None = None

    def known_orders() -> Mapping[str, LiveOrder]:
        """The recorded orders still worth watching. Kite's orders are day orders: one
        placed before today (IST) is over, and is forgotten rather than adopted."""
        today = datetime.now(UTC).astimezone(IST).date()
        known: dict[str, LiveOrder] = {}
        for tag, order in table.items():
            if order.placed_ts.astimezone(IST).date() < today:
                if handle is not None:
                    handle.finished(order)
                continue
            known[tag] = order
        return known

    def on_finished(order: LiveOrder) -> None:
        if handle is not None:
            handle.finished(order)

    def on_event(event: str, detail: str) -> None:
        metrics.domain.labels(ctx.source, f"zerodha_{event}", detail).inc()

    def on_breaker(name: str, state: BreakerState) -> None:
        metrics.breaker_state.labels(ctx.source, name).set(0 if state is BreakerState.CLOSED else 1)

    watcher = install_token_watcher(ctx)
    live = LiveTrading(
        ctx.settings,
        watcher=watcher,
        send_fill=send_fill,
        send_rejection=send_rejection,
        known_orders=known_orders,
        on_event=on_event,
        on_breaker=on_breaker,
        on_finished=on_finished,
        send_cancelled=send_cancelled,
        halted=halted,
    )
    metrics.breaker_state.labels(ctx.source, "zerodha-rest").set(0)

    async def trade() -> None:
        await live.start()
        try:
            await live.run(lambda: bool(ctx.app.should_stop))
        finally:
            await live.stop()

    async def listen() -> None:
        await live.listen(lambda: bool(ctx.app.should_stop))

    async def wake_on_new_token() -> None:
        await live.started.wait()
        while not ctx.app.should_stop:
            await watcher.changed.wait()
            watcher.changed.clear()
            live.token_changed()

    ctx.app.task(trade)
    ctx.app.task(listen)
    ctx.app.task(wake_on_new_token)

    async def health() -> tuple[bool, str]:
        ok, detail = await live.health()
        metrics.broker_connected.labels(ctx.source, BROKER).set(1 if ok else 0)
        metrics.broker_token_expired.labels(ctx.source, BROKER).set(
            1 if "token expired" in detail else 0
        )
        return ok, detail

    ctx.health_checks[BROKER] = health
    handle = LiveTradingHandle(ctx, live, table)
    return handle
