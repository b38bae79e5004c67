"""Read API logic (formatting, valuation bodies, Redis/tables reads) without a server.

The data here is shared with test_http.py, test_summary.py, test_ownership.py and
tests/integration/test_api.py (which serves the same portfolio from a real worker).

Strategy ``mom`` starts with 1,000,000.00 and trades RELIANCE (738561):

| fill | side | qty | price   | fees  | cash after    | position          |
|------|------|-----|---------|-------|---------------|-------------------|
| f1   | BUY  | 10  | 2900.00 | 12.50 | 970,987.50    | 10 @ 2900         |
| f2   | BUY  | 5   | 2910.00 | 6.25  | 956,431.25    | 15 @ 43550/15     |
| f3   | SELL | 6   | 2920.00 | 8.00  | 973,943.25    | 9 @ 2903.3333...  |

f3 realises (2920 - 2903.3333...) * 6 = 100.00. Marked at 2901.35 the 9 shares are worth
26,112.15 with unrealised (2901.35 - 2903.3333...) * 9 = -17.85, so equity is
1,000,055.40 and net P&L 55.40 (= 100.00 - 17.85 - 26.75 fees).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from alpha_panda.circuit_breaker import CircuitBreaker
from alpha_panda.domain.session_rules import SQUARE_OFF_REASON
from alpha_panda.mirror import MirrorKeys, MirrorSources, RedisMirror
from models.events import OrderFill, Side
from tables.portfolio import Portfolio
from tests.factories import RELIANCE, T0, TCS, fill
from web.api import (
    PortfolioReader,
    ReadApi,
    ReadModel,
    check_strategy_id,
    merge_rejections,
    money,
    parse_limit,
)
from web.auth import ApiError

EXPECTED_MOM = {
    "strategy_id": "mom",
    "cash": "973943.25",
    "equity": "1000055.40",
    "market_value": "26112.15",
    "realised_pnl": "100.00",
    "unrealised_pnl": "-17.85",
    "net_pnl": "55.40",
    "fees_paid": "26.75",
    "trade_count": 3,
    "starting_cash": "1000000.00",
    "positions_count": 1,
}


MOM_FILLS = [
    fill("f1", Side.BUY, 10, "2900.00", "12.50", strategy_id="mom", second=1),
    fill("f2", Side.BUY, 5, "2910.00", "6.25", strategy_id="mom", second=2),
    fill("f3", Side.SELL, 6, "2920.00", "8.00", strategy_id="mom", second=3),
]


def book(fills: list[OrderFill], strategy_id: str = "mom") -> Portfolio:
    portfolio = Portfolio.new(strategy_id, Decimal("1000000"))
    for f in fills:
        updated = portfolio.apply_fill(f)
        assert updated is not None
        portfolio = updated
    return portfolio


def price_entry(price: str, symbol: str = "RELIANCE") -> dict[str, Any]:
    return {"price": price, "symbol": symbol, "ts": T0.isoformat()}


def rejection(
    event_id: str, strategy_id: str, ts: str, reason: str = "max_order_quantity"
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "signal_event_id": f"sig-{event_id}",
        "signal": {
            "strategy_id": strategy_id,
            "instrument_token": RELIANCE,
            "symbol": "RELIANCE",
            "side": "BUY",
            "quantity": 5000,
            "order_type": "MARKET",
            "limit_price": None,
            "reference_price": "2901.3",
            "execution_mode": "paper",
            "signal_ts": ts,
            "reason": "test",
        },
        "reason": reason,
        "detail": f"quantity 5000 > 1000 ({event_id})",
        "rejected_by": "risk-manager",
        "rejected_ts": ts,
    }


def tables_with_mom() -> dict[str, dict[str, Any]]:
    return {
        "portfolios": {"mom": book(MOM_FILLS).to_json_dict()},
        "recent_fills": {"mom": [f.model_dump(mode="json") for f in reversed(MOM_FILLS)]},
        "last_prices": {str(RELIANCE): price_entry("2901.35")},
        "recent_rejections": {
            f"mom:{RELIANCE}": [rejection("r2", "mom", "2026-03-02T04:00:02Z")],
            f"other:{RELIANCE}": [rejection("r1", "other", "2026-03-02T04:00:01.500000Z")],
        },
    }


def mirror(
    breaker: CircuitBreaker | None = None,
    prefix: str = "ap",
    all_keys: Callable[[], tuple[list[str], list[str], list[str]]] | None = None,
) -> RedisMirror:
    """A mirror over no tables (``all_keys`` for a resync: portfolios, tokens, rejections)."""
    return RedisMirror(
        url="redis://fake",
        keys=MirrorKeys(prefix),
        sources=MirrorSources(
            portfolio=lambda _: None,
            fills=lambda _: None,
            price=lambda _: None,
            rejections=lambda _: None,
            equity=lambda _: None,
            all_keys=all_keys,
        ),
        breaker=breaker or CircuitBreaker("test", failure_threshold=2, reset_timeout_s=60),
    )


class FakeRedis:
    """The few async redis calls the reader makes, over plain dicts (decoded strings)."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}
        self.sets: dict[str, set[str]] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.calls = 0
        self.fail: Exception | None = None

    def _call(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail

    async def exists(self, key: str) -> int:
        self._call()
        return int(key in self.strings)

    async def smembers(self, key: str) -> set[str]:
        self._call()
        return set(self.sets.get(key, set()))

    async def mget(self, keys: list[str]) -> list[str | None]:
        self._call()
        return [self.strings.get(k) for k in keys]

    async def get(self, key: str) -> str | None:
        self._call()
        return self.strings.get(key)

    async def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        self._call()
        return [self.hashes.get(key, {}).get(f) for f in fields]

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        self._call()
        return self.lists.get(key, [])[start : stop + 1]

    async def aclose(self) -> None:
        pass


def populate(redis: FakeRedis, keys: MirrorKeys, tables: dict[str, dict[str, Any]]) -> None:
    """What the mirror's flusher would have written for ``tables``."""
    redis.strings[keys.updated] = T0.isoformat()
    redis.sets[keys.portfolios] = set(tables["portfolios"])
    for sid, snapshot in tables["portfolios"].items():
        redis.strings[keys.portfolio(sid)] = json.dumps(snapshot)
        redis.strings[keys.fills(sid)] = json.dumps(tables["recent_fills"].get(sid, []))
    redis.hashes[keys.prices] = {t: json.dumps(v) for t, v in tables["last_prices"].items()}
    redis.sets[keys.rejection_index] = set(tables["recent_rejections"])
    for key, entries in tables["recent_rejections"].items():
        redis.strings[keys.rejections(key)] = json.dumps(entries)


def model(tables: dict[str, dict[str, Any]]) -> ReadModel:
    return ReadModel(
        portfolios=tables["portfolios"],
        recent_fills=tables["recent_fills"],
        last_prices=tables["last_prices"],
        recent_rejections=tables["recent_rejections"],
    )


def without_source(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k in EXPECTED_MOM}


# -- formatting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1", "1.00"),
        ("2.345", "2.35"),  # half-up, not banker's rounding
        ("2.355", "2.36"),
        ("-2.345", "-2.35"),
        ("-0.004", "0.00"),  # never "-0.00"
        ("0.005", "0.01"),
        ("1000000", "1000000.00"),
        ("1E+3", "1000.00"),  # no exponent in the output
        ("-17.849999999999999999999999997", "-17.85"),
        ("123456789012.344999", "123456789012.34"),
    ],
)
def test_money_is_quantised_to_paise(value: str, text: str) -> None:
    assert money(Decimal(value)) == text


