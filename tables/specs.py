"""Every Faust table of the pipeline, declared once: name, key, partitions, what it holds.

A stage declares a table by passing its spec to ``StageContext.table`` /
``StageContext.write_behind_table``; the stage specs (alpha_panda/stages.py) list which
stage keeps which, so the changelog topics ("{consumer group}-{name}-changelog") the
tools read follow from here too. Each table is co-partitioned with the topic its key
comes from: a key is written only by the worker owning that source partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_REJECTED,
    Tables,
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: str  # what a key is, for the reader (keys are strings)
    partitions: int
    value: str  # the value's shape, and where its encode/decode live
    help: str
    # Rewritten on every tick: changelog writes coalesced per offset commit
    # (alpha_panda/write_behind.py).
    write_behind: bool = False


STRATEGY_STATE = TableSpec(
    Tables.STRATEGY_STATE,
    key="{strategy_id}:{instrument_token}",
    partitions=MARKET_TICKS.partitions,
    value="strategy state entry with replay bookkeeping (alpha_panda/domain/strategy_host.py)",
    help="Rolling state per strategy:instrument, with replay bookkeeping",
    write_behind=True,
)
RISK_STATE = TableSpec(
    Tables.RISK_STATE,
    key="strategy_id",
    partitions=RISK_SIGNALS_BY_STRATEGY.partitions,
    value="StrategyRiskState (tables/risk_state.py to_json_dict / from_json_dict)",
    help="Pre-trade risk state per strategy",
    write_behind=True,
)
# Both the trading engine and the portfolio manager keep one (in their own consumer
# group, so two changelogs); each writes the fields it reads (see tables/last_price.py).
LAST_PRICES = TableSpec(
    Tables.LAST_PRICES,
    key="instrument_token",
    partitions=MARKET_TICKS.partitions,
    value="LastPrice (tables/last_price.py)",
    help="Last trade per instrument",
    write_behind=True,
)
PENDING_ORDERS = TableSpec(
    Tables.PENDING_ORDERS,
    key="instrument_token",
    partitions=MARKET_TICKS.partitions,
    value="list of PendingLimitOrder (alpha_panda/domain/paper_trader.py, JSON dicts)",
    help="Resting paper LIMIT orders per instrument",
)
LIVE_ORDERS = TableSpec(
    Tables.LIVE_ORDERS,
    key="order tag",
    partitions=MARKET_TICKS.partitions,
    value="LiveOrder (alpha_panda/domain/live_orders.py, JSON dicts)",
    help="Live orders placed at Kite, by tag",
)
PORTFOLIOS = TableSpec(
    Tables.PORTFOLIOS,
    key="strategy_id",
    partitions=ORDERS_FILLED_PAPER.partitions,
    value="Portfolio (tables/portfolio.py to_json_dict / from_json_dict)",
    help="Portfolio per strategy",
)
RECENT_FILLS = TableSpec(
    Tables.RECENT_FILLS,
    key="strategy_id",
    partitions=ORDERS_FILLED_PAPER.partitions,
    value="list of OrderFill JSON, newest first",
    help="Recent fills per strategy",
)
RECENT_REJECTIONS = TableSpec(
    Tables.RECENT_REJECTIONS,
    key="{strategy_id}:{instrument_token}",
    partitions=SIGNALS_REJECTED.partitions,
    value="list of RejectedSignal JSON with its event_id, newest first",
    help="Recent rejections per strategy:instrument",
)

ALL_TABLES: tuple[TableSpec, ...] = (
    STRATEGY_STATE,
    RISK_STATE,
    LAST_PRICES,
    PENDING_ORDERS,
    LIVE_ORDERS,
    PORTFOLIOS,
    RECENT_FILLS,
    RECENT_REJECTIONS,
)
