"""An example Alpha Panda strategy plug-in (see docs/STRATEGIES.md)."""

from alpha_panda_example_strategy.breakout import BreakoutParams, BreakoutStrategy

__all__ = ["BreakoutParams", "BreakoutStrategy"]
