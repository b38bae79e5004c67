"""KiteRestClient against the local Kite server: real HTTP on loopback, typed errors."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from alpha_panda.zerodha.errors import (
    DataException,
    GeneralException,
    InputException,
    NetworkException,
    OrderException,
    RateLimited,
    TokenException,
)
from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import (
    KiteRestClient,
    PlaceOrder,
    login_url,
    postback_checksum,
    session_checksum,
    verify_postback,
)
from tests.unit.zerodha.conftest import FixedClock

INFY = 408065
D = Decimal


def market(side: str = "BUY", quantity: int = 10, **kw: object) -> PlaceOrder:
    fields: dict[str, object] = {
        "tradingsymbol": "INFY",
        "exchange": "NSE",
        "transaction_type": side,
        "quantity": quantity,
        "product": "MIS",
        "order_type": "MARKET",
        "market_protection": D(2),
        "tag": "sig1",
    }
    fields.update(kw)
    return PlaceOrder.model_validate(fields)


def book(kite: FakeKite) -> None:
    kite.set_book(
        INFY,
        bids=[(D("1499.95"), 10), (D("1499.90"), 10)],
        asks=[(D("1500.05"), 4), (D("1500.10"), 5), (D("1500.15"), 6)],
    )


def test_checksum_is_hex_sha256_of_key_token_secret() -> None:
    # sha256("abc") is the FIPS 180-2 test vector.
    assert session_checksum("a", "b", "c") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert login_url("k1") == "https://kite.zerodha.com/connect/login?v=3&api_key=k1"


async def test_login_exchanges_a_request_token_once(
    kite: FakeKite, http: aiohttp.ClientSession
) -> None:
    client = KiteRestClient(
        http, root_url=kite.root_url, api_key=kite.api_key, access_token=dict().get
    )  # type: ignore[arg-type]
    async with http.get(kite.login_url, params={"v": "3", "api_key": kite.api_key}) as resp:
        request_token = (await resp.json())["data"]["request_token"]
    session = await client.create_session(request_token, kite.api_secret)
    assert session.user_id == "FK0001"
    assert session.access_token and session.access_token not in repr(session)
    assert session.login_time is not None and session.login_time.tzinfo is not None
    # Single use: the second exchange is refused.
    with pytest.raises(TokenException) as exc:
        await client.create_session(request_token, kite.api_secret)
    assert exc.value.status == 403


async def test_wrong_secret_fails_the_checksum_and_is_not_echoed(
    kite: FakeKite, http: aiohttp.ClientSession
) -> None:
    client = KiteRestClient(
        http, root_url=kite.root_url, api_key=kite.api_key, access_token=lambda: None
    )
    with pytest.raises(TokenException, match="checksum") as exc:
        await client.create_session(kite.issue_request_token(), "wrong-secret-xyz")
    assert "wrong-secret-xyz" not in str(exc.value)


async def test_no_token_fails_before_any_request(
    kite: FakeKite, http: aiohttp.ClientSession
) -> None:
    client = KiteRestClient(
        http, root_url=kite.root_url, api_key=kite.api_key, access_token=lambda: None
    )
    with pytest.raises(TokenException) as exc:
        await client.orders()
    assert exc.value.status is None and kite.rest_calls == 0


async def test_market_order_fills_across_levels_one_trade_each(
    kite: FakeKite, client: KiteRestClient
) -> None:
    book(kite)
    order_id = await client.place_order(market(quantity=12))
    assert isinstance(order_id, str) and order_id.isdigit() and len(order_id) <= 19
    trades = await client.order_trades(order_id)
    assert [(t.average_price, t.quantity) for t in trades] == [
        (D("1500.05"), 4),
        (D("1500.10"), 5),
        (D("1500.15"), 3),
    ]
    assert len({t.trade_id for t in trades}) == 3
    assert all(t.order_id == order_id and t.fill_timestamp for t in trades)
    (order,) = [o for o in await client.orders() if o.order_id == order_id]
    assert order.status == "COMPLETE" and order.filled_quantity == 12
    assert order.tag == "sig1" and order.market_protection == D(2)
    # (4*1500.05 + 5*1500.10 + 3*1500.15) / 12 = 1500.0958333.. -> 1500.0958
    assert order.average_price == D("1500.0958")
    history = await client.order_history(order_id)
    statuses = [h.status for h in history]
    assert statuses[:4] == ["PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN"]
    assert statuses[-1] == "COMPLETE"


async def test_market_order_bigger_than_the_book_stays_open_partially_filled(
    kite: FakeKite, client: KiteRestClient
) -> None:
    book(kite)
    order_id = await client.place_order(market(quantity=20))
    (order,) = await client.orders()
    assert order.status == "OPEN"
    assert (order.filled_quantity, order.pending_quantity) == (15, 5)
    # The next book fills the rest.
    kite.set_book(INFY, bids=[(D("1499.95"), 10)], asks=[(D("1500.20"), 50)])
    await kite.step()
    trades = await client.order_trades(order_id)
    assert [t.quantity for t in trades] == [4, 5, 6, 5]
    assert trades[-1].average_price == D("1500.20")
    (order,) = await client.orders()
    assert order.status == "COMPLETE"


async def test_ioc_remainder_is_cancelled(kite: FakeKite, client: KiteRestClient) -> None:
    book(kite)
    await client.place_order(market(quantity=20, validity="IOC"))
    (order,) = await client.orders()
    assert (order.status, order.filled_quantity, order.cancelled_quantity) == ("CANCELLED", 15, 5)


async def test_limit_order_fills_only_when_crossed(kite: FakeKite, client: KiteRestClient) -> None:
    book(kite)
    order_id = await client.place_order(
        market(order_type="LIMIT", price=D("1500.05"), quantity=6, market_protection=None)
    )
    # Only the 1500.05 level is at or under the limit.
    assert [t.quantity for t in await client.order_trades(order_id)] == [4]
    kite.set_book(INFY, bids=[(D("1499.00"), 1)], asks=[(D("1500.00"), 1), (D("1500.05"), 9)])
    await kite.step()
    trades = await client.order_trades(order_id)
    assert [(t.average_price, t.quantity) for t in trades][1:] == [
        (D("1500.00"), 1),
        (D("1500.05"), 1),
    ]
    assert (await client.orders())[0].status == "COMPLETE"


async def test_sell_takes_bids(kite: FakeKite, client: KiteRestClient) -> None:
    book(kite)
    order_id = await client.place_order(market(side="SELL", quantity=11))
    trades = await client.order_trades(order_id)
    assert [(t.average_price, t.quantity) for t in trades] == [
        (D("1499.95"), 10),
        (D("1499.90"), 1),
    ]


async def test_market_order_without_protection_is_refused(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    with pytest.raises(ValidationError, match="market_protection"):
        market(market_protection=None)
    # The server refuses it too (a client that skips the model).
    headers = {
        "X-Kite-Version": "3",
        "Authorization": f"token {kite.api_key}:{token_box['token']}",
    }
    form = {
        "tradingsymbol": "INFY",
        "exchange": "NSE",
        "transaction_type": "BUY",
        "quantity": "1",
        "product": "MIS",
        "order_type": "MARKET",
    }
    async with http.post(f"{kite.root_url}/orders/regular", data=form, headers=headers) as resp:
        assert resp.status == 400
        payload = await resp.json()
    assert payload["error_type"] == "InputException"
    assert "market protection" in payload["message"]
    assert kite.orders == {}


async def test_bad_inputs_are_typed_400s(kite: FakeKite, client: KiteRestClient) -> None:
    with pytest.raises(InputException, match="tradingsymbol"):
        await client.place_order(market(tradingsymbol="NOPE"))
    with pytest.raises(InputException, match="Tick size"):
        await client.place_order(
            market(order_type="LIMIT", price=D("1500.01"), market_protection=None)
        )
    with pytest.raises(OrderException):
        await client.order_trades("999")


async def test_reject_next_is_accepted_then_rejected(
    kite: FakeKite, client: KiteRestClient
) -> None:
    kite.reject_next("RMS: Margin Exceeds")
    order_id = await client.place_order(market())
    history = await client.order_history(order_id)
    assert history[-1].status == "REJECTED"
    assert history[-1].status_message == "RMS: Margin Exceeds"
    assert await client.order_trades(order_id) == []


async def test_fail_next_answers_500_then_429_then_recovers(
    kite: FakeKite, client: KiteRestClient
) -> None:
    kite.fail_next(1, 500)
    kite.fail_next(1, 429)
    with pytest.raises(GeneralException) as first:
        await client.orders()
    with pytest.raises(RateLimited) as second:
        await client.orders()
    assert (first.value.status, second.value.status) == (500, 429)
    assert first.value.retryable and second.value.retryable
    assert await client.orders() == []


async def test_eleventh_order_in_a_second_is_rate_limited(
    kite: FakeKite, client: KiteRestClient, mono: FixedClock
) -> None:
    kite.set_book(INFY, bids=[(D("1499.95"), 1000)], asks=[(D("1500.05"), 1000)])
    for _ in range(10):
        await client.place_order(market(quantity=1))
    with pytest.raises(RateLimited):
        await client.place_order(market(quantity=1))
    mono.now += 1.0
    await client.place_order(market(quantity=1))
    assert len(kite.orders) == 11


async def test_expired_token_is_a_token_exception_without_the_token(
    kite: FakeKite, client: KiteRestClient, token_box: dict[str, str | None]
) -> None:
    await kite.expire_tokens()
    with pytest.raises(TokenException) as exc:
        await client.orders()
    assert exc.value.status == 403
    assert str(token_box["token"]) not in str(exc.value)
    # A new token is read on the next call: no new client needed.
    token_box["token"] = kite.issue_token()
    assert await client.orders() == []


async def test_delay_past_the_timeout_is_a_network_exception(
    kite: FakeKite, http: aiohttp.ClientSession, token_box: dict[str, str | None]
) -> None:
    client = KiteRestClient(
        http,
        root_url=kite.root_url,
        api_key=kite.api_key,
        access_token=lambda: token_box["token"],
        timeout_s=0.05,
    )
    kite.delay_s = 0.3
    with pytest.raises(NetworkException) as exc:
        await client.orders()
    assert exc.value.status is None and exc.value.retryable


async def test_unreachable_server_is_a_network_exception(http: aiohttp.ClientSession) -> None:
    client = KiteRestClient(
        http, root_url="http://127.0.0.1:9", api_key="k", access_token=lambda: "secret-tok"
    )
    with pytest.raises(NetworkException) as exc:
        await client.orders()
    assert "secret-tok" not in str(exc.value)


async def test_instruments_master(client: KiteRestClient) -> None:
    instruments = await client.instruments()
    by_symbol = {i.tradingsymbol: i for i in instruments}
    infy = by_symbol["INFY"]
    assert (infy.instrument_token, infy.exchange_token) == (INFY, INFY >> 8)
    assert infy.tick_size == D("0.05") and infy.lot_size == 1 and infy.expiry is None
    assert by_symbol["NIFTY 50"].segment == "INDICES"
    assert {i.exchange for i in await client.instruments("NSE")} == {"NSE"}
    assert await client.instruments("BSE") == []


async def test_historical_candles(client: KiteRestClient) -> None:
    start = datetime(2026, 11, 27, 3, 45, tzinfo=UTC)  # 09:15 IST
    end = datetime(2026, 11, 27, 3, 49, tzinfo=UTC)
    candles = await client.historical(INFY, "minute", start, end)
    assert [c.timestamp for c in candles] == [
        datetime(2026, 11, 27, 3, 45 + i, tzinfo=UTC) for i in range(5)
    ]
    for candle in candles:
        assert isinstance(candle.close, Decimal)
        assert candle.low <= min(candle.open, candle.close)
        assert candle.high >= max(candle.open, candle.close)
    # Each bar opens where the previous closed, and the same request gives the same bars.
    assert all(b.open == a.close for a, b in itertools.pairwise(candles))
    assert await client.historical(INFY, "minute", start, end) == candles
    with pytest.raises(InputException, match="interval"):
        await client.historical(INFY, "2minute", start, end)


def test_place_order_form_is_fixed_point_text() -> None:
    order = market(order_type="LIMIT", price=D("1E+3"), market_protection=None, quantity=2)
    form = order.form()
    assert form["price"] == "1000" and form["quantity"] == "2"
    assert "trigger_price" not in form and "variety" not in form
    assert market().form()["market_protection"] == "2"


def test_place_order_model_checks() -> None:
    with pytest.raises(ValidationError, match="need a price"):
        market(order_type="LIMIT", market_protection=None)
    with pytest.raises(ValidationError, match="trigger_price"):
        market(order_type="SL-M")
    with pytest.raises(ValidationError, match="tag"):
        market(tag="has space")
    with pytest.raises(ValidationError, match="percent"):
        market(market_protection=D(101))
    with pytest.raises(ValidationError):
        market(quantity=0)


def test_postback_checksum() -> None:
    # hex sha256("12026-11-30 09:15:00s"), computed separately in a shell.
    expected = "9da172c89c7d4584c27a016a998acec08122ffca177881fb8b4fd2d481164219"
    assert postback_checksum("1", "2026-11-30 09:15:00", "s") == expected
    payload = {"order_id": "1", "order_timestamp": "2026-11-30 09:15:00", "checksum": expected}
    assert verify_postback(payload, "s")
    assert not verify_postback(payload, "other")
    assert not verify_postback({"order_id": "1"}, "s")


async def test_unexpected_response_shapes_are_data_exceptions(
    http: aiohttp.ClientSession,
) -> None:
    answers = {
        "/orders": {"status": "success", "data": [{"order_id": "1", "note": "tok-secret"}]},
        "/orders/1/trades": {"status": "success", "data": {"not": "a list"}},
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path in answers:
            return web.json_response(answers[request.path])
        return web.Response(text="<html>hello</html>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = KiteRestClient(
            http,
            root_url=f"http://127.0.0.1:{runner.addresses[0][1]}",
            api_key="k",
            access_token=lambda: "tok-secret",
        )
        with pytest.raises(DataException, match="KiteOrder") as exc:
            await client.orders()
        assert "tok-secret" not in str(exc.value) and "status" in str(exc.value)
        with pytest.raises(DataException):
            await client.order_trades("1")
        with pytest.raises(DataException, match="unreadable"):
            await client.order_history("1")
    finally:
        await runner.cleanup()


async def test_daily_order_limit_resets_on_the_next_ist_day(
    http: aiohttp.ClientSession, mono: FixedClock
) -> None:
    now = {"t": datetime(2026, 11, 30, 18, 0, tzinfo=UTC)}  # 23:30 IST
    async with FakeKite(
        tick_interval_s=None, monotonic=mono, clock=lambda: now["t"], orders_per_day=2
    ) as kite:
        token = kite.issue_token()
        client = KiteRestClient(
            http, root_url=kite.root_url, api_key=kite.api_key, access_token=lambda: token
        )
        kite.set_book(INFY, bids=[(D("1499.95"), 100)], asks=[(D("1500.05"), 100)])
        for _ in range(2):
            await client.place_order(market(quantity=1))
            mono.now += 1
        with pytest.raises(RateLimited, match="Daily"):
            await client.place_order(market(quantity=1))
        now["t"] = datetime(2026, 11, 30, 18, 31, tzinfo=UTC)  # 00:01 IST the next day
        await client.place_order(market(quantity=1))
        assert len(kite.orders) == 3


async def test_stop_orders_wait_for_their_trigger(kite: FakeKite, client: KiteRestClient) -> None:
    book(kite)  # last price 1499.95
    stop_loss = await client.place_order(
        market(side="SELL", quantity=3, order_type="SL-M", trigger_price=D("1490.00"))
    )
    stop_limit = await client.place_order(
        market(
            side="SELL",
            quantity=3,
            order_type="SL",
            trigger_price=D("1490.00"),
            price=D("1489.00"),
            market_protection=None,
        )
    )
    statuses = {o.order_id: o.status for o in await client.orders()}
    assert statuses == {stop_loss: "TRIGGER PENDING", stop_limit: "TRIGGER PENDING"}
    await kite.step()  # the pinned book has not moved: still pending
    assert {o.status for o in await client.orders()} == {"TRIGGER PENDING"}
    kite.set_book(INFY, bids=[(D("1489.50"), 4), (D("1488.00"), 10)], asks=[(D("1490.50"), 5)])
    await kite.step()
    # SL-M sells at market from the best bid; SL sells only at 1489.00 or better.
    assert [(t.average_price, t.quantity) for t in await client.order_trades(stop_loss)] == [
        (D("1489.50"), 3)
    ]
    assert [(t.average_price, t.quantity) for t in await client.order_trades(stop_limit)] == [
        (D("1489.50"), 1)
    ]
    statuses = {o.order_id: (o.status, o.filled_quantity) for o in await client.orders()}
    assert statuses == {stop_loss: ("COMPLETE", 3), stop_limit: ("OPEN", 1)}
