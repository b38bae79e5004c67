"""The Zerodha trader against the local Kite server (real HTTP on loopback, no broker).

Covers placing, the tag that stops a restarted trader from placing twice, partial fills
across book levels, Kite's refusals with their message, 500s opening the breaker, 429s,
an expired token, manual orders that are counted and never booked, orders of ours that
the engine has no record of (an error, on /health), and the kill switch cancelling a
halted strategy's open orders at Kite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import aiohttp
import pytest

from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker
from alpha_panda.domain.live_orders import LiveOrder
from alpha_panda.kite_instruments import InstrumentsCache
from alpha_panda.zerodha.fake_server import FakeKite
from alpha_panda.zerodha.rest import KiteRestClient
from alpha_panda.zerodha_trader import Placed, RateLimiter, Refused, ZerodhaTrader
from models.events import ExecutionMode, OrderFill, RejectionReason, TradingSignal
from tests.factories import RELIANCE, T0
from tests.factories import live_signal as signal

pytestmark = pytest.mark.integration

D = Decimal


@dataclass
class Rig:
    kite: FakeKite
    http: aiohttp.ClientSession
    token: list[str | None]
    fills: list[OrderFill] = field(default_factory=list)
    rejections: list[tuple[LiveOrder, str]] = field(default_factory=list)
    cancellations: list[tuple[LiveOrder, str]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    now: datetime = T0 + timedelta(seconds=1)  # signals are a second old

    def trader(self, *, breaker: CircuitBreaker | None = None) -> ZerodhaTrader:
        rest = KiteRestClient(
            self.http,
            root_url=self.kite.root_url,
            api_key=self.kite.api_key,
            access_token=lambda: self.token[0],
        )

        async def send_fill(fill: OrderFill) -> None:
            await asyncio.sleep(0)  # a real send yields to the loop, as ctx.send does
            self.fills.append(fill)

        async def send_rejection(order: LiveOrder, detail: str) -> None:
            self.rejections.append((order, detail))

        async def send_cancelled(order: LiveOrder, detail: str) -> None:
            self.cancellations.append((order, detail))

        async def no_wait(_: float) -> None:
            return None

        return ZerodhaTrader(
            rest=rest,
            instruments=InstrumentsCache(rest),
            breaker=breaker or CircuitBreaker("zerodha-rest", failure_threshold=3),
            limiter=RateLimiter(10, 400),
            access_token=lambda: self.token[0],
            market_protection=-1,
            send_fill=send_fill,
            send_rejection=send_rejection,
            send_cancelled=send_cancelled,
            on_event=lambda e, d: self.events.append((e, d)),
            retry_sleep=no_wait,
            now=lambda: self.now,
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with FakeKite(port=0, tick_interval_s=None) as kite, aiohttp.ClientSession() as http:
        kite.set_book(
            RELIANCE,
            bids=[(D("1249.95"), 500)],
            asks=[(D("1250.00"), 60), (D("1250.05"), 30), (D("1250.10"), 500)],
        )
        yield Rig(kite, http, [kite.issue_token()])


async def test_a_market_order_fills_across_levels_one_fill_per_trade(rig: Rig) -> None:
    trader = rig.trader()
    outcome = await trader.submit("sig-1", signal(quantity=100), "MIS")
    assert isinstance(outcome, Placed) and not outcome.already_placed
    order_id = outcome.order.order_id
    kite_order = rig.kite.orders[order_id]
    assert (kite_order.order_type, kite_order.market_protection) == ("MARKET", D("-1"))
    assert kite_order.tag == outcome.order.tag

    await trader.poll()
    assert [(f.quantity, f.fill_price) for f in rig.fills] == [
        (60, D("1250.00")),
        (30, D("1250.05")),
        (10, D("1250.10")),
    ]
    trade_ids = [t["trade_id"] for t in rig.kite.trades[order_id]]
    assert [f.fill_id for f in rig.fills] == trade_ids
    assert {f.execution_mode for f in rig.fills} == {ExecutionMode.LIVE}
    assert sum(f.fee_breakdown.brokerage for f in rig.fills) == D("20.00")  # cap per order
    await trader.poll()  # nothing new: no fill twice
    assert len(rig.fills) == 3
    assert order_id in trader.finished_orders


async def test_order_updates_and_polls_together_send_each_trade_once(rig: Rig) -> None:
    """WebSocket order updates are the primary source, the poll the fallback after a
    reconnect: whichever sees a trade first, it becomes exactly one fill."""
    trader = rig.trader()
    outcome = await trader.submit("sig-ws", signal(quantity=70), "MIS")
    assert isinstance(outcome, Placed)
    order_id = outcome.order.order_id
    snapshot = rig.kite.orders[order_id].snapshot()
    # The listener and the poller run side by side: updates and a poll at once.
    await asyncio.gather(
        trader.on_order_update(snapshot), trader.on_order_update(snapshot), trader.poll()
    )
    await trader.on_order_update(snapshot)  # the same update again (a replayed frame)
    await trader.poll()  # the fallback after a reconnect
    trade_ids = [t["trade_id"] for t in rig.kite.trades[order_id]]
    assert len(trade_ids) >= 2
    assert [f.fill_id for f in rig.fills] == trade_ids
    assert sum(f.quantity for f in rig.fills) == 70


async def test_each_order_goes_to_kite_with_the_product_it_is_given_and_pays_its_fees(
    rig: Rig,
) -> None:
    trader = rig.trader()
    cnc = await trader.submit("sig-cnc", signal(quantity=10), "CNC")
    mis = await trader.submit("sig-mis", signal(quantity=10), "MIS")
    assert isinstance(cnc, Placed) and isinstance(mis, Placed)
    assert rig.kite.orders[cnc.order.order_id].product == "CNC"
    assert rig.kite.orders[mis.order.order_id].product == "MIS"
    assert (cnc.order.product, mis.order.product) == ("CNC", "MIS")
    await trader.poll()
    by_order = {f.order_id: f for f in rig.fills}
    # 10 x 1250.00 = 12500 each: delivery pays no brokerage and 0.1% STT on the buy (12.50);
    # intraday 0.03% brokerage (3.75) and no STT on a buy.
    delivery, intraday = by_order[cnc.order.order_id], by_order[mis.order.order_id]
    assert (delivery.fee_breakdown.brokerage, delivery.fee_breakdown.stt) == (D("0"), D("12.50"))
    assert (intraday.fee_breakdown.brokerage, intraday.fee_breakdown.stt) == (D("3.75"), D("0"))


async def test_an_order_found_placed_keeps_the_product_kite_has(rig: Rig) -> None:
    first = await rig.trader().submit("sig-was-cnc", signal(quantity=10), "CNC")
    assert isinstance(first, Placed)
    # Restarted after the strategy's product changed: the order at Kite is still CNC.
    again = await rig.trader().submit("sig-was-cnc", signal(quantity=10), "MIS")
    assert isinstance(again, Placed) and again.already_placed
    assert again.order.product == "CNC"
    assert len(rig.kite.orders) == 1


async def test_a_restarted_trader_finds_the_placed_order_by_its_tag(rig: Rig) -> None:
    first = await rig.trader().submit("sig-restart", signal(quantity=10), "MIS")
    assert isinstance(first, Placed)
    # A new process meets the same signal again (its offset was never committed).
    again = await rig.trader().submit("sig-restart", signal(quantity=10), "MIS")
    assert isinstance(again, Placed) and again.already_placed
    assert again.order.order_id == first.order.order_id
    assert len(rig.kite.orders) == 1  # no second order at Kite


async def test_a_stale_signal_is_refused_unless_its_order_was_already_placed(rig: Rig) -> None:
    first = await rig.trader().submit("sig-old", signal(quantity=1), "MIS")
    assert isinstance(first, Placed)
    rig.now = T0 + timedelta(seconds=61)
    stale = await rig.trader().submit("sig-new-but-late", signal(quantity=1), "MIS")
    assert isinstance(stale, Refused) and stale.reason is RejectionReason.BROKER_REJECTED
    assert stale.detail == ("zerodha: signal is 61s old (limit 60s): not placed at a stale price")
    # A restart long after placing still adopts the order it placed (found by its tag).
    again = await rig.trader().submit("sig-old", signal(quantity=1), "MIS")
    assert isinstance(again, Placed) and again.already_placed
    assert len(rig.kite.orders) == 1


async def test_kite_refusals_become_rejections_with_kites_message(rig: Rig) -> None:
    trader = rig.trader()
    # Refused at placing: a LIMIT price off the tick grid.
    off_tick = await trader.submit("sig-tick", signal(quantity=1, limit="1250.01"), "MIS")
    assert isinstance(off_tick, Refused)
    assert off_tick.reason is RejectionReason.BROKER_REJECTED
    assert off_tick.detail == (
        "zerodha: limit price 1250.01 is not a multiple of the tick size 0.05 of RELIANCE"
    )
    assert rig.kite.orders == {}  # refused before Kite: the instruments master has the tick
    # Refused by Kite at placing (an index is not orderable): Kite's own message.
    index = signal(quantity=1).model_copy(update={"instrument_token": 256265, "symbol": "NIFTY 50"})
    refused = await trader.submit("sig-index", index, "MIS")
    assert isinstance(refused, Refused)
    assert refused.reason is RejectionReason.BROKER_REJECTED
    assert refused.detail == "zerodha: InputException (HTTP 400): Invalid `tradingsymbol`."
    # Accepted, then rejected by the RMS/exchange: a rejection event with the message.
    rig.kite.reject_next("Insufficient funds. Required margin is 125000.00.")
    accepted = await trader.submit("sig-rms", signal(quantity=100), "MIS")
    assert isinstance(accepted, Placed)
    await trader.poll()
    assert [(o.signal_event_id, d) for o, d in rig.rejections] == [
        ("sig-rms", "zerodha: Insufficient funds. Required margin is 125000.00.")
    ]
    assert rig.fills == []


async def test_500s_open_the_breaker_and_orders_are_refused_with_a_reason(rig: Rig) -> None:
    breaker = CircuitBreaker("zerodha-rest", failure_threshold=2, reset_timeout_s=60)
    trader = rig.trader(breaker=breaker)
    rig.kite.fail_next(2, 500)  # the first GET /orders and its retry-less successor fail
    first = await trader.submit("sig-500a", signal(quantity=1), "MIS")
    assert isinstance(first, Refused) and first.reason is RejectionReason.BROKER_UNAVAILABLE
    second = await trader.submit("sig-500b", signal(quantity=1), "MIS")
    assert isinstance(second, Refused) and second.reason is RejectionReason.BROKER_UNAVAILABLE
    assert breaker.state is BreakerState.OPEN
    calls = rig.kite.rest_calls
    third = await trader.submit("sig-500c", signal(quantity=1), "MIS")
    assert isinstance(third, Refused) and "circuit" in third.detail
    assert rig.kite.rest_calls == calls  # open: Kite is not called at all
    assert rig.kite.orders == {}
    ok, detail = trader.health()
    assert not ok and "circuit open" in detail


async def test_a_429_is_retried_and_the_order_placed_once(rig: Rig) -> None:
    trader = rig.trader()
    await trader.submit("warm-up", signal(quantity=1), "MIS")  # lists orders and instruments first
    rig.kite.fail_next(1, 429)
    outcome = await trader.submit("sig-429", signal(quantity=1), "MIS")
    assert isinstance(outcome, Placed)
    assert ("rate_limited", "429") in rig.events
    assert sum(1 for o in rig.kite.orders.values() if o.tag == outcome.order.tag) == 1


async def test_an_expired_token_stops_trading_until_a_new_one_arrives(rig: Rig) -> None:
    trader = rig.trader()
    await rig.kite.expire_tokens()
    refused = await trader.submit("sig-exp", signal(quantity=1), "MIS")
    assert isinstance(refused, Refused)
    assert refused.detail == "zerodha: token expired; log in"
    ok, detail = trader.health()
    assert not ok and detail == "zerodha: token expired"
    calls = rig.kite.rest_calls
    assert isinstance(await trader.submit("sig-exp2", signal(quantity=1), "MIS"), Refused)
    assert rig.kite.rest_calls == calls  # the refused token is not tried again
    rig.token[0] = rig.kite.issue_token()  # a new login
    placed = await trader.submit("sig-exp3", signal(quantity=1), "MIS")
    assert isinstance(placed, Placed)
    assert trader.health()[0]


async def test_manual_orders_are_counted_once_and_never_booked(rig: Rig) -> None:
    trader = rig.trader()
    await trader.submit("sig-own", signal(quantity=10), "MIS")
    manual = await rig.kite.place_manual_order("RELIANCE", "BUY", 5)
    await trader.poll()
    await trader.poll()
    assert [e for e in rig.events if e[0] == "manual_order"] == [("manual_order", "COMPLETE")]
    assert all(f.order_id != manual for f in rig.fills)
    assert {f.signal_event_id for f in rig.fills} == {"sig-own"}


async def test_an_order_of_ours_the_engine_has_no_record_of_is_an_error_until_claimed(
    rig: Rig,
) -> None:
    placed = await rig.trader().submit("sig-lost", signal(quantity=10), "MIS")
    assert isinstance(placed, Placed)
    # A trader whose record of that order is gone (a log rolled back by a crash).
    forgetful = rig.trader()
    await forgetful.poll()
    assert forgetful.health()[0]  # one poll's grace: its signal may be redelivered yet
    await forgetful.poll()
    await forgetful.poll()
    assert forgetful.unknown_orders == {placed.order.order_id}
    assert [e for e in rig.events if e[0] == "unknown_order"] == [("unknown_order", "COMPLETE")]
    ok, detail = forgetful.health()
    assert not ok and placed.order.order_id in detail and "not booked" in detail
    # Its signal comes back (redelivered): the order is claimed, and the error clears.
    again = await forgetful.submit("sig-lost", signal(quantity=10), "MIS")
    assert isinstance(again, Placed) and again.already_placed
    await forgetful.poll()
    assert forgetful.unknown_orders == set() and forgetful.health()[0]


async def test_the_kill_switch_cancels_a_halted_strategys_open_orders_at_kite(
    rig: Rig,
) -> None:
    trader = rig.trader()
    # LIMIT orders below the ask: they rest OPEN at Kite.
    halted = await trader.submit("sig-h", signal(quantity=10, limit="1200.00"), "MIS")
    calm = await trader.submit(
        "sig-c", signal(quantity=10, limit="1200.00", strategy_id="calm"), "MIS"
    )
    assert isinstance(halted, Placed) and isinstance(calm, Placed)
    await trader.poll()
    assert rig.kite.orders[halted.order.order_id].status == "OPEN"

    def reason(sig: TradingSignal) -> str | None:
        return None if sig.strategy_id == "calm" else "strategy halted: cancelled"

    assert await trader.cancel_halted(reason) == [halted.order.order_id]
    kite_order = rig.kite.orders[halted.order.order_id]
    assert (kite_order.status, kite_order.cancelled_quantity) == ("CANCELLED", 10)
    assert rig.kite.orders[calm.order.order_id].status == "OPEN"
    assert [(o.order_id, d) for o, d in rig.cancellations] == [
        (halted.order.order_id, f"strategy halted: cancelled (Kite order {halted.order.order_id})")
    ]
    await trader.poll()
    assert halted.order.order_id in trader.finished_orders
    # Once over, it is never cancelled again; the breaker saw no failure.
    assert await trader.cancel_halted(reason) == []
    assert len(rig.cancellations) == 1 and trader.breaker.state is BreakerState.CLOSED


async def test_cancelling_an_order_already_complete_is_refused_by_kite(rig: Rig) -> None:
    trader = rig.trader()
    done = await trader.submit("sig-done", signal(quantity=10), "MIS")
    assert isinstance(done, Placed)
    # Not yet seen finished by this trader: it asks, Kite refuses (400), nothing is reported.
    assert await trader.cancel_halted(lambda sig: "halted") == []
    assert rig.cancellations == [] and trader.breaker.state is BreakerState.CLOSED
    assert rig.kite.orders[done.order.order_id].status == "COMPLETE"


async def test_the_rate_limiter_queues_beyond_ten_a_second() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10, 400, clock=lambda: now[0], sleep=sleep)
    for _ in range(25):
        await limiter.acquire()
    # 10 at t=0, 10 at t=1, 5 at t=2: two waits of one second each.
    assert waits == [1.0, 1.0]
    assert now[0] == 2.0
    # 400 a minute: the 401st waits for the first one's minute to pass.
    now[0], waits[:] = 0.0, []
    limiter = RateLimiter(1000, 400, clock=lambda: now[0], sleep=sleep)
    for _ in range(401):
        await limiter.acquire()
    assert waits == [60.0]


async def test_the_rate_limiter_serves_waiters_in_order() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)  # let the other waiters run meanwhile

    limiter = RateLimiter(1, 400, clock=lambda: now[0], sleep=sleep)
    order: list[int] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(4)))
    assert order == [0, 1, 2, 3]
    assert now[0] == 3.0
