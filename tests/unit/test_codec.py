"""The codec boundary: every way a record can be bad gives a typed error with its position."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.topics import MARKET_TICKS
from models.codec import DecodeError, DecodeFailure, decode
from models.envelope import EventType
from models.events import MarketTick

GOLDEN_TICK = json.loads(
    (Path(__file__).parents[1] / "contract/golden/market_tick.json").read_text()
)


def _bad(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _decode_error(raw: bytes | None, **kw: object) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(raw, topic="market.ticks", partition=4, offset=99, **kw)  # type: ignore[arg-type]
    return info.value


def _with(path: list[str], value: object) -> dict[str, object]:
    sample = json.loads(json.dumps(GOLDEN_TICK))
    target = sample
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return sample


def test_invalid_json_names_topic_partition_offset() -> None:
    err = _decode_error(b"{not json")
    assert err.failure is DecodeFailure.INVALID_JSON
    assert (err.position.topic, err.position.partition, err.position.offset) == (
        "market.ticks",
        4,
        99,
    )
    assert "market.ticks[4]@99" in str(err)


def test_tombstone_is_invalid() -> None:
    assert _decode_error(None).failure is DecodeFailure.INVALID_JSON


def test_non_object_is_refused() -> None:
    assert _decode_error(b"[1, 2]").failure is DecodeFailure.NOT_AN_OBJECT


def test_unknown_type() -> None:
    err = _decode_error(_bad(_with(["type"], "market.tock")))
    assert err.failure is DecodeFailure.UNKNOWN_TYPE
    assert "market.tock" in err.reason


def test_type_that_does_not_belong_on_the_topic() -> None:
    err = _decode_error(_bad(GOLDEN_TICK), expect=EventType.ORDER_FILLED)
    assert err.failure is DecodeFailure.UNEXPECTED_TYPE


@pytest.mark.parametrize("version", [0, 3, "1", "2", True, None])
def test_unsupported_version(version: object) -> None:
    assert (
        _decode_error(_bad(_with(["version"], version))).failure
        is DecodeFailure.UNSUPPORTED_VERSION
    )


def test_missing_field_is_named() -> None:
    sample = json.loads(json.dumps(GOLDEN_TICK))
    del sample["data"]["last_price"]
    err = _decode_error(_bad(sample))
    assert err.failure is DecodeFailure.INVALID_FIELDS
    assert "data.last_price" in err.reason


def test_extra_field_is_refused() -> None:
    err = _decode_error(_bad(_with(["data", "colour"], "red")))
    assert err.failure is DecodeFailure.INVALID_FIELDS
    assert "colour" in err.reason


def test_extra_envelope_field_is_refused() -> None:
    err = _decode_error(_bad(_with(["priority"], 1)))
    assert err.failure is DecodeFailure.INVALID_FIELDS


def test_naive_timestamp_is_refused() -> None:
    err = _decode_error(_bad(_with(["data", "exchange_ts"], "2026-01-05T03:45:12")))
    assert "timezone" in err.reason


def test_negative_price_is_refused() -> None:
    assert (
        _decode_error(_bad(_with(["data", "last_price"], "-1"))).failure
        is DecodeFailure.INVALID_FIELDS
    )


def test_key_mismatch_is_caught() -> None:
    err = _decode_error(_bad(GOLDEN_TICK), key=b"999")
    assert err.failure is DecodeFailure.KEY_MISMATCH


def test_json_number_prices_never_pass_through_float() -> None:
    raw = json.dumps(_with(["data", "last_price"], "PLACEHOLDER")).replace(
        '"PLACEHOLDER"', "2901.1"
    )
    envelope = decode(raw.encode(), topic="market.ticks")
    assert envelope.data.last_price == Decimal("2901.1")


def test_round_trip_through_the_producer_helper() -> None:
    tick = MarketTick(
        instrument_token=5,
        symbol="X",
        last_price=Decimal("10.05"),
        volume=1,
        exchange_ts=datetime(2026, 1, 5, tzinfo=UTC),
    )
    record = MARKET_TICKS.record(tick, event_id="e", ts=tick.exchange_ts, source="test")
    assert decode(record.value, topic=MARKET_TICKS.name, key=record.key).data == tick
