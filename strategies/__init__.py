"""Pure strategy logic: ticks in, trading signals out, no I/O.

The strategy-runner agent owns the Kafka side; this package only decides.
"""

from strategies.base import BaseStrategy, StrategyConfig, StrategyParams
from strategies.factory import STRATEGY_REGISTRY, StrategyConfigError, StrategyFactory
from strategies.mean_reversion import MeanReversionParams, MeanReversionStrategy
from strategies.momentum import MomentumParams, SimpleMomentumStrategy

__all__ = [
    "STRATEGY_REGISTRY",
    "BaseStrategy",
    "MeanReversionParams",
    "MeanReversionStrategy",
    "MomentumParams",
    "SimpleMomentumStrategy",
    "StrategyConfig",
    "StrategyConfigError",
    "StrategyFactory",
    "StrategyParams",
]