@pytest.mark.parametrize("raw", ["1", "50", "500"])
def test_limit_accepts_1_to_500(raw: str) -> None:
    assert parse_limit(raw, 7) == int(raw)


@pytest.mark.parametrize(
    "raw", ["0", "501", "-1", "abc", "1.5", " 5", "5 ", "", "+5", "1e2", "9" * 50]
)
def test_limit_refuses_everything_else_with_400(raw: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_limit(raw, 7)
    assert (err.value.status, err.value.code) == (400, "bad_request")


def test_limit_defaults_when_absent() -> None:
    assert parse_limit(None, 7) == 7


def test_strategy_id_check() -> None:
    assert check_strategy_id("momentum-nifty_1.x") == "momentum-nifty_1.x"
    for bad in ["", "a b", "a/b", "x" * 65, "mom:1", None]:
        with pytest.raises(ApiError):
            check_strategy_id(bad)


def test_rejections_merge_newest_first_by_time_not_text() -> None:
    lists = [
        [
            rejection("a", "s1", "2026-03-02T04:00:00Z"),
            rejection("c", "s1", "2026-03-02T03:00:00Z"),
        ],
        # as text "...:00.500000Z" < "...:00Z", but it is half a second later
        [rejection("b", "s2", "2026-03-02T04:00:00.500000Z")],
        [{"event_id": "broken"}],  # skipped, not a 500
    ]
    rows = merge_rejections(lists, limit=10)
    assert [r["event_id"] for r in rows] == ["b", "a", "c"]
    assert rows[0] == {
        "event_id": "b",
        "signal_event_id": "sig-b",
        "strategy_id": "s2",
        "instrument_token": RELIANCE,
        "symbol": "RELIANCE",
        "side": "BUY",
        "quantity": 5000,
        "reference_price": "2901.30",
        "reason": "max_order_quantity",
        "detail": "quantity 5000 > 1000 (b)",
        "rejected_by": "risk-manager",
        "rejected_ts": "2026-03-02T04:00:00.500000Z",
    }
    assert [r["event_id"] for r in merge_rejections(lists, limit=2)] == ["b", "a"]


# -- bodies from the tables ------------------------------------------------------------


async def test_portfolio_list_from_tables_matches_the_hand_computed_numbers() -> None:
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None))
    body = await api.portfolios()

    assert len(body["portfolios"]) == 1
    row = body["portfolios"][0]
    assert without_source(row) == EXPECTED_MOM
    assert row["source"] == "tables"
    assert row["last_fill_ts"] == "2026-03-02T04:00:03+00:00"


