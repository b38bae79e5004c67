"""KiteTicker against the local Kite server (real WebSocket on loopback).

Every wait is on an event the client yields, bounded by a timeout; the server's walk is off
and each test moves the market with `await kite.step()`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest
import structlog
from aiohttp import web

from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import KiteOrder, KiteRestClient, PlaceOrder
from alpha_panda.zerodha.ticker import (
    Backoff,
    Connected,
    HeartbeatReceived,
    KiteTicker,
    OrderUpdateReceived,
    Reconnected,
    TickerEvent,
    TicksReceived,
    TokenRejected,
)
from alpha_panda.zerodha.ticker_protocol import DepthLevel, KiteTick, TickMode

INFY, TCS, NIFTY = 408065, 2953217, 256265
D = Decimal


async def next_event(
    events: AsyncIterator[TickerEvent], kind: type[TickerEvent], timeout: float = 5.0
) -> TickerEvent:
    """The next event of `kind`, skipping others (heartbeats, unrelated ticks)."""
    async with asyncio.timeout(timeout):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("ticker stopped")


async def next_full_tick(events: AsyncIterator[TickerEvent], token: int) -> KiteTick:
    """The next FULL tick of `token` (a fresh subscription first gets a quote, as on Kite)."""
    while True:
        event = await next_event(events, TicksReceived)
        assert isinstance(event, TicksReceived)
        for tick in event.ticks:
            if tick.instrument_token == token and tick.mode is TickMode.FULL:
                return tick


def make_ticker(
    http: aiohttp.ClientSession,
    kite: FakeKite,
    token_box: dict[str, str | None],
    **kw: object,
) -> KiteTicker:
    options: dict[str, object] = {
        "backoff": Backoff(initial_s=0.01, max_s=0.05),
        "token_poll_s": 30.0,
        "watchdog_s": 5.0,
    }
    options.update(kw)
    return KiteTicker(
        http,
        ws_url=kite.ws_url,
        api_key=kite.api_key,
        access_token=lambda: token_box["token"],
        **options,  # type: ignore[arg-type]
    )


async def test_subscribe_gets_full_ticks_with_depth(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    kite.set_book(INFY, bids=[(D("1499.95"), 7)], asks=[(D("1500.05"), 3), (D("1500.10"), 9)])
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([INFY], TickMode.FULL)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        tick = await next_full_tick(events, INFY)
        assert tick.bids == (DepthLevel(7, D("1499.95"), 1),)
        assert tick.asks == (DepthLevel(3, D("1500.05"), 1), DepthLevel(9, D("1500.10"), 1))
        assert tick.last_price == D("1499.95")
        assert tick.exchange_timestamp is not None and tick.exchange_timestamp.tzinfo
        assert kite.subscriptions() == [{INFY: TickMode.FULL}]
    finally:
        await events.aclose()


async def test_every_mode_in_one_frame(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([INFY], TickMode.LTP)
    await ticker.subscribe([TCS], TickMode.QUOTE)
    await ticker.subscribe([NIFTY], TickMode.FULL)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        # Wait until the server holds all three in their modes, then move the market once.
        while kite.subscriptions() != [
            {INFY: TickMode.LTP, TCS: TickMode.QUOTE, NIFTY: TickMode.FULL}
        ]:
            await next_event(events, TicksReceived)
        await kite.step()
        # Frames pushed while the subscription settled may still be queued: skip to the
        # stepped frame, the first with all three instruments in their final modes.
        expected = {INFY: TickMode.LTP, TCS: TickMode.QUOTE, NIFTY: TickMode.FULL}
        while True:
            event = await next_event(events, TicksReceived)
            assert isinstance(event, TicksReceived)
            if {t.instrument_token: t.mode for t in event.ticks} == expected:
                break
        assert [len(t.bids) for t in event.ticks] == [0, 0, 0]
        by_token = {t.instrument_token: t for t in event.ticks}
        assert by_token[TCS].volume is not None and by_token[TCS].bids == ()
        assert by_token[NIFTY].tradable is False and by_token[NIFTY].exchange_timestamp
        assert event.errors == [] and ticker.stats.parse_errors == 0
    finally:
        await events.aclose()


async def test_heartbeats_are_counted(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box, yield_heartbeats=True)
    events = ticker.run()
    try:
        await next_event(events, HeartbeatReceived)
        await next_event(events, HeartbeatReceived)
        assert ticker.stats.heartbeats >= 2 and ticker.stats.ticks == 0
    finally:
        await events.aclose()


async def test_order_updates_arrive_as_text_frames(
    kite: FakeKite,
    http: aiohttp.ClientSession,
    token_box: dict[str, str | None],
    client: KiteRestClient,
) -> None:
    kite.set_book(INFY, bids=[(D("1499.95"), 7)], asks=[(D("1500.05"), 3), (D("1500.10"), 9)])
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([TCS], TickMode.LTP)
    events = ticker.run()
    try:
        # A tick proves the server has registered this connection for the user's updates.
        await next_event(events, TicksReceived)
        order = PlaceOrder(
            tradingsymbol="INFY",
            exchange="NSE",
            transaction_type="BUY",
            quantity=5,
            product="MIS",
            order_type="MARKET",
            market_protection=D(2),
            tag="abc",
        )
        order_id = await client.place_order(order)
        updates = []
        while not updates or updates[-1]["status"] != "COMPLETE":
            event = await next_event(events, OrderUpdateReceived)
            assert isinstance(event, OrderUpdateReceived)
            updates.append(event.order)
        assert {u["order_id"] for u in updates} == {order_id}
        # OPEN, then one update per level touched: a partial fill then the completion.
        assert [(u["status"], u["filled_quantity"]) for u in updates] == [
            ("OPEN", 0),
            ("OPEN", 3),
            ("COMPLETE", 5),
        ]
        assert updates[-1]["tag"] == "abc"
        # An update reads as the same model as GET /orders, with exact prices.
        final = KiteOrder.model_validate(updates[-1])
        assert (final.status, final.filled_quantity, final.tag) == ("COMPLETE", 5, "abc")
        # (3 * 1500.05 + 2 * 1500.10) / 5 = 1500.07
        assert final.average_price == D("1500.07")
        assert final.order_timestamp is not None and final.order_timestamp.tzinfo is not None
        assert ticker.stats.order_updates == 3
    finally:
        await events.aclose()


async def test_drop_reconnects_and_resubscribes(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([INFY, TCS], TickMode.FULL)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        await next_event(events, TicksReceived)
        assert await kite.drop_connections() == 1
        reconnected = await next_event(events, Reconnected)
        assert isinstance(reconnected, Reconnected) and "closed" in reconnected.reason
        # The new connection got every subscription again and ticks flow.
        event = await next_event(events, TicksReceived)
        assert isinstance(event, TicksReceived)
        assert {t.instrument_token for t in event.ticks} == {INFY, TCS}
        assert kite.subscriptions() == [{INFY: TickMode.FULL, TCS: TickMode.FULL}]
        assert ticker.stats.reconnects == 1 and ticker.stats.connects == 2
    finally:
        await events.aclose()


async def test_subscribe_while_connected_is_sent_at_once(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        await ticker.subscribe([TCS], TickMode.QUOTE)
        event = await next_event(events, TicksReceived)
        assert isinstance(event, TicksReceived)
        assert [(t.instrument_token, t.mode) for t in event.ticks] == [(TCS, TickMode.QUOTE)]
        await ticker.unsubscribe([TCS])
        assert ticker.subscriptions == {}
    finally:
        await events.aclose()


async def test_403_stops_retrying_until_the_token_changes(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    token_box["token"] = "not-a-live-token"
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([INFY], TickMode.FULL)
    events = ticker.run()
    try:
        assert isinstance(await next_event(events, TokenRejected), TokenRejected)
        assert ticker.stats.token_rejected and kite.rejected_upgrades == 1
        # A new token: the client is woken and connects with its subscriptions.
        token_box["token"] = kite.issue_token()
        ticker.token_changed()
        await next_event(events, Connected)
        await next_event(events, TicksReceived)
        assert not ticker.stats.token_rejected
        # It tried the bad token once, not in a loop.
        assert kite.rejected_upgrades == 1 and ticker.stats.token_rejections == 1
    finally:
        await events.aclose()


async def test_token_expiring_mid_run_then_a_new_login(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe([INFY], TickMode.FULL)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        await kite.expire_tokens()
        await next_event(events, TokenRejected)
        token_box["token"] = kite.issue_token()
        ticker.token_changed()
        await next_event(events, Reconnected)
        event = await next_event(events, TicksReceived)
        assert isinstance(event, TicksReceived) and event.ticks[0].instrument_token == INFY
        assert kite.rejected_upgrades == 1
    finally:
        await events.aclose()


async def test_watchdog_reconnects_a_silent_connection(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeKite(tick_interval_s=None, heartbeat_interval_s=3600) as kite:
        box: dict[str, str | None] = {"token": kite.issue_token()}
        ticker = make_ticker(http, kite, box, watchdog_s=0.2)
        events = ticker.run()
        try:
            await next_event(events, Connected)
            await next_event(events, Reconnected)
            assert ticker.stats.watchdog_timeouts == 1
        finally:
            await events.aclose()


async def test_bad_packets_are_counted_and_the_feed_goes_on(
    http: aiohttp.ClientSession,
) -> None:
    """A server sending a packet of an unknown length between two good ones."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        good = struct.pack(">Ii", INFY, 150025)
        frame = struct.pack(">H", 3)
        for packet in (good, b"\x00" * 13, good):
            frame += struct.pack(">H", len(packet)) + packet
        await ws.send_bytes(frame)
        await ws.send_bytes(struct.pack(">HH", 2, 8) + good)  # claims 2 packets, has 1
        await ws.send_bytes(struct.pack(">Hhi", 1, 8, 150030) + struct.pack(">I", INFY))
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ticker = KiteTicker(
        http, ws_url=f"ws://127.0.0.1:{port}/", api_key="k", access_token=lambda: "t"
    )
    events = ticker.run()
    try:
        await next_event(events, Connected)
        first = await next_event(events, TicksReceived)
        second = await next_event(events, TicksReceived)
        third = await next_event(events, TicksReceived)
        assert isinstance(first, TicksReceived) and isinstance(second, TicksReceived)
        assert isinstance(third, TicksReceived)
        assert [t.last_price for t in first.ticks] == [D("1500.25"), D("1500.25")]
        assert [e.reason for e in first.errors] == ["unknown packet length 13"]
        assert len(second.ticks) == 1 and "missing" in second.errors[0].reason
        assert len(third.ticks) == 1
        assert ticker.stats.parse_errors == 2 and ticker.stats.ticks == 4
    finally:
        await events.aclose()
        await runner.cleanup()


