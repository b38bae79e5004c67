"""Read models of the configuration store: what a stage or a backtest knows of its strategies
and of the kill switch.

Pure pydantic values (no SQLAlchemy), so the strategy host, the risk policy and the backtest
take them without importing the database layer. :mod:`alpha_panda.db` builds them from its
rows and re-exports them, so ``db.RuntimeConfig`` keeps working for its callers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.events import ExecutionMode

# The kill switch's scope for "every strategy" (a halt's scope is otherwise a strategy_id).
HALT_ALL = "*"


class ReadModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InstrumentRef(ReadModel):
    token: int = Field(gt=0)
    symbol: str = Field(min_length=1, max_length=64)


class StrategyConfigRecord(ReadModel):
    strategy_id: str
    kind: str
    instruments: tuple[InstrumentRef, ...]
    # JSON-safe: Decimal parameters are strings; StrategyFactory.validate_params parses them.
    parameters: dict[str, Any]
    enabled: bool
    execution_mode: ExecutionMode
    risk_limits: dict[str, Any]
    updated_at: datetime


class HaltRecord(ReadModel):
    scope: str
    reason: str
    created_by: str
    created_at: datetime
    # When a risk manager / the trading engine applied it (see acknowledge_halts); None:
    # not yet.
    applied_at: datetime | None = None
    engine_applied_at: datetime | None = None

    @property
    def is_global(self) -> bool:
        return self.scope == HALT_ALL


class RuntimeConfig(ReadModel):
    """Everything a stage needs from the store, read in one go and never mutated."""

    strategies: tuple[StrategyConfigRecord, ...]
    halt_all: bool
    halted_strategies: frozenset[str]
    # scope -> reason; scope is HALT_ALL or a strategy_id.
    halt_reasons: dict[str, str]
    halts: tuple[HaltRecord, ...] = ()

    @property
    def unapplied_halts(self) -> tuple[HaltRecord, ...]:
        return tuple(h for h in self.halts if h.applied_at is None)

    @property
    def engine_unapplied_halts(self) -> tuple[HaltRecord, ...]:
        return tuple(h for h in self.halts if h.engine_applied_at is None)

    @property
    def enabled_strategies(self) -> tuple[StrategyConfigRecord, ...]:
        return tuple(s for s in self.strategies if s.enabled)
