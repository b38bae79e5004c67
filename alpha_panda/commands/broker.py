"""`alpha-panda broker`: run the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys

from alpha_panda.broker import EmbeddedBroker, is_reachable
from alpha_panda.settings import get_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("broker", help="run the embedded broker (in-memory log)")
    parser.set_defaults(handler=run_broker)


def run_broker(args: argparse.Namespace) -> int:
    settings = get_settings()
    bootstrap = settings.broker.bootstrap_servers[0]
    host, _, port = bootstrap.rpartition(":")
    if is_reachable(bootstrap):
        print(f"alpha-panda: a broker already answers at {bootstrap}", file=sys.stderr)
        return 1
    broker = EmbeddedBroker(host or "127.0.0.1", int(port))
    broker.start()
    print(f"embedded broker on {broker.bootstrap} (in-memory log; Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM behaves like Ctrl-C: unwind to the `finally` that stops the broker.
    raise KeyboardInterrupt