async def test_connection_failures_back_off_exponentially_up_to_the_cap(
    http: aiohttp.ClientSession,
) -> None:
    ticker: KiteTicker

    async def fake_sleep(delay: float) -> None:
        if len(backoff.delays) >= 5:
            await ticker.close()

    backoff = Backoff(initial_s=0.5, max_s=3.0, sleep=fake_sleep)
    ticker = KiteTicker(
        http,
        ws_url="ws://127.0.0.1:9/",
        api_key="k",
        access_token=lambda: "t",
        backoff=backoff,
    )
    async with asyncio.timeout(5):
        events = [e async for e in ticker.run()]
    assert events == []
    assert backoff.delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)


async def test_more_than_3000_instruments_is_refused(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box)
    await ticker.subscribe(range(1, 3001))
    with pytest.raises(ValueError, match="3000"):
        await ticker.subscribe([999_999])
    assert len(ticker.subscriptions) == 3000


async def test_logs_never_carry_the_access_token(http: aiohttp.ClientSession) -> None:
    """Refused upgrades (403, 500) and refused connections: the token is in no log event."""
    secret = "tok-SECRET-123"
    statuses = iter([500, 403])

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "error"}, status=next(statuses))

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with structlog.testing.capture_logs() as logs:
            ticker = KiteTicker(
                http,
                ws_url=f"ws://127.0.0.1:{port}/",
                api_key="k",
                access_token=lambda: secret,
                backoff=Backoff(initial_s=0.01, max_s=0.01),
            )
            events = ticker.run()
            await next_event(events, TokenRejected)
            await events.aclose()

            async def stop_after_two(delay: float) -> None:
                if len(refused.backoff.delays) >= 2:
                    await refused.close()

            refused = KiteTicker(
                http,
                ws_url="ws://127.0.0.1:9/",
                api_key="k",
                access_token=lambda: secret,
                backoff=Backoff(initial_s=0.01, max_s=0.01, sleep=stop_after_two),
            )
            async with asyncio.timeout(5):
                assert [e async for e in refused.run()] == []
    finally:
        await runner.cleanup()
    events_seen = {entry["event"] for entry in logs}
    assert {"kite_ticker.connect_failed", "kite_ticker.token_rejected"} <= events_seen
    assert secret not in repr(logs)