async def test_portfolio_detail_lists_positions_with_marks() -> None:
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None))
    body = await api.portfolio("mom")

    assert without_source(body) == EXPECTED_MOM
    assert body["positions"] == [
        {
            "instrument_token": RELIANCE,
            "symbol": "RELIANCE",
            "quantity": 9,
            "avg_price": "2903.33",
            "last_price": "2901.35",
            "priced": True,
            "market_value": "26112.15",
            "unrealised_pnl": "-17.85",
            "realised_pnl": "100.00",
        }
    ]


async def test_unpriced_and_flat_positions() -> None:
    tables = tables_with_mom()
    tcs = [
        fill("t1", Side.BUY, 2, "3900", "1.00", strategy_id="mom", token=TCS),
        fill("t2", Side.SELL, 2, "3950", "1.00", strategy_id="mom", token=TCS),
    ]
    tables["portfolios"]["mom"] = book([*MOM_FILLS, *tcs]).to_json_dict()
    tables["last_prices"] = {}  # no tick yet: marked at cost
    api = ReadApi(PortfolioReader(model(tables), mirror=None))
    body = await api.portfolio("mom")

    reliance, flat = body["positions"]
    assert (reliance["priced"], reliance["last_price"], reliance["unrealised_pnl"]) == (
        False,
        "2903.33",
        "0.00",
    )
    assert (flat["symbol"], flat["quantity"], flat["realised_pnl"]) == ("TCS", 0, "100.00")
    assert body["positions_count"] == 1  # open positions only
    assert body["realised_pnl"] == "200.00"


async def test_unknown_strategy_is_404() -> None:
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None))
    for call in (api.portfolio("nope"), api.fills("nope", 5), api.equity("nope", 5)):
        with pytest.raises(ApiError) as err:
            await call
        assert (err.value.status, err.value.code) == (404, "not_found")


async def test_fills_newest_first_with_limit() -> None:
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None))
    body = await api.fills("mom", 2)

    assert body["source"] == "tables"
    assert [f["fill_id"] for f in body["fills"]] == ["f3", "f2"]
    assert body["fills"][0] == {
        "fill_id": "f3",
        "order_id": "o-f3",
        "signal_event_id": "s-f3",
        "instrument_token": RELIANCE,
        "symbol": "RELIANCE",
        "side": "SELL",
        "quantity": 6,
        "fill_price": "2920.00",
        "notional": "17520.00",
        "fees": "8.00",
        "execution_mode": "paper",
        "filled_ts": "2026-03-02T04:00:03Z",
        "reason": "",
    }


async def test_rejections_filter_by_strategy() -> None:
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None))
    assert [r["event_id"] for r in (await api.rejected(None, 50))["rejections"]] == ["r2", "r1"]
    assert [r["event_id"] for r in (await api.rejected("other", 50))["rejections"]] == ["r1"]
    assert (await api.rejected("unknown", 50))["rejections"] == []


