"""Strategies from the user's own package: entry points and import paths.

Two ways for a strategy class outside this repository to become a kind:

- **Entry point.** An installed distribution declares, in its pyproject.toml,

      [project.entry-points."alpha_panda.strategies"]
      breakout = "my_package.breakout:BreakoutStrategy"

  and ``breakout`` is a kind everywhere (runner, configuration CLI, backtest). The entry
  point's name is the kind; the class's own ``kind`` attribute must match it, because
  exported state records the class's kind.
- **Import path.** A configuration names the class directly as its kind,
  ``"my_package.breakout:BreakoutStrategy"`` (module, colon, class). Nothing needs
  registering; the module is imported when the kind is first used.

Either way the class must subclass :class:`strategies.base.BaseStrategy` with a
``params_model`` deriving from :class:`strategies.base.StrategyParams`; its parameters are
validated exactly like a built-in's. A class may set ``default_params`` (a JSON-safe dict)
for parameters a configuration leaves out.

A broken plug-in (its import raises, the object is not a strategy class, the kind clashes)
never raises out of here: it is left out and the reason is returned, for the caller to
log. This module does no logging and no I/O beyond importing the plug-in's modules, and
it does so only when asked (never at import time).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from strategies.base import BaseStrategy, StrategyParams

ENTRY_POINT_GROUP = "alpha_panda.strategies"


@dataclass(frozen=True)
class PluginScan:
    """What the entry points offered: usable classes by kind, and why others were not."""

    classes: dict[str, type[BaseStrategy[Any]]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def is_import_path(kind: str) -> bool:
    module, sep, name = kind.partition(":")
    return bool(sep and module and name)


def check_strategy_class(obj: object, where: str) -> type[BaseStrategy[Any]]:
    """``obj`` as a strategy class, or ValueError saying why it is not one."""
    if not isinstance(obj, type) or not issubclass(obj, BaseStrategy):
        raise ValueError(f"{where} is not a BaseStrategy subclass (got {obj!r})")
    if getattr(obj, "__abstractmethods__", None):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ValueError(f"{where} does not implement {missing}")
    kind = getattr(obj, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{where} has no `kind` string")
    params_model = getattr(obj, "params_model", None)
    if not isinstance(params_model, type) or not issubclass(params_model, StrategyParams):
        raise ValueError(f"{where}.params_model is not a StrategyParams subclass")
    defaults = getattr(obj, "default_params", {})
    if not isinstance(defaults, dict):
        raise ValueError(f"{where}.default_params must be a dict")
    return obj


def import_strategy(path: str) -> type[BaseStrategy[Any]]:
    """Import ``module:Class``; ValueError (with the cause) when that fails."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        obj: object = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # a plug-in may raise anything at import; report it
        raise ValueError(f"cannot import {path!r}: {type(exc).__name__}: {exc}") from exc
    return check_strategy_class(obj, path)


def scan_entry_points(reserved: frozenset[str]) -> PluginScan:
    """Load every entry point of :data:`ENTRY_POINT_GROUP`; ``reserved`` are the
    built-in kinds, which a plug-in may not replace."""
    classes: dict[str, type[BaseStrategy[Any]]] = {}
    problems: list[str] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        where = f"plug-in {ep.name!r} ({ep.value})"
        try:
            cls = check_strategy_class(ep.load(), where)
        except Exception as exc:  # a plug-in may raise anything at import; report it
            problems.append(f"{where} skipped: {type(exc).__name__}: {exc}")
            continue
        if classes.get(ep.name) is cls:
            continue  # the same distribution seen twice on sys.path
        if ep.name in reserved or ep.name in classes:
            problems.append(f"{where} skipped: kind {ep.name!r} is already taken")
            continue
        if cls.kind != ep.name:
            problems.append(
                f"{where} skipped: its class says kind {cls.kind!r}; the entry point's "
                "name must be the same"
            )
            continue
        classes[ep.name] = cls
    return PluginScan(classes, tuple(problems))
