"""`alpha-panda strategies list|show|add|enable|disable|set-param|seed-demo`.

Stages pick changes up on their next configuration refresh (``database.config_refresh_s``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from alpha_panda.commands.db import EXIT_BAD_INPUT, EXIT_OK, fail, run_store
from alpha_panda.db import (
    HALT_ALL,
    ConfigValidationError,
    HaltRecord,
    SessionFactory,
    StrategyConfigRecord,
    add_strategy,
    get_strategy,
    list_halts,
    list_strategies,
    seed_demo_strategies,
    set_enabled,
    set_param,
)
from alpha_panda.domain.products import PRODUCTS
from models.events import ExecutionMode
from strategies.factory import STRATEGY_REGISTRY, StrategyFactory


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("strategies", help="strategy configuration")
    sub = parser.add_subparsers(dest="strategies_command", required=True)

    p = sub.add_parser("list", help="every configured strategy")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=list_command)

    p = sub.add_parser("show", help="one strategy")
    p.add_argument("strategy_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=show_command)

    p = sub.add_parser("add", help="add a strategy (parameters default per kind)")
    p.add_argument("strategy_id", metavar="ID")
    p.add_argument(
        "--kind",
        required=True,
        help="strategy kind (see `strategies kinds`), or a plug-in class as module:Class",
    )
    p.add_argument(
        "--instrument",
        action="append",
        default=[],
        metavar="TOKEN:SYMBOL",
        help="instrument to trade (repeatable), e.g. 256265:'NIFTY 50'",
    )
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="(repeatable)"
    )
    p.add_argument(
        "--mode", choices=[m.value for m in ExecutionMode], default=ExecutionMode.PAPER.value
    )
    p.add_argument(
        "--risk",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="per-strategy risk limit override (repeatable)",
    )
    p.add_argument(
        "--product",
        choices=PRODUCTS,
        help="product traded (default ALPHA_PANDA_RISK_PRODUCT): MIS is squared off before "
        "the close, CNC fills pay delivery charges, live orders go to Kite with it; stored "
        "as the risk override `product`",
    )
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p.set_defaults(handler=add_command)

    for name, enabled in (("enable", True), ("disable", False)):
        p = sub.add_parser(name, help=f"{name} a strategy")
        p.add_argument("strategy_id", metavar="ID")
        p.set_defaults(handler=enable_command, enabled=enabled)

    p = sub.add_parser("set-param", help="change parameters (validated against the kind)")
    p.add_argument("strategy_id", metavar="ID")
    p.add_argument("assignments", nargs="+", metavar="NAME=VALUE")
    p.set_defaults(handler=set_param_command)

    p = sub.add_parser("seed-demo", help="create the demo strategies if none exist")
    p.set_defaults(handler=seed_command)

    p = sub.add_parser("kinds", help="strategy kinds: built-in and installed plug-ins")
    p.set_defaults(handler=kinds_command)


# -- argument parsing ------------------------------------------------------------------


def parse_assignments(items: Sequence[str], option: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``; ConfigValidationError names ``option``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigValidationError(option, f"expected NAME=VALUE, got {item!r}")
        if name in out:
            raise ConfigValidationError(option, f"{name!r} given twice")
        out[name] = value.strip()
    return out


def parse_instruments(items: Sequence[str]) -> list[tuple[int, str]]:
    if not items:
        raise ConfigValidationError("--instrument", "at least one TOKEN:SYMBOL is required")
    out: list[tuple[int, str]] = []
    for item in items:
        token_text, sep, symbol = item.partition(":")
        try:
            token = int(token_text.strip())
        except ValueError:
            token = 0
        if not sep or token <= 0 or not symbol.strip():
            raise ConfigValidationError(
                "--instrument", f"expected TOKEN:SYMBOL with a positive integer token, got {item!r}"
            )
        out.append((token, symbol.strip()))
    return out


# -- output ----------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    if value is None:  # only allowed_instruments can be null: no restriction
        return "all"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _format_mapping(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_format_value(v)}" for k, v in sorted(values.items())) or "-"


def _format_instruments(record: StrategyConfigRecord) -> str:
    return ",".join(f"{i.token}:{i.symbol}" for i in record.instruments)


def _as_json(record: StrategyConfigRecord, halted: bool) -> dict[str, Any]:
    return {**record.model_dump(mode="json"), "halted": halted}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _halted(record: StrategyConfigRecord, halts: list[HaltRecord]) -> bool:
    return any(h.scope in (HALT_ALL, record.strategy_id) for h in halts)


def _describe(record: StrategyConfigRecord) -> str:
    return (
        f"{record.strategy_id} ({record.kind}, {record.execution_mode.value}, "
        f"{'enabled' if record.enabled else 'disabled'}) "
        f"instruments={_format_instruments(record)} "
        f"parameters: {_format_mapping(record.parameters)} "
        f"risk: {_format_mapping(record.risk_limits)}"
    )


# -- handlers --------------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        records = await list_strategies(sessions)
        halts = await list_halts(sessions)
        if args.json:
            print(json.dumps([_as_json(r, _halted(r, halts)) for r in records], indent=2))
            return EXIT_OK
        for halt in halts:
            if halt.is_global:
                print(
                    f"ALL TRADING HALTED since {halt.created_at:%Y-%m-%d %H:%M:%S}Z "
                    f"by {halt.created_by}: {halt.reason}"
                )
        if not records:
            print("no strategies configured (try `alpha-panda strategies seed-demo`)")
            return EXIT_OK
        rows = [["ID", "KIND", "MODE", "ENABLED", "HALTED", "INSTRUMENTS", "PARAMETERS", "RISK"]]
        rows += [
            [
                r.strategy_id,
                r.kind,
                r.execution_mode.value,
                "yes" if r.enabled else "no",
                "yes" if _halted(r, halts) else "no",
                _format_instruments(r),
                _format_mapping(r.parameters),
                _format_mapping(r.risk_limits),
            ]
            for r in records
        ]
        print(_table(rows))
        return EXIT_OK

    return run_store(action)


def show_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        record = await get_strategy(sessions, args.strategy_id)
        halts = await list_halts(sessions)
        if args.json:
            print(json.dumps(_as_json(record, _halted(record, halts)), indent=2))
        else:
            print(_describe(record) + (" HALTED" if _halted(record, halts) else ""))
        return EXIT_OK

    return run_store(action)


def add_command(args: argparse.Namespace) -> int:
    try:
        instruments = parse_instruments(args.instrument)
        params = parse_assignments(args.param, "--param")
        risk = parse_assignments(args.risk, "--risk")
        if args.product is not None:
            if "product" in risk:
                raise ConfigValidationError("--product", "given twice (also as --risk product=)")
            risk["product"] = args.product
    except ConfigValidationError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def action(sessions: SessionFactory) -> int:
        record = await add_strategy(
            sessions,
            args.strategy_id,
            args.kind,
            instruments,
            params,
            enabled=not args.disabled,
            execution_mode=args.mode,
            risk_limits=risk,
        )
        print(f"added {_describe(record)}")
        return EXIT_OK

    return run_store(action)


def enable_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        record = await set_enabled(sessions, args.strategy_id, args.enabled)
        print(f"strategy {record.strategy_id} {'enabled' if record.enabled else 'disabled'}")
        return EXIT_OK

    return run_store(action)


def set_param_command(args: argparse.Namespace) -> int:
    try:
        updates = parse_assignments(args.assignments, "NAME=VALUE")
    except ConfigValidationError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def action(sessions: SessionFactory) -> int:
        record = await set_param(sessions, args.strategy_id, updates)
        print(f"strategy {record.strategy_id} parameters: {_format_mapping(record.parameters)}")
        return EXIT_OK

    return run_store(action)


def seed_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        created = await seed_demo_strategies(sessions)
        for strategy_id in created:
            print(f"created demo strategy {strategy_id}")
        if not created:
            print("strategies already configured; nothing seeded")
        return EXIT_OK

    return run_store(action)


def kinds_command(args: argparse.Namespace) -> int:
    """Every kind with its parameters; plug-ins that could not be loaded, with why."""
    for kind in StrategyFactory.known_kinds():
        cls = StrategyFactory.strategy_class(kind)
        params = ", ".join(cls.params_model.model_fields)
        origin = "built-in" if kind in STRATEGY_REGISTRY else f"plug-in {cls.__module__}"
        print(f"{kind}  ({origin})  parameters: {params}")
    problems = StrategyFactory.plugin_problems()
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    return EXIT_OK