async def test_equity_from_tables_is_one_current_point() -> None:
    now = datetime(2026, 1, 5, 5, 0, tzinfo=UTC)
    api = ReadApi(PortfolioReader(model(tables_with_mom()), mirror=None), clock=lambda: now)
    body = await api.equity("mom", 500)
    assert body == {
        "strategy_id": "mom",
        "source": "tables",
        "samples": [{"ts": now.isoformat(), "equity": "1000055.40"}],
    }


async def test_tables_still_recovering_is_503_not_an_empty_list() -> None:
    reader = PortfolioReader(model(tables_with_mom()), mirror=None, tables_ready=lambda: False)
    with pytest.raises(ApiError) as err:
        await ReadApi(reader).portfolios()
    assert (err.value.status, err.value.headers["Retry-After"]) == (503, "2")


# -- Redis first, tables as the fallback -----------------------------------------------


def redis_reader(
    tables: dict[str, dict[str, Any]], breaker: CircuitBreaker | None = None
) -> tuple[PortfolioReader, FakeRedis]:
    redis = FakeRedis()
    the_mirror = mirror(breaker)
    populate(redis, the_mirror.keys, tables)
    reader = PortfolioReader(model(tables), the_mirror, redis_factory=lambda url: redis)
    return reader, redis


async def test_reads_come_from_redis_when_it_is_usable() -> None:
    tables = tables_with_mom()
    reader, redis = redis_reader(tables)
    # Prove the numbers come from Redis: the tables say something else.
    tables["portfolios"]["mom"] = book(MOM_FILLS[:1]).to_json_dict()
    api = ReadApi(reader)

    row = (await api.portfolios())["portfolios"][0]
    assert without_source(row) == EXPECTED_MOM and row["source"] == "redis"
    assert (await api.portfolio("mom"))["source"] == "redis"
    assert (await api.fills("mom", 50))["source"] == "redis"
    rejected = await api.rejected("mom", 50)
    assert rejected["source"] == "redis"
    assert [r["event_id"] for r in rejected["rejections"]] == ["r2"]
    assert redis.calls > 0


# mom's 9 remaining RELIANCE shares, closed by the MIS square-off (the reason the strategy
# host gives its exit signal, which the fill carries).
SQUARE_OFF = fill(
    "f4",
    Side.SELL,
    9,
    "2905.00",
    "4.00",
    strategy_id="mom",
    token=RELIANCE,
    symbol="RELIANCE",
    second=4,
    reason=f"{SQUARE_OFF_REASON}: intraday (MIS) position closed at 15:20 IST",
)


@pytest.mark.parametrize("source", ["redis", "tables"])
async def test_an_mis_square_off_is_served_with_its_reason(source: str) -> None:
    fills = [*MOM_FILLS, SQUARE_OFF]
    tables = tables_with_mom()
    tables["portfolios"]["mom"] = book(fills).to_json_dict()
    tables["recent_fills"]["mom"] = [f.model_dump(mode="json") for f in reversed(fills)]
    if source == "redis":
        reader, _ = redis_reader(tables)
    else:
        reader = PortfolioReader(model(tables), mirror=None)
    api = ReadApi(reader)

    served = await api.fills("mom", 50)
    assert served["source"] == source
    newest = served["fills"][0]
    assert (newest["fill_id"], newest["side"], newest["quantity"]) == ("f4", "SELL", 9)
    assert newest["reason"] == SQUARE_OFF.reason
    assert newest["reason"].startswith(SQUARE_OFF_REASON)
    # The other fills carry no reason: served empty, so the forced exit stands out.
    assert [f["reason"] for f in served["fills"][1:]] == ["", "", ""]
    row = (await api.portfolios())["portfolios"][0]
    assert (row["positions_count"], row["trade_count"]) == (0, 4)


async def test_equity_samples_from_redis_oldest_first() -> None:
    reader, redis = redis_reader(tables_with_mom())
    key = reader.mirror.keys.equity("mom")  # type: ignore[union-attr]
    redis.lists[key] = [  # stored newest first
        json.dumps(["2026-03-02T04:00:03+00:00", "1000055.4"]),
        json.dumps(["2026-03-02T04:00:02+00:00", "999990.123"]),
        "not json",
    ]
    body = await ReadApi(reader).equity("mom", 500)
    assert body["source"] == "redis"
    assert body["samples"] == [
        {"ts": "2026-03-02T04:00:02+00:00", "equity": "999990.12"},
        {"ts": "2026-03-02T04:00:03+00:00", "equity": "1000055.40"},
    ]


