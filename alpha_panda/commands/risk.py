"""`alpha-panda halt` / `alpha-panda resume`: the operator kill switch.

A halt is a row in ``trading_halts``. From its next configuration refresh
(``database.config_refresh_s``) on, the risk manager rejects new signals for a halted
scope and records when it applied the halt (``applied_at``); the trading engine refuses
to execute signals approved before it, cancels the scope's resting paper LIMIT orders and
its open orders at Kite, and records when it applied it (``engine_applied_at``).
Positions already open are left alone: flattening is a separate, deliberate decision.

Both commands print the database they wrote first, so a halt written to the wrong
database is visible at once; ``halt --wait N`` waits for the risk manager's
acknowledgement and fails when none comes. ``alpha-panda status`` shows the database,
the running pipeline's database and every halt with both acknowledgements.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from typing import Any

from alpha_panda.commands.db import EXIT_FAILED, EXIT_OK, run_store
from alpha_panda.db import (
    HALT_ALL,
    HaltRecord,
    SessionFactory,
    add_halt,
    describe_url,
    get_halt,
    list_halts,
    remove_halt,
)
from alpha_panda.pipeline_record import read_record
from alpha_panda.settings import get_settings

WAIT_POLL_S = 0.2

DEFAULT_REASON = "halted by operator"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    halt = subparsers.add_parser("halt", help="kill switch: stop new orders")
    scope = halt.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="halt all trading")
    scope.add_argument("--strategy", metavar="ID", help="halt one strategy")
    scope.add_argument("--list", action="store_true", help="show the halts in force")
    halt.add_argument("--reason", default=DEFAULT_REASON, help="recorded with the halt")
    halt.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait until the risk manager has applied the halt; exit 1 if it has not",
    )
    halt.set_defaults(handler=halt_command)

    status = subparsers.add_parser(
        "status", help="the database in use, the pipeline's, and the halts with their acks"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=status_command)

    resume = subparsers.add_parser("resume", help="lift a halt")
    scope = resume.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="lift the all-trading halt")
    scope.add_argument("--strategy", metavar="ID", help="lift one strategy's halt")
    resume.set_defaults(handler=resume_command)


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        # No passwd entry (containers running as an arbitrary uid).
        return "cli"


def _label(scope: str) -> str:
    return "all trading" if scope == HALT_ALL else f"strategy {scope}"


def _database_line() -> str:
    return f"database: {describe_url(get_settings().database.url)}"


def _applied(h: HaltRecord) -> str:
    if h.applied_at is None:
        return "NOT YET APPLIED by a risk manager"
    return f"applied by the risk manager {h.applied_at:%Y-%m-%d %H:%M:%S}Z"


def _engine_applied(h: HaltRecord) -> str:
    if h.engine_applied_at is None:
        return "NOT YET APPLIED by a trading engine"
    return f"applied by the trading engine {h.engine_applied_at:%Y-%m-%d %H:%M:%S}Z"


def halt_line(h: HaltRecord) -> str:
    return (
        f"{_label(h.scope)}: halted {h.created_at:%Y-%m-%d %H:%M:%S}Z by {h.created_by}: "
        f"{h.reason}; {_applied(h)}; {_engine_applied(h)}"
    )


async def _wait_applied(sessions: SessionFactory, scope: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        halt = await get_halt(sessions, scope)
        if halt is None:
            print(f"{_label(scope)} is no longer halted", file=sys.stderr)
            return EXIT_FAILED
        if halt.applied_at is not None:
            print(f"{_applied(halt)}")
            return EXIT_OK
        if time.monotonic() >= deadline:
            record = read_record(get_settings())
            pipeline = record.describe() if record is not None else "no pipeline record"
            print(
                f"alpha-panda: no risk manager applied the halt within {seconds:g} s; the "
                f"pipeline's database: {pipeline}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        await asyncio.sleep(WAIT_POLL_S)


def halt_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        print(_database_line())
        if args.list:
            halts = await list_halts(sessions)
            for h in halts:
                print(halt_line(h))
            if not halts:
                print("no halts in force")
            return EXIT_OK
        scope = HALT_ALL if args.all else args.strategy
        halt, created = await add_halt(sessions, scope, args.reason, _operator())
        if created:
            print(f"halted {_label(scope)}: {halt.reason}")
        else:
            print(
                f"{_label(scope)} already halted since {halt.created_at:%Y-%m-%d %H:%M:%S}Z "
                f"by {halt.created_by}: {halt.reason}"
            )
        if args.wait > 0:
            return await _wait_applied(sessions, scope, args.wait)
        return EXIT_OK

    return run_store(action)


def status_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        settings = get_settings()
        halts = await list_halts(sessions)
        record = read_record(settings)
        if args.json:
            body: dict[str, Any] = {
                "database": describe_url(settings.database.url),
                "data_dir": str(settings.data_dir),
                "pipeline": None
                if record is None
                else {
                    "database": record.url,
                    "stage": record.stage,
                    "pid": record.pid,
                    "running": record.running,
                    "same_database": record.url == describe_url(settings.database.url),
                },
                "halted": bool(halts),
                "halts": [h.model_dump(mode="json") for h in halts],
            }
            print(json.dumps(body, indent=2))
            return EXIT_OK
        print(_database_line())
        if record is None:
            print(f"pipeline: no record in {settings.data_dir} (not started with this data dir)")
        else:
            same = record.url == describe_url(settings.database.url)
            print(f"pipeline: {record.describe()}" + ("" if same else "  <- ANOTHER DATABASE"))
        if halts:
            print("HALTED")
        for h in halts:
            print("  " + halt_line(h))
        if not halts:
            print("no halts in force")
        return EXIT_OK

    return run_store(action)


def resume_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        print(_database_line())
        scope = HALT_ALL if args.all else args.strategy
        removed = await remove_halt(sessions, scope)
        print(f"resumed {_label(scope)}" if removed else f"{_label(scope)} was not halted")
        if scope != HALT_ALL and any(h.is_global for h in await list_halts(sessions)):
            print("note: all trading is still halted (alpha-panda resume --all)")
        return EXIT_OK

    return run_store(action)
