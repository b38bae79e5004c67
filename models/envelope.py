"""The one event envelope used at every produce and consume."""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from models.events import (
    MarketTick,
    OrderFill,
    RejectedSignal,
    TradingSignal,
    UtcDatetime,
    ValidatedSignal,
)

# Namespace for deterministic event ids: an event derived from another gets
# uuid5(NAMESPACE, parent_id + discriminator), so reprocessing after a crash
# reproduces the same id and downstream consumers can drop the duplicate.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a0e-5a57-4b8e-9a3c-a1fa9a9da000")


class EventType(StrEnum):
    MARKET_TICK = "market.tick"
    SIGNAL_GENERATED = "trading.signal.generated"
    SIGNAL_VALIDATED = "trading.signal.validated"
    SIGNAL_REJECTED = "trading.signal.rejected"
    ORDER_FILLED = "order.filled"


PAYLOAD_TYPES: dict[EventType, type[BaseModel]] = {
    EventType.MARKET_TICK: MarketTick,
    EventType.SIGNAL_GENERATED: TradingSignal,
    EventType.SIGNAL_VALIDATED: ValidatedSignal,
    EventType.SIGNAL_REJECTED: RejectedSignal,
    EventType.ORDER_FILLED: OrderFill,
}

# Schema versions each consumer understands. Bumping a payload's version without
# teaching the consumers is caught by the contract tests.
# Issue 13: market.tick v2 adds the optional 5-level depth; trading.signal.rejected v2 adds
# the broker's rejection reasons. v1 records of both stay readable.
# Issue 16: trading.signal.rejected v3 adds market_closed and mis_cutoff; order.filled v2
# adds the optional `reason`.
CURRENT_VERSION: dict[EventType, int] = {t: 1 for t in EventType} | {
    EventType.MARKET_TICK: 2,
    EventType.SIGNAL_REJECTED: 3,
    EventType.ORDER_FILLED: 2,
}
SUPPORTED_VERSIONS: dict[EventType, frozenset[int]] = {
    t: frozenset(range(1, CURRENT_VERSION[t] + 1)) for t in EventType
}

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class EventEnvelope(BaseModel, Generic[PayloadT]):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64, description="Unique event id, for dedup.")
    type: EventType
    ts: UtcDatetime = Field(description="Event time (ISO 8601 UTC), from the causing tick.")
    key: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1)
    data: PayloadT


def new_event_id() -> str:
    return uuid.uuid4().hex


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def derived_event_id(parent_id: str, *discriminators: object) -> str:
    """Deterministic id of an event caused by `parent_id` (same input, same id).

    ``uuid.uuid5(EVENT_ID_NAMESPACE, name).hex``, computed without the UUID object (a
    third of the cost; every signal and fill derives ids): the SHA-1 of namespace and
    name, its first 16 bytes with the version (5) and RFC 4122 variant bits set, as
    uuid5 sets them. tests/unit/test_event_ids.py compares the two.
    """
    name = ":".join([parent_id, *(str(d) for d in discriminators)])
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()