async def test_failing_redis_falls_back_to_tables_and_trips_the_breaker() -> None:
    breaker = CircuitBreaker("test", failure_threshold=2, reset_timeout_s=60)
    reader, redis = redis_reader(tables_with_mom(), breaker)
    redis.fail = ConnectionError("connection refused")
    api = ReadApi(reader)

    for _ in range(2):
        row = (await api.portfolios())["portfolios"][0]
        assert without_source(row) == EXPECTED_MOM and row["source"] == "tables"
    assert breaker.state.value == "open"
    calls = redis.calls
    assert (await api.portfolio("mom"))["source"] == "tables"
    assert redis.calls == calls  # open breaker: Redis is not even tried


async def test_empty_mirror_is_not_served_as_no_portfolios() -> None:
    tables = tables_with_mom()
    reader, redis = redis_reader(tables)
    redis.strings.clear()
    redis.sets.clear()  # e.g. Redis restarted without persistence

    body = await ReadApi(reader).portfolios()
    assert [r["source"] for r in body["portfolios"]] == ["tables"]
    assert (await ReadApi(reader).rejected(None, 50))["source"] == "tables"


async def test_portfolio_not_yet_mirrored_is_read_from_the_owner_table() -> None:
    tables = tables_with_mom()
    reader, _ = redis_reader(tables)
    tables["portfolios"]["new"] = book(
        [fill("n1", Side.BUY, 1, "100", "0", strategy_id="new")], "new"
    ).to_json_dict()

    body = await ReadApi(reader).portfolio("new")
    assert (body["strategy_id"], body["source"], body["cash"]) == ("new", "tables", "999900.00")


async def test_unreadable_mirror_data_falls_back_to_tables() -> None:
    reader, redis = redis_reader(tables_with_mom())
    redis.strings[reader.mirror.keys.portfolio("mom")] = "{not json"  # type: ignore[union-attr]
    row = (await ReadApi(reader).portfolios())["portfolios"][0]
    assert row["source"] == "tables" and row["equity"] == "1000055.40"


async def test_rows_the_mirror_lost_are_filled_in_from_the_tables() -> None:
    tables = tables_with_mom()
    reader, redis = redis_reader(tables)
    keys = reader.mirror.keys  # type: ignore[union-attr]
    # Redis was flushed; since then the flusher rewrote its marker and one new portfolio.
    other = book([fill("o1", Side.BUY, 1, "100", "0", strategy_id="other")], "other")
    redis.strings = {keys.updated: "now", keys.portfolio("other"): json.dumps(other.to_json_dict())}
    redis.sets = {keys.portfolios: {"other"}}
    redis.hashes = {}

    rows = {r["strategy_id"]: r for r in (await ReadApi(reader).portfolios())["portfolios"]}
    assert {sid: r["source"] for sid, r in rows.items()} == {"mom": "tables", "other": "redis"}
    assert without_source(rows["mom"]) == EXPECTED_MOM  # valued with the table's price
    assert (await ReadApi(reader).live_update()).from_mirror is False  # so the stream polls


async def test_rejection_lists_the_mirror_lost_are_filled_in_from_the_tables() -> None:
    tables = tables_with_mom()
    reader, redis = redis_reader(tables)
    keys = reader.mirror.keys  # type: ignore[union-attr]
    redis.sets[keys.rejection_index] = {f"other:{RELIANCE}"}  # mom's list is gone
    del redis.strings[keys.rejections(f"mom:{RELIANCE}")]

    body = await ReadApi(reader).rejected(None, 50)
    assert body["source"] == "redis+tables"
    assert [r["event_id"] for r in body["rejections"]] == ["r2", "r1"]


async def test_live_updates_say_whether_pubsub_will_announce_the_next_change() -> None:
    tables = tables_with_mom()
    reader, redis = redis_reader(tables)
    assert (await ReadApi(reader).live_update()).from_mirror is True
    redis.fail = ConnectionError("down")
    assert (await ReadApi(reader).live_update()).from_mirror is False
    # No portfolios at all, from the tables: still "poll", or the first fill is missed.
    empty = PortfolioReader(model({**tables, "portfolios": {}}), mirror=None)
    update = await ReadApi(empty).live_update()
    assert update.data == {"portfolios": []} and update.from_mirror is False
