"""The topic registry: every topic name, its partition count, its event types and its key.

No other module spells a topic name; code refers to ``MARKET_TICKS.name`` and routes by it.
There are no wildcard subscriptions anywhere.

Keys (see docs/ARCHITECTURE.md for the reasoning):
- ``market.ticks``: ``str(instrument_token)``: one instrument's ticks stay in order.
- ``trading.signals.*``: ``"{strategy_id}:{instrument_token}"``; validated and rejected
  preserve the generated signal's key byte for byte.
- ``orders.filled.*``: ``strategy_id``: a portfolio is one strategy, so every fill of a
  portfolio lands in one partition, in the order the engine produced it, and the portfolio
  manager can own each portfolio from exactly one partition.
- ``{topic}.dlq``: the original record's key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from models.codec import build_envelope, encode
from models.envelope import EventEnvelope, EventType
from models.events import MarketTick, OrderFill, RejectedSignal, TradingSignal, ValidatedSignal

DLQ_SUFFIX = ".dlq"
DLQ_PARTITIONS = 1


def tick_key(tick: MarketTick) -> str:
    return str(tick.instrument_token)


def signal_key(signal: TradingSignal) -> str:
    return f"{signal.strategy_id}:{signal.instrument_token}"


def validated_key(validated: ValidatedSignal) -> str:
    return signal_key(validated.signal)


def rejected_key(rejected: RejectedSignal) -> str:
    return signal_key(rejected.signal)


def fill_key(fill: OrderFill) -> str:
    return fill.strategy_id


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    event_type: EventType
    key_of: Callable[[Any], str]

    @property
    def dlq_name(self) -> str:
        return self.name + DLQ_SUFFIX

    def record(
        self, payload: BaseModel, *, event_id: str, ts: datetime, source: str
    ) -> OutgoingRecord:
        """The producer helper: wraps `payload` in an envelope keyed as this topic demands."""
        key = self.key_of(payload)
        envelope = build_envelope(
            self.event_type, payload, key=key, event_id=event_id, ts=ts, source=source
        )
        return OutgoingRecord(self.name, key.encode(), encode(envelope), envelope)


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    envelope: EventEnvelope[Any]


MARKET_TICKS = TopicSpec("market.ticks", 12, EventType.MARKET_TICK, tick_key)
SIGNALS_GENERATED = TopicSpec(
    "trading.signals.generated", 6, EventType.SIGNAL_GENERATED, signal_key
)
SIGNALS_VALIDATED = TopicSpec(
    "trading.signals.validated", 6, EventType.SIGNAL_VALIDATED, validated_key
)
SIGNALS_REJECTED = TopicSpec("trading.signals.rejected", 6, EventType.SIGNAL_REJECTED, rejected_key)
ORDERS_FILLED_PAPER = TopicSpec("orders.filled.paper", 3, EventType.ORDER_FILLED, fill_key)
ORDERS_FILLED_LIVE = TopicSpec("orders.filled.live", 3, EventType.ORDER_FILLED, fill_key)

TOPICS: tuple[TopicSpec, ...] = (
    MARKET_TICKS,
    SIGNALS_GENERATED,
    SIGNALS_VALIDATED,
    SIGNALS_REJECTED,
    ORDERS_FILLED_PAPER,
    ORDERS_FILLED_LIVE,
)
TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def dlq_name(topic: str) -> str:
    if topic not in TOPICS_BY_NAME:
        raise KeyError(f"unknown topic {topic!r}")
    return topic + DLQ_SUFFIX


def all_topic_layout() -> dict[str, int]:
    """Every topic Alpha Panda owns (pipeline topics and their DLQs) with partition counts."""
    layout = {t.name: t.partitions for t in TOPICS}
    layout.update({t.dlq_name: DLQ_PARTITIONS for t in TOPICS})
    return layout


def topic_spec(name: str) -> TopicSpec:
    try:
        return TOPICS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {sorted(TOPICS_BY_NAME)}") from None
