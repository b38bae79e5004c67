"""The codec's fast path (pydantic's validate_json) gives exactly what the slow path gives,
and leaves every record it cannot read exactly to the slow path."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import models.codec as codec
from models.codec import DecodeError, decode
from models.envelope import EventType

GOLDEN = Path(__file__).parents[1] / "contract/golden"
TYPES = {
    "market_tick.json": EventType.MARKET_TICK,
    "signal_generated.json": EventType.SIGNAL_GENERATED,
    "signal_validated.json": EventType.SIGNAL_VALIDATED,
    "signal_rejected.json": EventType.SIGNAL_REJECTED,
    "order_filled.json": EventType.ORDER_FILLED,
}


def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / name).read_text())  # type: ignore[no-any-return]


def compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, per decode, whether the fast path answered."""
    calls: list[bool] = []
    real = codec._decode_fast

    def spy(raw: bytes, expect: EventType) -> Any:
        result = real(raw, expect)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(codec, "_decode_fast", spy)
    return calls


@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_event_type_decodes_fast_and_equal_to_the_slow_path(
    name: str, fast_calls: list[bool]
) -> None:
    raw = compact(golden(name))
    fast = decode(raw, topic="t", expect=TYPES[name])
    assert fast_calls == [True]
    assert fast == decode(raw, topic="t")  # no `expect`: the slow path
    # Our own encoder's output qualifies too.
    assert decode(codec.encode(fast), topic="t", expect=TYPES[name]) == fast
    assert fast_calls == [True, True]


def test_a_json_number_price_takes_the_slow_path_and_stays_exact(
    fast_calls: list[bool],
) -> None:
    tick = golden("market_tick.json")
    tick["data"]["last_price"] = "X"
    # 18 digits: a binary float keeps about 16 (pydantic's own JSON parser gives ...123).
    raw = compact(tick).replace(b'"X"', b"12345678901234.1234")
    envelope = decode(raw, topic="t", expect=EventType.MARKET_TICK)
    assert fast_calls == [False]
    assert envelope.data.last_price == Decimal("12345678901234.1234")


def test_an_escaped_quote_in_a_string_takes_the_slow_path(fast_calls: list[bool]) -> None:
    tick = golden("market_tick.json")
    tick["data"]["symbol"] = 'NIFTY "50" 1.5e3'
    envelope = decode(compact(tick), topic="t", expect=EventType.MARKET_TICK)
    assert fast_calls == [False]
    assert envelope.data.symbol == 'NIFTY "50" 1.5e3'


def test_numbers_inside_strings_do_not_send_a_record_to_the_slow_path(
    fast_calls: list[bool],
) -> None:
    tick = golden("market_tick.json")
    tick["data"]["symbol"] = "M&M 1.5e3 true"
    decode(compact(tick), topic="t", expect=EventType.MARKET_TICK)
    assert fast_calls == [True]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["version"], True),
        (["version"], 99),  # no such version of market.tick
        (["version"], "1"),
        (["type"], "order.filled"),
        (["data", "last_price"], "-1"),
        (["data", "exchange_ts"], "2026-01-05T03:45:12"),
        (["data", "colour"], "red"),
        (["priority"], 1),
    ],
)
def test_a_bad_record_fails_as_on_the_slow_path(path: list[str], value: object) -> None:
    tick = golden("market_tick.json")
    target = tick
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    raw = compact(tick)
    with pytest.raises(DecodeError) as fast:
        decode(raw, topic="t", expect=EventType.MARKET_TICK)
    with pytest.raises(DecodeError) as slow:
        decode(raw, topic="t")
    expected = slow.value.failure
    if path == ["type"]:  # the slow path without `expect` accepts the type itself
        assert fast.value.failure.value == "unexpected_type"
    else:
        assert fast.value.failure is expected
        assert fast.value.reason == slow.value.reason


def test_key_mismatch_is_still_caught_on_the_fast_path() -> None:
    raw = compact(golden("market_tick.json"))
    with pytest.raises(DecodeError) as err:
        decode(raw, topic="t", expect=EventType.MARKET_TICK, key=b"999")
    assert err.value.failure.value == "key_mismatch"
