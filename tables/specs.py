"""Every Faust table of the pipeline, declared and typed once: name, key, partitions,
value type and its encode/decode.

A stage declares a table by passing its spec to ``StageContext.table`` /
``StageContext.write_behind_table``, which return a view typed by the spec's value type
and coded by its codec, so no handler or reader sees a table's JSON unless it asks for
it (the Redis mirror and the read API serve the JSON form, ``TypedTable.as_json``). The
stage specs (alpha_panda/stages.py) list which stage keeps which, so the changelog topics
("{consumer group}-{name}-changelog") the tools read follow from here too; the tools
decode what they read with the same ``decode``. Each table is co-partitioned with the
topic its key comes from: a key is written only by the worker owning that source
partition.

The JSON a codec writes is what the stages wrote before the codecs lived here, so
changelogs and log snapshots written by older code read back unchanged
(tests/unit/test_table_specs.py holds each one to it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from alpha_panda.domain.live_orders import LiveOrder
from alpha_panda.domain.own_position import OwnPosition
from alpha_panda.domain.paper_trader import PendingLimitOrder
from alpha_panda.domain.strategy_host import StrategyStateEntry
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_REJECTED,
    Tables,
)
from tables.last_price import LastPrice
from tables.portfolio import Portfolio
from tables.recent import RecentFills, RecentRejections
from tables.risk_state import StrategyRiskState

V = TypeVar("V")
# What a value is in the changelog: JSON (dicts, lists, strings, numbers).
Json = Any


@dataclass(frozen=True)
class TableSpec(Generic[V]):
    name: str
    key: str  # what a key is, for the reader (keys are strings)
    partitions: int
    value: str  # the value type, for the reader (docs, /health)
    encode: Callable[[V], Json]
    decode: Callable[[Json], V]
    help: str
    # Rewritten on every tick: changelog writes coalesced per offset commit
    # (alpha_panda/write_behind.py). Such a table's memory holds the value itself, so
    # its type must not be a dict: a dict there is JSON recovered from the changelog.
    write_behind: bool = False


def _pending_orders_json(orders: Sequence[PendingLimitOrder]) -> Json:
    return [o.to_json_dict() for o in orders]


def _pending_orders(raw: Json) -> tuple[PendingLimitOrder, ...]:
    return tuple(PendingLimitOrder.from_json_dict(o) for o in raw)


STRATEGY_STATE: TableSpec[StrategyStateEntry] = TableSpec(
    Tables.STRATEGY_STATE,
    key="{strategy_id}:{instrument_token}",
    partitions=MARKET_TICKS.partitions,
    value="StrategyStateEntry (alpha_panda/domain/strategy_host.py)",
    encode=StrategyStateEntry.to_json_dict,
    decode=StrategyStateEntry.from_json_dict,
    help="Rolling state per strategy:instrument, with replay bookkeeping",
    write_behind=True,
)
OWN_POSITIONS: TableSpec[OwnPosition] = TableSpec(
    Tables.OWN_POSITIONS,
    key="{strategy_id}:{instrument_token}",
    partitions=MARKET_TICKS.partitions,
    value="OwnPosition (alpha_panda/domain/own_position.py)",
    encode=OwnPosition.to_json_dict,
    decode=OwnPosition.from_json_dict,
    help="A strategy's own fills and rejections per strategy:instrument, for the strategy",
)
RISK_STATE: TableSpec[StrategyRiskState] = TableSpec(
    Tables.RISK_STATE,
    key="strategy_id",
    partitions=RISK_SIGNALS_BY_STRATEGY.partitions,
    value="StrategyRiskState (tables/risk_state.py)",
    encode=StrategyRiskState.to_json_dict,
    decode=StrategyRiskState.from_json_dict,
    help="Pre-trade risk state per strategy",
    write_behind=True,
)
# Both the trading engine and the portfolio manager keep one (in their own consumer
# group, so two changelogs); each writes the fields it reads (see tables/last_price.py).
LAST_PRICES: TableSpec[LastPrice] = TableSpec(
    Tables.LAST_PRICES,
    key="instrument_token",
    partitions=MARKET_TICKS.partitions,
    value="LastPrice (tables/last_price.py)",
    encode=LastPrice.to_json_dict,
    decode=LastPrice.from_json_dict,
    help="Last trade per instrument",
    write_behind=True,
)
PENDING_ORDERS: TableSpec[tuple[PendingLimitOrder, ...]] = TableSpec(
    Tables.PENDING_ORDERS,
    key="instrument_token",
    partitions=MARKET_TICKS.partitions,
    value="PendingLimitOrders, oldest first (alpha_panda/domain/paper_trader.py)",
    encode=_pending_orders_json,
    decode=_pending_orders,
    help="Resting paper LIMIT orders per instrument",
)
LIVE_ORDERS: TableSpec[LiveOrder] = TableSpec(
    Tables.LIVE_ORDERS,
    key="order tag",
    partitions=MARKET_TICKS.partitions,
    value="LiveOrder (alpha_panda/domain/live_orders.py)",
    encode=LiveOrder.to_json_dict,
    decode=LiveOrder.from_json_dict,
    help="Live orders placed at Kite, by tag",
)
PORTFOLIOS: TableSpec[Portfolio] = TableSpec(
    Tables.PORTFOLIOS,
    key="strategy_id",
    partitions=ORDERS_FILLED_PAPER.partitions,
    value="Portfolio (tables/portfolio.py)",
    encode=Portfolio.to_json_dict,
    decode=Portfolio.from_json_dict,
    help="Portfolio per strategy",
)
RECENT_FILLS: TableSpec[RecentFills] = TableSpec(
    Tables.RECENT_FILLS,
    key="strategy_id",
    partitions=ORDERS_FILLED_PAPER.partitions,
    value="RecentFills, newest first (tables/recent.py)",
    encode=RecentFills.to_json,
    decode=RecentFills.from_json,
    help="Recent fills per strategy",
)
RECENT_REJECTIONS: TableSpec[RecentRejections] = TableSpec(
    Tables.RECENT_REJECTIONS,
    key="{strategy_id}:{instrument_token}",
    partitions=SIGNALS_REJECTED.partitions,
    value="RecentRejections, newest first (tables/recent.py)",
    encode=RecentRejections.to_json,
    decode=RecentRejections.from_json,
    help="Recent rejections per strategy:instrument",
)

ALL_TABLES: tuple[TableSpec[Any], ...] = (
    STRATEGY_STATE,
    OWN_POSITIONS,
    RISK_STATE,
    LAST_PRICES,
    PENDING_ORDERS,
    LIVE_ORDERS,
    PORTFOLIOS,
    RECENT_FILLS,
    RECENT_REJECTIONS,
)
