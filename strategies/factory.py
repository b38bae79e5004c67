"""Turn a strategy kind plus untrusted parameters into a validated, ready instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from strategies.base import BaseStrategy, StrategyConfig, StrategyParams
from strategies.mean_reversion import MeanReversionStrategy
from strategies.momentum import SimpleMomentumStrategy
from strategies.plugins import PluginScan, import_strategy, is_import_path, scan_entry_points

# kind -> class, the built-in kinds. Strategies of the user's own package join them through
# entry points or import paths (strategies/plugins.py) without an edit here.
STRATEGY_REGISTRY: dict[str, type[BaseStrategy[Any]]] = {
    cls.kind: cls for cls in (SimpleMomentumStrategy, MeanReversionStrategy)
}

# Demo defaults, JSON-safe (Decimals as strings) so they can be written into config.
_DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    SimpleMomentumStrategy.kind: {"lookback": 5, "threshold_pct": "0.5", "quantity": 10},
    MeanReversionStrategy.kind: {
        "window": 20,
        "entry_z": "2.0",
        "exit_z": "0.5",
        "quantity": 10,
    },
}


class StrategyConfigError(ValueError):
    """A strategy's configuration is unusable; says which strategy, which field, why."""

    def __init__(self, strategy_id: str, field: str | None, message: str) -> None:
        self.strategy_id = strategy_id
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"strategy {self.strategy_id!r}"
        if self.field is not None:
            where += f": parameter {self.field!r}"
        return f"{where}: {self.message}"


def _describe(error: ErrorDetails, model: type[StrategyParams]) -> tuple[str | None, str]:
    field = ".".join(str(part) for part in error["loc"]) or None
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(model.model_fields))
        return field, f"unknown parameter (known: {known})"
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and "error" in ctx:
        # Drop pydantic's "Value error, " prefix; our validators already say what is wrong.
        return field, str(ctx["error"])
    return field, error["msg"]


_plugin_scan: PluginScan | None = None


def _plugins() -> PluginScan:
    # Scanned on first use, not at import: loading a plug-in runs the user's code.
    global _plugin_scan
    if _plugin_scan is None:
        _plugin_scan = scan_entry_points(frozenset(STRATEGY_REGISTRY))
    return _plugin_scan


class StrategyFactory:
    """Validation and construction for every strategy kind: built-in, entry-point plug-in,
    or a ``module:Class`` import path."""

    @classmethod
    def known_kinds(cls) -> list[str]:
        return sorted({*STRATEGY_REGISTRY, *_plugins().classes})

    @classmethod
    def plugin_problems(cls) -> tuple[str, ...]:
        """Why entry-point plug-ins were skipped (for the caller to log)."""
        return _plugins().problems

    @classmethod
    def reload_plugins(cls) -> None:
        """Scan the entry points again on next use (after installing a package)."""
        global _plugin_scan
        _plugin_scan = None

    @classmethod
    def strategy_class(cls, kind: str, strategy_id: str = "?") -> type[BaseStrategy[Any]]:
        found = STRATEGY_REGISTRY.get(kind) or _plugins().classes.get(kind)
        if found is not None:
            return found
        if is_import_path(kind):
            try:
                return import_strategy(kind)
            except ValueError as exc:
                raise StrategyConfigError(strategy_id, "kind", str(exc)) from None
        known = ", ".join(cls.known_kinds())
        raise StrategyConfigError(
            strategy_id,
            "kind",
            f"unknown strategy kind {kind!r} (known: {known}; or module:Class)",
        ) from None

    @classmethod
    def validate_params(
        cls, kind: str, params: Mapping[str, Any], strategy_id: str = "?"
    ) -> StrategyParams:
        """Validated params model for `kind`, or StrategyConfigError naming the first
        offending parameter and the rule it breaks (every problem is in `__cause__`)."""
        model = cls.strategy_class(kind, strategy_id).params_model
        if not isinstance(params, Mapping):
            raise StrategyConfigError(
                strategy_id, None, f"parameters must be a mapping, got {type(params).__name__}"
            )
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            field, message = _describe(exc.errors()[0], model)
            extra = exc.error_count() - 1
            if extra:
                message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
            raise StrategyConfigError(strategy_id, field, message) from exc

    @classmethod
    def create(
        cls, kind: str, config: StrategyConfig, params: Mapping[str, Any]
    ) -> BaseStrategy[Any]:
        strategy_cls = cls.strategy_class(kind, config.strategy_id)
        validated = cls.validate_params(kind, params, config.strategy_id)
        return strategy_cls(config, validated)

    @classmethod
    def default_params(cls, kind: str) -> dict[str, Any]:
        strategy_cls = cls.strategy_class(kind)
        if kind in _DEFAULT_PARAMS:
            return dict(_DEFAULT_PARAMS[kind])
        # A plug-in may offer defaults; without them every parameter must be given.
        return dict(getattr(strategy_cls, "default_params", {}))
