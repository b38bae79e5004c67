"""A strategy's product: MIS, CNC or NRML, and everything it decides.

The product is a property of the strategy: its configuration's ``risk_limits.product``,
else the one default ``ALPHA_PANDA_RISK_PRODUCT``. :func:`strategy_product` is the only
place that resolution happens; from it follow, for every stage and the backtest:

- the risk manager's trading-day rule (the MIS cut-off) and the runner's MIS square-off
  (alpha_panda/domain/session_rules.py);
- the charges of the strategy's paper fills and live fills (:func:`fees_for_product`);
- the product of each order the Zerodha trader places at Kite for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from alpha_panda.domain.fees import FeeSchedule
from models.config import RuntimeConfig

# MIS: intraday, squared off before the close. CNC: delivery. NRML: carry-forward
# (derivatives); charged as intraday here, not modelled apart.
Product = Literal["MIS", "CNC", "NRML"]
PRODUCTS: tuple[Product, ...] = ("MIS", "CNC", "NRML")

_INTRADAY = FeeSchedule.intraday()
_DELIVERY = FeeSchedule.delivery()


def fees_for_product(product: str) -> FeeSchedule:
    """The charge schedule an order of ``product`` pays, paper or live: CNC the delivery
    one; MIS (and NRML) the intraday one."""
    return _DELIVERY if product == "CNC" else _INTRADAY


def strategy_product(risk_limits: Mapping[str, Any], default: str) -> Product:
    """The product of a strategy with these ``risk_limits`` overrides: theirs, else
    ``default`` (``ALPHA_PANDA_RISK_PRODUCT``). Raises ValueError for anything but
    MIS, CNC or NRML, as the risk manager refuses such limits."""
    value = risk_limits.get("product", default)
    if value not in PRODUCTS:
        raise ValueError(f"product must be one of {', '.join(PRODUCTS)}, got {value!r}")
    return cast(Product, value)


@dataclass(frozen=True)
class StrategyProducts:
    """Every configured strategy's product, as of one configuration."""

    default: Product = "MIS"
    by_strategy: Mapping[str, Product] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: RuntimeConfig, default: str) -> StrategyProducts:
        """Every strategy of ``config``, enabled or not (a disabled strategy's last approved
        signals still execute with its product). One whose product is invalid is left out:
        the risk manager refuses its signals for that reason."""
        by_strategy: dict[str, Product] = {}
        for record in config.strategies:
            try:
                by_strategy[record.strategy_id] = strategy_product(record.risk_limits, default)
            except ValueError:
                continue
        return cls(default=strategy_product({}, default), by_strategy=by_strategy)

    def product_of(self, strategy_id: str) -> Product | None:
        """The strategy's product; None for a strategy this configuration does not have."""
        return self.by_strategy.get(strategy_id)

    def fees_of(self, strategy_id: str) -> FeeSchedule:
        """The charges of the strategy's paper fills. A strategy the configuration no longer
        has (deleted after its signal was approved) pays the default product's: paper
        money, and the fill must still be booked."""
        return fees_for_product(self.by_strategy.get(strategy_id, self.default))
