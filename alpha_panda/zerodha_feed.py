"""The market feed's Kite source (``ALPHA_PANDA_FEED_SOURCE=zerodha``).

One KiteTicker connection (alpha_panda/zerodha/ticker.py) in full mode on the union of
the instruments of the enabled strategies, re-read from the configuration database like
every stage does (alpha_panda/config_watch.py): a strategy enabled or changed adds its
instruments within seconds, a disabled one's instruments are unsubscribed. Kite allows
3,000 instruments per connection; beyond that the lowest tokens are kept and the rest
logged as not subscribed.

Each tick becomes a MarketTick v2 (with depth when the packet has it) keyed by instrument
token (alpha_panda/domain/kite_ticks.py). Symbols and exchanges come from Kite's instruments master
(fetched once a day), else from the strategy's configuration.

The access token comes from the token store through a TokenWatcher. On a 403 at the
upgrade the ticker stops retrying; ``/health`` reports ``zerodha: token expired`` and
``alpha_panda_broker_token_expired`` is 1 until a new login is stored, which wakes the
ticker at once (no restart).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from alpha_panda import db
from alpha_panda.admin import wait_for_topics
from alpha_panda.config_watch import ConfigWatcher
from alpha_panda.domain.kite_ticks import market_tick
from alpha_panda.kite_instruments import InstrumentsCache
from alpha_panda.producer import send_record, start_producer
from alpha_panda.runtime import StageContext
from alpha_panda.topics import MARKET_TICKS
from alpha_panda.zerodha.errors import KiteError
from alpha_panda.zerodha.rest import KiteRestClient
from alpha_panda.zerodha.ticker import (
    MAX_TOKENS_PER_CONNECTION,
    Connected,
    KiteTicker,
    Reconnected,
    TicksReceived,
    TokenRejected,
)
from alpha_panda.zerodha.ticker_protocol import TickMode
from alpha_panda.zerodha_wiring import BROKER, install_token_watcher
from models.envelope import new_event_id

log = structlog.get_logger(__name__)


def wanted_instruments(config: db.RuntimeConfig) -> dict[int, str]:
    """token -> configured symbol, over the enabled strategies, capped at Kite's limit."""
    wanted: dict[int, str] = {}
    for strategy in config.enabled_strategies:
        for ref in strategy.instruments:
            wanted.setdefault(ref.token, ref.symbol)
    if len(wanted) > MAX_TOKENS_PER_CONNECTION:
        kept = sorted(wanted)[:MAX_TOKENS_PER_CONNECTION]
        log.warning(
            "feed_instruments_over_limit",
            wanted=len(wanted),
            limit=MAX_TOKENS_PER_CONNECTION,
            dropped=sorted(wanted)[MAX_TOKENS_PER_CONNECTION:][:20],
        )
        wanted = {t: wanted[t] for t in kept}
    return wanted


