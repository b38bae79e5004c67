"""Each table's codec (tables/specs.py) and the typed views over it (alpha_panda/typed_table.py).

``golden/table_values_before_typed_specs.json`` holds one value of every table as the
stages stored it before the codecs moved into the specs (dumped from their tables after
driving each stage of commit c68a7df through tests/unit/stages/harness.py). Changelogs
and log snapshots hold exactly such values, so each must still decode, and encode back to
the same JSON, key order included: a restarted stage must read old logs unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alpha_panda import write_behind
from alpha_panda.domain.live_orders import LiveOrder
from alpha_panda.domain.own_position import OwnPosition
from alpha_panda.domain.paper_trader import PendingLimitOrder
from alpha_panda.domain.strategy_host import StrategyStateEntry
from alpha_panda.typed_table import TypedTable
from alpha_panda.write_behind import WriteBehindTable
from models.events import RejectionReason, Side
from tables.last_price import LastPrice
from tables.portfolio import Portfolio
from tables.recent import RecentFills, RecentRejections
from tables.risk_state import StrategyRiskState
from tables.specs import (
    ALL_TABLES,
    LAST_PRICES,
    LIVE_ORDERS,
    OWN_POSITIONS,
    PENDING_ORDERS,
    PORTFOLIOS,
    RECENT_FILLS,
    RECENT_REJECTIONS,
    RISK_STATE,
    STRATEGY_STATE,
    TableSpec,
)
from tests.factories import T0, fill, rejection, signal, tick

GOLDEN = json.loads(
    (Path(__file__).parent / "golden" / "table_values_before_typed_specs.json").read_text()
)

# golden entry -> (its table's spec, the type its decode must give)
OLD_VALUES: dict[str, tuple[TableSpec[Any], type]] = {
    "strategy-state": (STRATEGY_STATE, StrategyStateEntry),
    "risk-state": (RISK_STATE, StrategyRiskState),
    "engine-last-prices": (LAST_PRICES, LastPrice),
    "portfolio-last-prices": (LAST_PRICES, LastPrice),
    "pending-orders": (PENDING_ORDERS, tuple),
    "live-orders": (LIVE_ORDERS, LiveOrder),
    "portfolios": (PORTFOLIOS, Portfolio),
    "recent-fills": (RECENT_FILLS, RecentFills),
    "recent-rejections": (RECENT_REJECTIONS, RecentRejections),
}


# Tables created after the codecs moved into the specs: no value was ever stored without
# their codec, so there is no old value to read back.
BORN_WITH_THEIR_CODEC = {OWN_POSITIONS.name}


def test_every_table_has_an_old_value_here() -> None:
    old = {spec.name for spec, _ in OLD_VALUES.values()}
    assert old | BORN_WITH_THEIR_CODEC == {s.name for s in ALL_TABLES}
    assert not old & BORN_WITH_THEIR_CODEC
    assert set(OLD_VALUES) == set(GOLDEN)


@pytest.mark.parametrize("entry", sorted(OLD_VALUES))
def test_a_value_stored_before_the_specs_decodes_and_encodes_back_identically(
    entry: str,
) -> None:
    spec, value_type = OLD_VALUES[entry]
    stored = json.dumps(GOLDEN[entry])  # as Faust's JSON serializer wrote it
    value = spec.decode(json.loads(stored))
    assert isinstance(value, value_type)
    assert json.dumps(spec.encode(value)) == stored


def test_the_old_values_read_as_what_their_stages_wrote() -> None:
    # Spot checks that decoding means what it meant to the stage that wrote it.
    engine_price = LAST_PRICES.decode(GOLDEN["engine-last-prices"])
    depth = engine_price.market_depth()
    assert engine_price.price == Decimal("100") and depth is not None
    assert depth.bids[0].price == Decimal("99.95") and engine_price.offset is None
    marked = LAST_PRICES.decode(GOLDEN["portfolio-last-prices"])
    assert (marked.price, marked.offset, marked.depth) == (Decimal("100.05"), 5, None)
    (resting,) = PENDING_ORDERS.decode(GOLDEN["pending-orders"])
    assert (resting.signal_event_id, resting.limit_price) == ("sig-1", Decimal("99.90"))
    portfolio = PORTFOLIOS.decode(GOLDEN["portfolios"])
    assert (
        portfolio.trade_count == 2 and portfolio.positions[resting.instrument_token].quantity == 6
    )
    newest, older = RECENT_FILLS.decode(GOLDEN["recent-fills"]).fills()
    assert (newest.fill_id, older.fill_id) == ("f2", "f1")
    (rej2, r2), (rej1, r1) = RECENT_REJECTIONS.decode(GOLDEN["recent-rejections"]).rejections()
    assert (rej2, rej1) == ("rej-2", "rej-1") and r1.reason is RejectionReason.KILL_SWITCH
    assert r2.reason is RejectionReason.MAX_ORDER_QUANTITY
    assert RISK_STATE.decode(GOLDEN["risk-state"]).position(resting.instrument_token) == 5
    entry = STRATEGY_STATE.decode(GOLDEN["strategy-state"])
    assert (entry.offset, entry.price, entry.state["kind"]) == (1, Decimal("101.50"), "momentum")
    # An entry from before the price and the fingerprint were recorded stays without them.
    oldest = {"offset": 4, "state": {"kind": "momentum"}}
    assert STRATEGY_STATE.decode(oldest).price is None
    assert json.dumps(STRATEGY_STATE.encode(STRATEGY_STATE.decode(oldest))) == json.dumps(oldest)


def test_a_new_value_round_trips_through_its_codec() -> None:
    bought = fill("f1", Side.BUY, 10, "100", "1.50", strategy_id="a")
    portfolio = Portfolio.new("a", Decimal("100000")).apply_fill(bought)
    assert portfolio is not None
    order = PendingLimitOrder(signal_event_id="s", signal=signal(limit="99.90"), accepted_ts=T0)
    refused = rejection(signal(strategy_id="a"), RejectionReason.KILL_SWITCH, "halted")
    values: list[tuple[TableSpec[Any], Any]] = [
        (PORTFOLIOS, portfolio),
        (LAST_PRICES, LastPrice.of_tick(tick("100.05", 0), offset=3)),
        (PENDING_ORDERS, (order,)),
        (RECENT_FILLS, RecentFills().with_newest(bought, 100)),
        (RECENT_REJECTIONS, RecentRejections().with_newest("rej-1", refused, 50)),
        (RISK_STATE, StrategyRiskState.new("a")),
        (OWN_POSITIONS, OwnPosition().book_fill(bought)),
        (OWN_POSITIONS, OwnPosition().book_rejection(refused)),
    ]
    for spec, value in values:
        assert spec.decode(json.loads(json.dumps(spec.encode(value)))) == value, spec.name


def test_recent_lists_keep_the_newest_first_and_at_most_what_they_keep() -> None:
    fills = RecentFills()
    for i in range(5):
        fills = fills.with_newest(fill(f"f{i}", Side.BUY, 1, "100", strategy_id="a"), 3)
    assert [f.fill_id for f in fills.fills()] == ["f4", "f3", "f2"]
    refused = rejection(signal(strategy_id="a"), RejectionReason.KILL_SWITCH, "halted")
    kept = RecentRejections().with_newest("r1", refused, 2).with_newest("r2", refused, 2)
    assert kept.holds("r1") and not kept.holds("r0")
    assert [e for e, _ in kept.with_newest("r3", refused, 2).rejections()] == ["r3", "r2"]


# -- the typed views -------------------------------------------------------------------


@dataclass
class FakeFaustTable:
    """What the views use of a Faust table: memory (``data``), writes, the changelog."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    changelog: list[tuple[int, str, Any]] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:  # Faust: memory + changelog
        self.data[key] = value
        self.changelog.append((0, key, value))

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def keys(self) -> Any:
        return self.data.keys()

    def items(self) -> Any:
        return self.data.items()

    def send_changelog(self, partition: int, key: str, value: Any) -> None:
        self.changelog.append((partition, key, value))


