"""`alpha-panda halt` / `alpha-panda resume`: the operator kill switch.

A halt is a row in ``trading_halts``; the risk manager rejects new signals for a halted
scope from its next configuration refresh (``database.config_refresh_s``) on. Positions
already open are left alone: flattening is a separate, deliberate decision.
"""

from __future__ import annotations

import argparse
import getpass

from alpha_panda.commands.db import EXIT_OK, run_store
from alpha_panda.db import HALT_ALL, SessionFactory, add_halt, list_halts, remove_halt

DEFAULT_REASON = "halted by operator"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    halt = subparsers.add_parser("halt", help="kill switch: stop new orders")
    scope = halt.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="halt all trading")
    scope.add_argument("--strategy", metavar="ID", help="halt one strategy")
    scope.add_argument("--list", action="store_true", help="show the halts in force")
    halt.add_argument("--reason", default=DEFAULT_REASON, help="recorded with the halt")
    halt.set_defaults(handler=halt_command)

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


def halt_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        if args.list:
            halts = await list_halts(sessions)
            for h in halts:
                print(
                    f"{_label(h.scope)}: halted {h.created_at:%Y-%m-%d %H:%M:%S}Z "
                    f"by {h.created_by}: {h.reason}"
                )
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
        return EXIT_OK

    return run_store(action)


def resume_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        scope = HALT_ALL if args.all else args.strategy
        removed = await remove_halt(sessions, scope)
        print(f"resumed {_label(scope)}" if removed else f"{_label(scope)} was not halted")
        if scope != HALT_ALL and any(h.is_global for h in await list_halts(sessions)):
            print("note: all trading is still halted (alpha-panda resume --all)")
        return EXIT_OK

    return run_store(action)