class ZerodhaFeed:
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.watcher = install_token_watcher(ctx)
        self.wanted: dict[int, str] = {}
        self.wanted_changed = asyncio.Event()
        self.ticker: KiteTicker | None = None
        self.instruments: InstrumentsCache | None = None
        self.sent = 0
        self.skipped = 0

    def on_config(self, config: db.RuntimeConfig) -> None:
        wanted = wanted_instruments(config)
        if wanted != self.wanted:
            self.wanted = wanted
            self.wanted_changed.set()

    async def health(self) -> tuple[bool, str]:
        ticker = self.ticker
        metrics, source = self.ctx.metrics, self.ctx.source
        expired = self.watcher.expired() or (ticker is not None and ticker.stats.token_rejected)
        connected = ticker is not None and ticker.stats.connected
        metrics.broker_token_expired.labels(source, BROKER).set(1 if expired else 0)
        metrics.broker_connected.labels(source, BROKER).set(1 if connected else 0)
        if expired:
            return False, "zerodha: token expired"
        if self.watcher.access_token() is None:
            return False, f"zerodha: {self.watcher.describe()}"
        if not connected:
            return False, "zerodha: ticker not connected"
        assert ticker is not None
        return True, (
            f"zerodha: connected, {len(ticker.subscriptions)} instruments, "
            f"{ticker.stats.ticks} ticks, {ticker.stats.parse_errors} bad packets"
        )

    async def _sync_subscriptions(self) -> None:
        while not self.ctx.app.should_stop:
            await self.wanted_changed.wait()
            self.wanted_changed.clear()
            ticker = self.ticker
            if ticker is None:
                continue
            current = set(ticker.subscriptions)
            wanted = set(self.wanted)
            if current - wanted:
                await ticker.unsubscribe(current - wanted)
            if wanted - current:
                await ticker.subscribe(sorted(wanted - current), TickMode.FULL)
            log.info("feed_subscriptions", instruments=len(wanted))

    async def _wake_on_new_token(self) -> None:
        while not self.ctx.app.should_stop:
            await self.watcher.changed.wait()
            self.watcher.changed.clear()
            if self.ticker is not None:
                self.ticker.token_changed()

    async def _label(self, token: int) -> tuple[str, str]:
        instruments = self.instruments
        if instruments is not None and self.watcher.access_token() is not None:
            try:
                row = await instruments.get(token)
            except KiteError as exc:
                log.warning("instruments_master_failed", error=str(exc)[:300])
                row = None
            if row is not None:
                return row.tradingsymbol, row.exchange
        return self.wanted.get(token, str(token)), "NSE"

    async def run(self) -> None:
        ctx = self.ctx
        settings = ctx.settings
        zerodha = settings.zerodha
        api_key = zerodha.api_key.get_secret_value()
        if not await wait_for_topics(
            settings, [MARKET_TICKS.name], should_stop=lambda: ctx.app.should_stop
        ):
            return
        producer = await start_producer(
            settings, client_id=ctx.stage.consumer_group, linger_ms=settings.feed.linger_ms
        )
        labels: dict[int, tuple[str, str]] = {}
        try:
            async with aiohttp.ClientSession() as http:
                rest = KiteRestClient(
                    http,
                    root_url=zerodha.root_url,
                    api_key=api_key,
                    access_token=self.watcher.access_token,
                )
                self.instruments = InstrumentsCache(rest)
                self.ticker = ticker = KiteTicker(
                    http,
                    ws_url=zerodha.ws_url,
                    api_key=api_key,
                    access_token=self.watcher.access_token,
                    token_poll_s=zerodha.token_poll_s,
                )
                await self.watcher.refresh()
                self.wanted_changed.set()
                helpers = [
                    asyncio.create_task(self._sync_subscriptions()),
                    asyncio.create_task(self._wake_on_new_token()),
                ]
                log.info("market_feed_started", topic=MARKET_TICKS.name, source="zerodha")
                try:
                    async for event in ticker.run():
                        if ctx.app.should_stop:
                            break
                        if isinstance(event, TicksReceived):
                            await self._publish(producer, event, labels)
                        elif isinstance(event, TokenRejected):
                            ctx.metrics.domain.labels(ctx.source, "zerodha_token", "rejected").inc()
                            log.warning("feed_token_expired", broker=BROKER)
                        elif isinstance(event, Connected | Reconnected):
                            ctx.metrics.domain.labels(
                                ctx.source, "zerodha_ticker", type(event).__name__.lower()
                            ).inc()
                            labels.clear()  # a new day's master may have come in meanwhile
                finally:
                    for task in helpers:
                        task.cancel()
                    await ticker.close()
        finally:
            await producer.flush()
            await producer.stop()
            log.info("market_feed_stopped", ticks_sent=self.sent, skipped=self.skipped)

    async def _publish(
        self, producer: AIOKafkaProducer, event: TicksReceived, labels: dict[int, tuple[str, str]]
    ) -> None:
        ctx = self.ctx
        received = datetime.now(UTC)
        if event.errors:
            ctx.metrics.domain.labels(ctx.source, "zerodha_bad_packet", "parse").inc(
                len(event.errors)
            )
        for kite_tick in event.ticks:
            token = kite_tick.instrument_token
            if token not in labels:
                labels[token] = await self._label(token)
            symbol, exchange = labels[token]
            try:
                tick = market_tick(kite_tick, symbol=symbol, exchange=exchange, received=received)
            except ValidationError as exc:
                tick = None
                log.warning("feed_tick_refused", instrument_token=token, error=str(exc)[:300])
            if tick is None:
                self.skipped += 1
                ctx.metrics.domain.labels(ctx.source, "zerodha_tick_skipped", "no_price").inc()
                continue
            record = MARKET_TICKS.record(
                tick, event_id=new_event_id(), ts=tick.exchange_ts, source=ctx.source
            )
            await send_record(producer, record)
            ctx.metrics.produced.labels(ctx.source, MARKET_TICKS.name).inc()
            self.sent += 1


def install_zerodha_feed(ctx: StageContext) -> ZerodhaFeed:
    ctx.topic(MARKET_TICKS)
    feed = ZerodhaFeed(ctx)
    ConfigWatcher(ctx, feed.on_config).install()
    ctx.health_checks[BROKER] = feed.health
    ctx.app.task(feed.run)
    return feed