def test_a_typed_table_stores_the_spec_encoding_and_reads_the_value() -> None:
    table = FakeFaustTable(PORTFOLIOS.name)
    portfolios = TypedTable(PORTFOLIOS, table)  # type: ignore[arg-type]
    assert portfolios.get("a") is None and "a" not in portfolios
    with pytest.raises(KeyError):
        portfolios["a"]
    old = PORTFOLIOS.decode(GOLDEN["portfolios"])
    portfolios["a"] = old
    # Faust serialises what memory holds: the changelog gets the old JSON exactly.
    assert table.data["a"] == GOLDEN["portfolios"] and table.changelog[-1][2] is table.data["a"]
    assert portfolios["a"] == old and "a" in portfolios
    assert dict(portfolios.items()) == {"a": old} and list(portfolios.keys()) == ["a"]
    assert portfolios.get_json("a") == GOLDEN["portfolios"]
    assert dict(portfolios.as_json().items()) == {"a": GOLDEN["portfolios"]}
    del portfolios["a"]
    assert portfolios.get("a") is None and portfolios.as_json().get("a") is None


def test_a_write_behind_table_holds_the_value_and_encodes_only_to_flush_or_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @dataclass
    class Message:
        partition: int

    @dataclass
    class Event:
        message: Message

    monkeypatch.setattr(write_behind, "current_event", lambda: Event(Message(7)))
    encoded: list[LastPrice] = []

    def encode(value: LastPrice) -> Any:
        encoded.append(value)
        return LastPrice.to_json_dict(value)

    spec = TableSpec(
        LAST_PRICES.name, key="t", partitions=1, value="", encode=encode,
        decode=LAST_PRICES.decode, help="",
    )  # fmt: skip
    # Recovery put the changelog's JSON in memory.
    table = FakeFaustTable(spec.name, data={"1": GOLDEN["portfolio-last-prices"]})
    prices = WriteBehindTable(spec, table)  # type: ignore[arg-type]
    recovered = prices["1"]
    assert recovered == LAST_PRICES.decode(GOLDEN["portfolio-last-prices"])
    assert table.data["1"] is recovered  # decoded once, kept
    assert prices.get_json("2") is None
    for i in range(10):
        prices["2"] = LastPrice.of_tick(tick(f"10{i}", i), offset=i)
    assert encoded == [] and table.changelog == []  # no encoding per write
    assert prices.get_json("2") == {"price": "109", "symbol": "RELIANCE",
                                    "ts": prices["2"].ts.isoformat(), "offset": 9}  # fmt: skip
    assert prices.flush() == 1
    assert table.changelog == [(7, "2", prices.get_json("2"))]
    assert json.dumps(table.changelog[0][2]) == json.dumps(LAST_PRICES.encode(prices["2"]))


def test_no_write_behind_value_type_is_a_dict() -> None:
    # A write-behind table tells recovered JSON (a dict) from its value by type.
    for entry, (spec, value_type) in OLD_VALUES.items():
        if spec.write_behind:
            assert isinstance(GOLDEN[entry], dict) and value_type is not dict, entry
