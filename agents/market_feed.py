"""Stage 1, market feed: publishes ticks to market.ticks, mock (default) or Kite's ticker.

Ticks carry the wall clock as exchange time: the feed stands in for the exchange, the one
place where outside time enters the pipeline. Everything downstream takes time from ticks.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog

from alpha_panda.admin import wait_for_topics
from alpha_panda.domain.random_walk import RandomWalkFeed, parse_instruments
from alpha_panda.domain.session_rules import feed_pause
from alpha_panda.feed_resume import last_published
from alpha_panda.market_calendar import NseCalendar
from alpha_panda.producer import send_record, start_producer
from alpha_panda.runtime import StageContext
from alpha_panda.topics import MARKET_TICKS
from alpha_panda.zerodha_feed import install_zerodha_feed
from models.envelope import new_event_id

log = structlog.get_logger(__name__)


class MarketFeed:
    """The mock feed (a seeded random walk); with ``feed.source=zerodha`` Kite's ticker
    (alpha_panda/zerodha_feed.py) publishes instead."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.settings = settings = ctx.settings.feed
        if settings.source == "zerodha":
            install_zerodha_feed(ctx)  # alpha_panda/zerodha_feed.py
            return
        self.instruments = parse_instruments(settings.instruments)
        self.feed = RandomWalkFeed(self.instruments, settings.seed, settings.volatility_bps)
        self.interval = 1.0 / settings.ticks_per_second
        # Outside NSE sessions the feed idles (ALPHA_PANDA_FEED_SESSIONS_ONLY=false: any hour).
        self.calendar = NseCalendar.default() if settings.sessions_only else None
        ctx.topic(MARKET_TICKS)
        ctx.app.task(self.publish_ticks)

    async def publish_ticks(self) -> None:
        ctx, settings, feed, calendar = self.ctx, self.settings, self.feed, self.calendar
        if not await wait_for_topics(
            ctx.settings, [MARKET_TICKS.name], should_stop=lambda: ctx.app.should_stop
        ):
            return
        producer = await start_producer(
            ctx.settings, client_id=f"{ctx.stage.consumer_group}", linger_ms=settings.linger_ms
        )
        # Continue the walk where the last run left it (alpha_panda/feed_resume.py).
        tokens = {i.token for i in self.instruments}
        try:
            last = await last_published(ctx.settings, tokens, source=ctx.source)
        except Exception as exc:  # the price band check downstream catches a big jump
            log.warning("market_feed_resume_failed", error=f"{type(exc).__name__}: {exc}")
            last = {}
        for token, previous in last.items():
            feed.resume(token, previous.price, previous.volume)
        if last:
            log.info("market_feed_resumed", prices={t: str(v.price) for t, v in last.items()})
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        sent = 0
        waiting = False
        log.info(
            "market_feed_started",
            topic=MARKET_TICKS.name,
            ticks_per_second=settings.ticks_per_second,
        )
        try:
            while not ctx.app.should_stop and not (
                settings.max_ticks and sent >= settings.max_ticks
            ):
                now = datetime.now(UTC)
                pause = feed_pause(calendar, now) if calendar is not None else 0.0
                if pause > 0:
                    if not waiting:
                        log.info("market_feed_waiting_for_session", now=now.isoformat())
                    waiting = True
                    await asyncio.sleep(pause)
                    next_at = loop.time()
                    continue
                waiting = False
                tick = feed.step(now)
                record = MARKET_TICKS.record(
                    tick, event_id=new_event_id(), ts=now, source=ctx.source
                )
                await send_record(producer, record)
                ctx.metrics.produced.labels(ctx.source, MARKET_TICKS.name).inc()
                sent += 1
                next_at += self.interval
                # Pacing to the configured rate; falls behind gracefully if the loop is slow.
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            await producer.flush()
            log.info("market_feed_finished", ticks_sent=sent)
        finally:
            # Flushed on shutdown: every tick handed to the producer reaches the broker.
            await producer.flush()
            await producer.stop()
            log.info("market_feed_stopped", ticks_sent=sent)