async def test_stalled_link_trips_the_watchdog_and_the_feed_resumes(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    ticker = make_ticker(http, kite, token_box, watchdog_s=0.3)
    await ticker.subscribe([INFY], TickMode.FULL)
    events = ticker.run()
    try:
        await next_event(events, Connected)
        await next_full_tick(events, INFY)
        seen_at = ticker.stats.last_frame_at
        assert seen_at is not None
        kite.stall()  # the connection stays open but goes silent, heartbeats included
        reconnected = await next_event(events, Reconnected)
        assert isinstance(reconnected, Reconnected)
        assert ticker.stats.watchdog_timeouts >= 1
        kite.stall(False)
        await kite.step()
        tick = await next_full_tick(events, INFY)
        assert tick.instrument_token == INFY
        assert ticker.stats.last_frame_at is not None and ticker.stats.last_frame_at > seen_at
    finally:
        await events.aclose()


async def test_three_connections_per_key_survive_a_drop_and_a_fourth_is_refused(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    tickers = [make_ticker(http, kite, token_box) for _ in range(3)]
    for ticker in tickers:
        await ticker.subscribe([INFY], TickMode.LTP)
    streams = [t.run() for t in tickers]
    try:
        for stream in streams:
            await next_event(stream, TicksReceived)
        assert kite.connection_count == 3
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                f"{kite.ws_url}?api_key={kite.api_key}&access_token={token_box['token']}"
            )
        assert refused.value.status == 429
        await kite.drop_connections()
        for stream in streams:
            await next_event(stream, Reconnected)
            await next_event(stream, TicksReceived)
        assert kite.connection_count == 3
        assert all(t.stats.reconnects == 1 for t in tickers)
    finally:
        for stream in streams:
            await stream.aclose()
