"""Contract tests: the golden sample of each event type, validated both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alpha_panda import topics
from models.codec import DecodeError, DecodeFailure, decode, encode
from models.envelope import CURRENT_VERSION, SUPPORTED_VERSIONS, EventType

GOLDEN = Path(__file__).parent / "golden"

# golden file -> (topic it travels on, the event type, the key that topic mandates)
CASES = {
    "market_tick": (topics.MARKET_TICKS, EventType.MARKET_TICK, "738561"),
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
    "order_filled": (topics.ORDERS_FILLED_PAPER, EventType.ORDER_FILLED, "momentum-nifty"),
    # A fill that carries its signal's reason (here an MIS square-off); fills without one
    # leave the field out, so order_filled above is unchanged.
    "order_filled_square_off": (
        topics.ORDERS_FILLED_PAPER,
        EventType.ORDER_FILLED,
        "intraday-reliance",
    ),
}


def _golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_sample_decodes_and_reencodes_identically(name: str) -> None:
    spec, event_type, _ = CASES[name]
    raw = _golden(name)
    envelope = decode(raw, topic=spec.name, partition=0, offset=0, expect=event_type)
    assert envelope.type is event_type
    # Both ways: the model's JSON is the golden JSON, field for field.
    assert json.loads(encode(envelope)) == json.loads(raw)


@pytest.mark.parametrize("name", sorted(CASES))
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
    assert generated.key == validated.key == rejected.key


def test_live_and_paper_fills_share_the_portfolio_key() -> None:
    fill = decode(_golden("order_filled"), topic="t", expect=EventType.ORDER_FILLED).data
    assert topics.ORDERS_FILLED_PAPER.key_of(fill) == topics.ORDERS_FILLED_LIVE.key_of(fill)
    assert topics.ORDERS_FILLED_PAPER.key_of(fill) == fill.strategy_id


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_samples_are_at_the_current_version(name: str) -> None:
    """A version bump without new golden samples and consumer support fails here."""
    _, event_type, _ = CASES[name]
    sample = json.loads(_golden(name))
    assert sample["version"] == CURRENT_VERSION[event_type]
    assert CURRENT_VERSION[event_type] in SUPPORTED_VERSIONS[event_type]


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
