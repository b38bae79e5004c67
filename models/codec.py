"""The codec boundary: bytes on a topic <-> a validated :class:`EventEnvelope`.

Faust topics carry raw bytes (a pydantic model cannot be a Faust ``value_type``); every
produce goes through :func:`encode` and every consume through :func:`decode`. A record
that cannot be decoded raises :class:`DecodeError`, which names topic, partition, offset
and reason, so the consuming stage can log it, dead-letter it and carry on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from models.envelope import (
    CURRENT_VERSION,
    PAYLOAD_TYPES,
    SUPPORTED_VERSIONS,
    EventEnvelope,
    EventType,
)
from models.events import REJECTION_REASONS_SINCE_V2, REJECTION_REASONS_SINCE_V3

P = TypeVar("P", bound=BaseModel)

# One payload model serves every market.tick version: v1 is v2 without ``depth``. What a
# v1 record may not carry is checked here, so consumers see one type for both versions.
DEPTH_SINCE_VERSION = 2
# Likewise trading.signal.rejected: v2 only adds the broker's rejection reasons.
BROKER_REASONS_SINCE_VERSION = 2
# v3 adds the trading day's reasons (market_closed, mis_cutoff).
SESSION_REASONS_SINCE_VERSION = 3
# order.filled v2 adds the optional ``reason``.
FILL_REASON_SINCE_VERSION = 2


class DecodeFailure(StrEnum):
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    UNEXPECTED_TYPE = "unexpected_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    INVALID_FIELDS = "invalid_fields"
    KEY_MISMATCH = "key_mismatch"


@dataclass(frozen=True)
class RecordPosition:
    topic: str
    partition: int | None = None
    offset: int | None = None


class DecodeError(ValueError):
    """A record that is not a valid envelope: a poison pill, never retried."""

    def __init__(self, failure: DecodeFailure, reason: str, position: RecordPosition) -> None:
        self.failure = failure
        self.reason = reason
        self.position = position
        super().__init__(
            f"cannot decode record at {position.topic}[{position.partition}]@{position.offset}: "
            f"{failure.value}: {reason}"
        )

    def log_fields(self) -> dict[str, Any]:
        return {
            "topic": self.position.topic,
            "partition": self.position.partition,
            "offset": self.position.offset,
            "failure": self.failure.value,
            "reason": self.reason,
        }


# One parametrised envelope class per event type, held here for the process's life:
# pydantic caches `EventEnvelope[X]` only weakly, so building it per message re-created
# the class (a metaclass call and schema build) whenever the cache entry had been dropped.
_ENVELOPE_TYPES: dict[EventType, Any] = {
    t: cast(Any, EventEnvelope)[model] for t, model in PAYLOAD_TYPES.items()
}
_ADAPTERS: dict[EventType, TypeAdapter[Any]] = {
    t: TypeAdapter(envelope_type) for t, envelope_type in _ENVELOPE_TYPES.items()
}


# Outside JSON strings, the only bytes pydantic's own JSON parser reads exactly as the slow
# path does: integers, null and structure. Anything else left after deleting these (the
# "." or "e" of a number it would parse as a binary float where the slow path keeps a
# Decimal; true, false, NaN, which the slow path refuses or reads differently) sends the
# record to the slow path.
_EXACT_OUTSIDE_STRINGS = b"0123456789-,:{}[]nul \t\r\n"


def _decode_fast(raw: bytes, expect: EventType) -> EventEnvelope[Any] | None:
    """pydantic's ``validate_json`` (about 5 µs for a tick, against 13 for the slow path)
    when it gives exactly what the slow path would, else None (use the slow path).

    Exact when, outside JSON strings, the record holds only integers, null and structure:
    our encoder writes money as strings (``"2901.35"``), so every record we produce
    qualifies. Splitting at ``"`` finds the outside of strings only without escaped
    characters, so a record with a backslash takes the slow path too. Anything the fast
    path refuses is decoded again by the slow path, which names the failure.
    """
    if b"\\" in raw or b"".join(raw.split(b'"')[::2]).translate(None, _EXACT_OUTSIDE_STRINGS):
        return None
    try:
        envelope = cast("EventEnvelope[Any]", _ADAPTERS[expect].validate_json(raw))
    except ValidationError:
        return None
    if envelope.type is not expect or envelope.version not in SUPPORTED_VERSIONS[expect]:
        return None
    # The slow path refuses a version that is not a JSON integer ("1"); lax validation
    # would take it. Our encoder writes it compact, so this holds for our records.
    if b'"version":%d' % envelope.version not in raw:
        return None
    return envelope


def _short(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def decode(
    raw: bytes | None,
    *,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    expect: EventType | None = None,
    key: bytes | None = None,
) -> EventEnvelope[Any]:
    """Validate `raw` into an envelope. `expect` pins the topic's event type; `key`, when
    given, must equal the envelope's key (a producer that bypassed the helpers is caught)."""
    if expect is not None and raw is not None:
        fast = _decode_fast(raw, expect)
        if fast is not None and (key is None or key.decode("utf-8", "replace") == fast.key):
            return fast
    position = RecordPosition(topic, partition, offset)
    if raw is None:
        raise DecodeError(DecodeFailure.INVALID_JSON, "empty record (tombstone)", position)
    try:
        # parse_float=Decimal: a JSON number never passes through a binary float.
        obj = json.loads(raw, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(DecodeFailure.INVALID_JSON, str(exc), position) from None
    if not isinstance(obj, dict):
        raise DecodeError(
            DecodeFailure.NOT_AN_OBJECT, f"top level is {type(obj).__name__}", position
        )
    raw_type = obj.get("type")
    try:
        event_type = EventType(str(raw_type))
    except ValueError:
        raise DecodeError(
            DecodeFailure.UNKNOWN_TYPE, f"unknown event type {raw_type!r}", position
        ) from None
    if expect is not None and event_type is not expect:
        raise DecodeError(
            DecodeFailure.UNEXPECTED_TYPE,
            f"topic carries {expect.value!r}, record is {event_type.value!r}",
            position,
        )
    version = obj.get("version")
    if version not in SUPPORTED_VERSIONS[event_type] or isinstance(version, bool):
        raise DecodeError(
            DecodeFailure.UNSUPPORTED_VERSION,
            f"{event_type.value} version {version!r} not in "
            f"{sorted(SUPPORTED_VERSIONS[event_type])}",
            position,
        )
    try:
        envelope = cast("EventEnvelope[Any]", _ADAPTERS[event_type].validate_python(obj))
    except ValidationError as exc:
        raise DecodeError(DecodeFailure.INVALID_FIELDS, _short(exc.errors()), position) from None
    if (
        event_type is EventType.MARKET_TICK
        and envelope.version < DEPTH_SINCE_VERSION
        and envelope.data.depth is not None
    ):
        raise DecodeError(
            DecodeFailure.INVALID_FIELDS,
            f"data.depth: market.tick carries depth only from version {DEPTH_SINCE_VERSION}",
            position,
        )
    if (
        event_type is EventType.SIGNAL_REJECTED
        and envelope.version < BROKER_REASONS_SINCE_VERSION
        and envelope.data.reason in REJECTION_REASONS_SINCE_V2
    ):
        raise DecodeError(
            DecodeFailure.INVALID_FIELDS,
            f"data.reason: {envelope.data.reason.value!r} exists only from version "
            f"{BROKER_REASONS_SINCE_VERSION}",
            position,
        )
    if (
        event_type is EventType.SIGNAL_REJECTED
        and envelope.version < SESSION_REASONS_SINCE_VERSION
        and envelope.data.reason in REJECTION_REASONS_SINCE_V3
    ):
        raise DecodeError(
            DecodeFailure.INVALID_FIELDS,
            f"data.reason: {envelope.data.reason.value!r} exists only from version "
            f"{SESSION_REASONS_SINCE_VERSION}",
            position,
        )
    if (
        event_type is EventType.ORDER_FILLED
        and envelope.version < FILL_REASON_SINCE_VERSION
        and envelope.data.reason is not None
    ):
        raise DecodeError(
            DecodeFailure.INVALID_FIELDS,
            f"data.reason: order.filled carries a reason only from version "
            f"{FILL_REASON_SINCE_VERSION}",
            position,
        )
    if key is not None and key.decode("utf-8", "replace") != envelope.key:
        raise DecodeError(
            DecodeFailure.KEY_MISMATCH,
            f"record key {key!r} differs from envelope key {envelope.key!r}",
            position,
        )
    return envelope


def build_envelope(
    event_type: EventType,
    payload: P,
    *,
    key: str,
    event_id: str,
    ts: datetime,
    source: str,
) -> EventEnvelope[P]:
    if not isinstance(payload, PAYLOAD_TYPES[event_type]):
        raise TypeError(
            f"{event_type.value} carries {PAYLOAD_TYPES[event_type].__name__}, "
            f"not {type(payload).__name__}"
        )
    envelope_type = _ENVELOPE_TYPES[event_type]
    return cast(
        EventEnvelope[P],
        envelope_type(
            id=event_id,
            type=event_type,
            ts=ts,
            key=key,
            source=source,
            version=CURRENT_VERSION[event_type],
            data=payload,
        ),
    )


def encode(envelope: EventEnvelope[Any]) -> bytes:
    return envelope.model_dump_json().encode()
