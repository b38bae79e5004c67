"""The risk manager's per-signal decision, outside the agent: policy, precheck, rules.

Pure domain logic (no Faust, no I/O, no clock). :class:`RiskPolicy` holds the limits and
kill switch of the latest configuration; :meth:`RiskPolicy.decide` is everything the
risk stage decides for one signal, so the stage (agents/risk_manager.py) and the
backtest (alpha_panda/backtest) run the same code and reach the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

from alpha_panda.domain.risk_rules import Rejection, evaluate
from alpha_panda.domain.session_rules import SessionRules
from models.config import RuntimeConfig
from models.events import RejectionReason, TradingSignal
from tables.risk_state import KillSwitch, RiskConfigError, RiskLimits, StrategyRiskState


@dataclass(frozen=True)
class PolicyDecision:
    """One signal's outcome. ``new_state`` None: nothing to store (state unchanged)."""

    rejection: Rejection | None
    new_state: StrategyRiskState | None

    @property
    def approved(self) -> bool:
        return self.rejection is None


class RiskPolicy:
    """Limits and kill switch as of the latest configuration (refreshed in background)."""

    def __init__(self, defaults: RiskLimits, sessions: SessionRules | None = None) -> None:
        self.defaults = defaults
        # The trading-day rules (alpha_panda/domain/session_rules.py); None judges signals at
        # any hour.
        self.sessions = sessions
        self.limits: dict[str, RiskLimits] = {}
        self.unusable: dict[str, str] = {}  # strategy id -> why it may not trade
        self.kill_switch = KillSwitch()

    def configure(self, config: RuntimeConfig) -> list[tuple[str, str]]:
        """Adopt ``config``; returns (strategy id, error) for each invalid set of limits."""
        limits: dict[str, RiskLimits] = {}
        unusable: dict[str, str] = {}
        invalid: list[tuple[str, str]] = []
        for record in config.strategies:
            if not record.enabled:
                unusable[record.strategy_id] = "strategy is disabled"
                continue
            try:
                limits[record.strategy_id] = self.defaults.with_overrides(record.risk_limits)
            except RiskConfigError as exc:
                # Refuse rather than trade on defaults the operator did not mean.
                unusable[record.strategy_id] = f"risk limits invalid: {exc}"
                invalid.append((record.strategy_id, str(exc)))
        self.limits, self.unusable = limits, unusable
        self.kill_switch = KillSwitch.of(config)
        return invalid

    def precheck(self, signal: TradingSignal) -> tuple[RejectionReason, str] | None:
        sid = signal.strategy_id
        if sid in self.unusable:
            return RejectionReason.KILL_SWITCH, self.unusable[sid]
        if sid not in self.limits:
            return RejectionReason.STRATEGY_UNKNOWN, f"no configuration for strategy {sid!r}"
        return None

    def decide(
        self, signal: TradingSignal, signal_event_id: str, state: StrategyRiskState
    ) -> PolicyDecision:
        """The precheck, then the rules (:func:`~alpha_panda.domain.risk_rules.evaluate`) on
        ``state``."""
        pre = self.precheck(signal)
        if pre is not None:
            return PolicyDecision(Rejection(reason=pre[0], detail=pre[1][:500]), None)
        decision = evaluate(
            signal,
            signal_event_id,
            self.limits[signal.strategy_id],
            state,
            self.kill_switch,
            self.sessions,
        )
        return PolicyDecision(
            decision.rejection, None if decision.duplicate else decision.new_state
        )
