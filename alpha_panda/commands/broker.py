"""`alpha-panda broker`: run the embedded Kafka-protocol broker in the foreground.

Its log is restored from the data directory at start and saved at a clean stop
(``ALPHA_PANDA_BROKER_STORAGE=snapshot``, see alpha_panda/log_snapshot.py).
``--reset`` deletes the saved log on purpose, after a confirmation.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from alpha_panda.broker import EmbeddedBroker, is_reachable
from alpha_panda.embedded_log import close_log, durability, open_log, reset_log, snapshot_path
from alpha_panda.log_snapshot import SnapshotError, read_snapshot
from alpha_panda.settings import Settings, get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "broker", help="run the embedded broker (log saved at clean stop), or --reset its log"
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="delete the saved log (every record, changelog and committed offset) and exit",
    )
    parser.add_argument("--yes", action="store_true", help="with --reset: do not ask")
    parser.set_defaults(handler=run_broker)


def run_broker(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.reset:
        return _reset(settings, assume_yes=args.yes)
    bootstrap = settings.broker.bootstrap_servers[0]
    host, _, port = bootstrap.rpartition(":")
    if is_reachable(bootstrap):
        print(f"alpha-panda: a broker already answers at {bootstrap}", file=sys.stderr)
        return 1
    broker = EmbeddedBroker(host or "127.0.0.1", int(port))
    broker.start()
    opened = False
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            identity, note = asyncio.run(open_log(settings))
        except SnapshotError as exc:
            print(f"alpha-panda: cannot restore the saved log: {exc}", file=sys.stderr)
            return 1
        opened = True
        print(
            f"embedded broker on {broker.bootstrap} ({durability(settings)}); {note}; "
            f"log id {identity.log_id} (Ctrl-C stops it)",
            flush=True,
        )
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if opened and broker.process.poll() is None:
            try:
                print(asyncio.run(close_log(settings)), flush=True)
            except Exception as exc:
                print(f"alpha-panda: the log was NOT saved: {exc}", file=sys.stderr)
        broker.stop()


def _reset(settings: Settings, *, assume_yes: bool) -> int:
    path = snapshot_path(settings)
    bootstrap = settings.broker.bootstrap_servers[0]
    if is_reachable(bootstrap):
        # A running embedded broker would save its log over the reset at its next stop.
        print(
            f"alpha-panda: a broker answers at {bootstrap}; stop the pipeline first",
            file=sys.stderr,
        )
        return 1
    if not path.exists():
        print(f"no saved log at {path}; nothing to reset")
        return 0
    try:
        saved, _ = read_snapshot(path)
        what = (
            f"{saved.records} records and {len(saved.groups)} groups' offsets, "
            f"saved at {saved.saved_at}"
        )
    except (SnapshotError, OSError, ValueError) as exc:
        what = f"unreadable: {exc}"
    print(f"This deletes the saved log at {path} ({what}).")
    print("Every fill, portfolio changelog and committed offset in it is lost.")
    if not assume_yes:
        try:
            answer = input("Type 'reset' to delete it: ")
        except EOFError:
            answer = ""
        if answer.strip() != "reset":
            print("not reset")
            return 1
    reset_log(settings)
    print(f"deleted {path}: the next start begins a new, empty log")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM behaves like Ctrl-C: unwind to the `finally` that stops the broker.
    raise KeyboardInterrupt
