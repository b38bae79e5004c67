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


def strategy_instrument_key(strategy_id: str, instrument_token: int) -> str:
    """``"{strategy_id}:{instrument_token}"``: signals' key, and the strategy runner's."""
    return f"{strategy_id}:{instrument_token}"


def signal_key(signal: TradingSignal) -> str:
    return strategy_instrument_key(signal.strategy_id, signal.instrument_token)


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
    envelope: EventEnvelope[Any] | None  # None when forwarding bytes unchanged
    headers: tuple[tuple[str, bytes], ...] = ()


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


# Repartition topics, owned by one stage each. A stage whose state is keyed differently
# from its input forwards the input's bytes unchanged (envelope and envelope key intact)
# under a new record key, so that every state key is written from exactly one partition.
def strategy_of_signal(signal: TradingSignal) -> str:
    return signal.strategy_id


def instrument_of_validated(validated: ValidatedSignal) -> str:
    return str(validated.signal.instrument_token)


def instrument_of_fill(fill: OrderFill) -> str:
    return str(fill.instrument_token)


def instrument_of_rejected(rejected: RejectedSignal) -> str:
    return str(rejected.signal.instrument_token)


RISK_SIGNALS_BY_STRATEGY = TopicSpec(
    "alpha-panda.risk-manager.signals-by-strategy",
    6,
    EventType.SIGNAL_GENERATED,
    strategy_of_signal,
)
# Same partition count and key as market.ticks: Faust's assignor then gives a worker the
# same partition numbers of both, so one agent sees an instrument's ticks and orders.
ENGINE_SIGNALS_BY_INSTRUMENT = TopicSpec(
    "alpha-panda.trading-engine.signals-by-instrument",
    MARKET_TICKS.partitions,
    EventType.SIGNAL_VALIDATED,
    instrument_of_validated,
)
# A strategy's own fills and rejections, brought to the partition of its instrument's
# ticks (and of its strategy-state entry) for the strategy runner: one topic per event
# type, both partitioned as market.ticks.
RUNNER_FILLS_BY_INSTRUMENT = TopicSpec(
    "alpha-panda.strategy-runner.fills-by-instrument",
    MARKET_TICKS.partitions,
    EventType.ORDER_FILLED,
    instrument_of_fill,
)
RUNNER_REJECTIONS_BY_INSTRUMENT = TopicSpec(
    "alpha-panda.strategy-runner.rejections-by-instrument",
    MARKET_TICKS.partitions,
    EventType.SIGNAL_REJECTED,
    instrument_of_rejected,
)
INTERNAL_TOPICS: tuple[TopicSpec, ...] = (
    RISK_SIGNALS_BY_STRATEGY,
    ENGINE_SIGNALS_BY_INSTRUMENT,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
)
INTERNAL_TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in INTERNAL_TOPICS}
ALL_TOPICS_BY_NAME: dict[str, TopicSpec] = {**TOPICS_BY_NAME, **INTERNAL_TOPICS_BY_NAME}


def dlq_name(topic: str) -> str:
    if topic not in ALL_TOPICS_BY_NAME:
        raise KeyError(f"unknown topic {topic!r}")
    return topic + DLQ_SUFFIX


def partitions_of(name: str) -> int:
    if name in ALL_TOPICS_BY_NAME:
        return ALL_TOPICS_BY_NAME[name].partitions
    if name.endswith(DLQ_SUFFIX) and name.removesuffix(DLQ_SUFFIX) in ALL_TOPICS_BY_NAME:
        return DLQ_PARTITIONS
    raise KeyError(f"unknown topic {name!r}")


def all_topic_layout() -> dict[str, int]:
    """Every topic Alpha Panda owns (pipeline, repartition and DLQ topics) with partitions."""
    specs = (*TOPICS, *INTERNAL_TOPICS)
    layout = {t.name: t.partitions for t in specs}
    layout.update({t.dlq_name: DLQ_PARTITIONS for t in specs})
    return layout


# Changelog topics of the stages' Faust tables: "{app id}-{table}-changelog", where the
# app id is the stage's consumer group. Named here so tools (rebuild, dlq) never guess.
class Tables:
    STRATEGY_STATE = "strategy-state"
    RISK_STATE = "risk-state"
    LAST_PRICES = "last-prices"
    PENDING_ORDERS = "pending-orders"
    PORTFOLIOS = "portfolios"
    RECENT_FILLS = "recent-fills"
    RECENT_REJECTIONS = "recent-rejections"
    OWN_POSITIONS = "own-positions"
    LIVE_ORDERS = "live-orders"


def changelog_topic(consumer_group: str, table: str) -> str:
    return f"{consumer_group}-{table}-changelog"


# One record per log the pipeline has run on: its id and what a crash of its broker loses
# (alpha_panda/log_identity.py). The Redis mirror is tied to the latest id.
LOG_IDENTITY = "alpha-panda.log-identity"
LOG_IDENTITY_PARTITIONS = 1
