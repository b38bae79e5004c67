"""Contract tests: the golden sample of each event type, validated both ways.

Every version a consumer supports keeps its golden sample: ``market_tick.json`` is
market.tick v1 (no depth), ``market_tick_v2.json`` v2 with five levels a side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alpha_panda import topics
from models.codec import DecodeError, DecodeFailure, decode, encode
from models.envelope import CURRENT_VERSION, SUPPORTED_VERSIONS, EventType
from models.events import DepthLevel, MarketTick

GOLDEN = Path(__file__).parent / "golden"

# golden file -> (topic it travels on, the event type, the key that topic mandates)
CASES = {
    "market_tick": (topics.MARKET_TICKS, EventType.MARKET_TICK, "738561"),
    "market_tick_v2": (topics.MARKET_TICKS, EventType.MARKET_TICK, "738561"),
    "signal_generated": (
        topics.SIGNALS_GENERATED,
        EventType.SIGNAL_GENERATED,
        "momentum-nifty:738561",
    ),
    "signal_validated": (
        topics.SIGNALS_VALIDATED,
        EventType.SIGNAL_VALIDATED,
        "momentum-nifty:738561",
    ),
    "signal_rejected": (
        topics.SIGNALS_REJECTED,
        EventType.SIGNAL_REJECTED,
        "momentum-nifty:738561",
    ),
    "signal_rejected_v2": (
        topics.SIGNALS_REJECTED,
        EventType.SIGNAL_REJECTED,
        "momentum-nifty:738561",
    ),
    "order_filled": (topics.ORDERS_FILLED_PAPER, EventType.ORDER_FILLED, "momentum-nifty"),
}


def _golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.json").read_bytes()


def _version(name: str) -> int:
    return int(json.loads(_golden(name))["version"])


# Samples of an older, still supported version: they must decode, but producers now
# stamp the current version.
LEGACY = {"market_tick", "signal_rejected"}
CURRENT_CASES = sorted(set(CASES) - LEGACY)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_sample_decodes_and_reencodes_identically(name: str) -> None:
    spec, event_type, _ = CASES[name]
    raw = _golden(name)
    envelope = decode(raw, topic=spec.name, partition=0, offset=0, expect=event_type)
    assert envelope.type is event_type
    # Both ways: the model's JSON is the golden JSON, field for field.
    assert json.loads(encode(envelope)) == json.loads(raw)


@pytest.mark.parametrize("name", CURRENT_CASES)
def test_producer_helper_sets_the_mandated_key(name: str) -> None:
    spec, event_type, mandated_key = CASES[name]
    golden = decode(_golden(name), topic=spec.name, expect=event_type)
    record = spec.record(golden.data, event_id=golden.id, ts=golden.ts, source=golden.source)
    assert record.topic == spec.name
    assert record.key == mandated_key.encode()
    assert record.envelope is not None and record.envelope.key == mandated_key
    assert json.loads(record.value) == json.loads(_golden(name))


def test_validated_and_rejected_preserve_the_generated_key() -> None:
    generated = decode(_golden("signal_generated"), topic="t", expect=EventType.SIGNAL_GENERATED)
    validated = decode(_golden("signal_validated"), topic="t", expect=EventType.SIGNAL_VALIDATED)
    rejected = decode(_golden("signal_rejected"), topic="t", expect=EventType.SIGNAL_REJECTED)
    rejected_v2 = decode(_golden("signal_rejected_v2"), topic="t", expect=EventType.SIGNAL_REJECTED)
    assert generated.key == validated.key == rejected.key == rejected_v2.key


def test_a_v1_rejection_with_a_broker_reason_is_refused() -> None:
    sample = json.loads(_golden("signal_rejected_v2"))
    sample["version"] = 1
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(sample).encode(), topic=topics.SIGNALS_REJECTED.name)
    assert info.value.failure is DecodeFailure.INVALID_FIELDS
    assert "broker_rejected" in info.value.reason
    # The v1 golden (a risk reason) republishes as v2 with the same data.
    v1 = decode(_golden("signal_rejected"), topic="t", expect=EventType.SIGNAL_REJECTED)
    record = topics.SIGNALS_REJECTED.record(v1.data, event_id=v1.id, ts=v1.ts, source=v1.source)
    assert json.loads(record.value)["version"] == 2
    assert json.loads(record.value)["data"] == json.loads(_golden("signal_rejected"))["data"]


def test_live_and_paper_fills_share_the_portfolio_key() -> None:
    fill = decode(_golden("order_filled"), topic="t", expect=EventType.ORDER_FILLED).data
    assert topics.ORDERS_FILLED_PAPER.key_of(fill) == topics.ORDERS_FILLED_LIVE.key_of(fill)
    assert topics.ORDERS_FILLED_PAPER.key_of(fill) == fill.strategy_id


@pytest.mark.parametrize("name", CURRENT_CASES)
def test_golden_samples_are_at_the_current_version(name: str) -> None:
    """A version bump without new golden samples and consumer support fails here."""
    _, event_type, _ = CASES[name]
    assert _version(name) == CURRENT_VERSION[event_type]
    assert CURRENT_VERSION[event_type] in SUPPORTED_VERSIONS[event_type]


def test_every_supported_version_keeps_a_golden_sample() -> None:
    have = {(CASES[n][1], _version(n)) for n in CASES}
    want = {(t, v) for t, versions in SUPPORTED_VERSIONS.items() for v in versions}
    assert have == want
    assert {n for n in CASES if _version(n) < CURRENT_VERSION[CASES[n][1]]} == LEGACY


def test_market_tick_v1_and_v2_decode_to_the_one_payload_consumers_read() -> None:
    v1 = decode(
        _golden("market_tick"), topic=topics.MARKET_TICKS.name, expect=EventType.MARKET_TICK
    )
    v2 = decode(
        _golden("market_tick_v2"), topic=topics.MARKET_TICKS.name, expect=EventType.MARKET_TICK
    )
    assert (v1.version, v2.version) == (1, 2)
    assert isinstance(v1.data, MarketTick) and isinstance(v2.data, MarketTick)
    assert v1.data.depth is None
    depth = v2.data.depth
    assert depth is not None
    assert [(lv.quantity, lv.price, lv.orders) for lv in depth.bids[:2]] == [
        (120, Decimal("2901.30"), 3),
        (75, Decimal("2901.25"), 2),
    ]
    assert depth.asks[-1] == DepthLevel(quantity=1200, price=Decimal("2901.80"), orders=15)
    assert (len(depth.bids), len(depth.asks)) == (5, 5)


def test_a_v1_tick_republished_is_v2_with_the_same_data() -> None:
    v1 = decode(_golden("market_tick"), topic="t", expect=EventType.MARKET_TICK)
    record = topics.MARKET_TICKS.record(v1.data, event_id=v1.id, ts=v1.ts, source=v1.source)
    republished = json.loads(record.value)
    assert republished["version"] == 2
    assert "depth" not in republished["data"]  # no null: a v2 tick without depth reads as v1
    assert republished["data"] == json.loads(_golden("market_tick"))["data"]


def test_a_v1_tick_carrying_depth_is_refused() -> None:
    sample = json.loads(_golden("market_tick_v2"))
    sample["version"] = 1
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(sample).encode(), topic=topics.MARKET_TICKS.name, partition=0, offset=3)
    assert info.value.failure is DecodeFailure.INVALID_FIELDS
    assert "depth" in info.value.reason


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["bids"].reverse(), "bids"),
        (lambda d: d["asks"].reverse(), "asks"),
        (lambda d: d["bids"].append(d["bids"][-1]), "bids"),
        (lambda d: d["asks"][0].update(quantity=0), "quantity"),
        (lambda d: d["asks"][0].update(price="0"), "price"),
        (lambda d: d["bids"][0].update(orders=-1), "orders"),
    ],
)
def test_malformed_depth_is_refused_naming_the_field(
    mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    sample = json.loads(_golden("market_tick_v2"))
    mutate(sample["data"]["depth"])
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(sample).encode(), topic=topics.MARKET_TICKS.name)
    assert info.value.failure is DecodeFailure.INVALID_FIELDS
    assert field in info.value.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_future_version_is_refused_as_unsupported(name: str) -> None:
    spec, event_type, _ = CASES[name]
    sample = json.loads(_golden(name))
    sample["version"] = CURRENT_VERSION[event_type] + 1
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(sample).encode(), topic=spec.name, partition=2, offset=7)
    assert info.value.failure is DecodeFailure.UNSUPPORTED_VERSION


def test_every_event_type_has_a_golden_sample() -> None:
    assert {c[1] for c in CASES.values()} == set(EventType)


def test_every_pipeline_topic_is_registered_once_with_its_dlq() -> None:
    layout = topics.all_topic_layout()
    for spec in topics.TOPICS:
        assert layout[spec.name] == spec.partitions
        assert layout[spec.name + ".dlq"] == 1
    assert layout["market.ticks"] == 12
    assert layout["trading.signals.generated"] == 6
    assert layout["orders.filled.paper"] == 3
    assert not any("*" in name for name in layout)
