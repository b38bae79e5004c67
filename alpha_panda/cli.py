"""`alpha-panda` command line: one subcommand module per concern under alpha_panda/commands."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from alpha_panda.settings import SettingsError

# 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe.
EXIT_BROKEN_PIPE = 141

# Each module exposes register(subparsers); the handler it sets returns an exit code.
COMMAND_MODULES = (
    "alpha_panda.commands.broker",
    "alpha_panda.commands.topics",
    "alpha_panda.commands.db",
    "alpha_panda.commands.strategies",
    "alpha_panda.commands.users",
    "alpha_panda.commands.calendar",
    "alpha_panda.commands.risk",
    "alpha_panda.commands.run",
    "alpha_panda.commands.ops",
    "alpha_panda.commands.backtest",
    "alpha_panda.commands.zerodha",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpha-panda", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except SettingsError as exc:
        print(f"alpha-panda: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`alpha-panda dlq list | head`): stop quietly, as `yes |
        # head` does. stdout goes to /dev/null so the interpreter's final flush cannot
        # raise again ("Exception ignored ... BrokenPipeError").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
