"""Each stage's shape, declared once: its agents and what they consume, what it produces,
the tables it keeps, its consumer group.

Read by the stages' classes (agents/*.py: each Faust agent subscribes to exactly its
spec's inputs through ``StageContext.run_agent``; each table is declared from its
TableSpec), by the app factory (every agent of the spec must be wired), by
``alpha-panda replay`` (which group offsets a stage has) and by the docs
(docs/ARCHITECTURE.md's stage table, written by scripts/stage_table.py: `make docs`).
tests/unit/test_stages.py builds every stage's app and checks its Faust agents and tables
against these specs, and the doc's table against what the script writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from alpha_panda.settings import Stage
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    TopicSpec,
)
from tables import specs as tables
from tables.specs import TableSpec


@dataclass(frozen=True)
class AgentSpec:
    """One Faust agent: its name and the topics it consumes, routed by topic name."""

    name: str
    inputs: tuple[TopicSpec, ...]


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    agents: tuple[AgentSpec, ...]
    outputs: tuple[TopicSpec, ...]
    tables: tuple[TableSpec[Any], ...]

    @property
    def consumer_group(self) -> str:
        return self.stage.consumer_group

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        """Every topic the stage consumes, in agent order, each once."""
        seen: dict[str, TopicSpec] = {}
        for agent in self.agents:
            for spec in agent.inputs:
                seen.setdefault(spec.name, spec)
        return tuple(seen.values())

    def agent(self, name: str) -> AgentSpec:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(f"{self.stage.value} has no agent {name!r}")


STAGES: Mapping[Stage, StageSpec] = MappingProxyType(
    {
        Stage.MARKET_FEED: StageSpec(
            Stage.MARKET_FEED,
            agents=(),  # a producer-only task (mock walk or Kite's ticker)
            outputs=(MARKET_TICKS,),
            tables=(),
        ),
        Stage.STRATEGY_RUNNER: StageSpec(
            Stage.STRATEGY_RUNNER,
            agents=(
                AgentSpec(
                    "strategy-feedback",
                    (ORDERS_FILLED_PAPER, ORDERS_FILLED_LIVE, SIGNALS_REJECTED),
                ),
                AgentSpec(
                    "strategy-runner",
                    (MARKET_TICKS, RUNNER_FILLS_BY_INSTRUMENT, RUNNER_REJECTIONS_BY_INSTRUMENT),
                ),
            ),
            outputs=(
                SIGNALS_GENERATED,
                RUNNER_FILLS_BY_INSTRUMENT,
                RUNNER_REJECTIONS_BY_INSTRUMENT,
            ),
            tables=(tables.STRATEGY_STATE, tables.OWN_POSITIONS),
        ),
        Stage.RISK_MANAGER: StageSpec(
            Stage.RISK_MANAGER,
            agents=(
                AgentSpec("risk-repartition", (SIGNALS_GENERATED,)),
                AgentSpec("risk-decide", (RISK_SIGNALS_BY_STRATEGY,)),
            ),
            outputs=(RISK_SIGNALS_BY_STRATEGY, SIGNALS_VALIDATED, SIGNALS_REJECTED),
            tables=(tables.RISK_STATE,),
        ),
        Stage.TRADING_ENGINE: StageSpec(
            Stage.TRADING_ENGINE,
            agents=(
                AgentSpec("engine-repartition", (SIGNALS_VALIDATED,)),
                AgentSpec("engine-execute", (MARKET_TICKS, ENGINE_SIGNALS_BY_INSTRUMENT)),
            ),
            outputs=(
                ENGINE_SIGNALS_BY_INSTRUMENT,
                ORDERS_FILLED_PAPER,
                ORDERS_FILLED_LIVE,
                SIGNALS_REJECTED,
            ),
            # live-orders only with Zerodha configured (alpha_panda/zerodha_wiring.py).
            tables=(tables.LAST_PRICES, tables.PENDING_ORDERS, tables.LIVE_ORDERS),
        ),
        Stage.PORTFOLIO_MANAGER: StageSpec(
            Stage.PORTFOLIO_MANAGER,
            agents=(
                AgentSpec("portfolio-fills", (ORDERS_FILLED_PAPER, ORDERS_FILLED_LIVE)),
                AgentSpec("portfolio-marks", (MARKET_TICKS,)),
                AgentSpec("portfolio-rejections", (SIGNALS_REJECTED,)),
            ),
            outputs=(),  # the read API and the Redis mirror
            tables=(
                tables.PORTFOLIOS,
                tables.RECENT_FILLS,
                tables.LAST_PRICES,
                tables.RECENT_REJECTIONS,
            ),
        ),
    }
)
