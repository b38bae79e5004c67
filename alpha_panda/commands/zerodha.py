"""`alpha-panda zerodha ...`: Zerodha Kite Connect commands.

`zerodha fake` runs the local Kite server (REST + ticker WebSocket + /_control/ fault
controls) on loopback until Ctrl-C/SIGTERM, for demos and for running the pipeline without a
Kite account. It only binds loopback: its control endpoints would let anyone who can reach
it expire tokens or fake fills.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from alpha_panda.commands.zerodha_session import add_session_commands
from alpha_panda.zerodha.fake_server import FakeKite

EXIT_OK = 0
EXIT_BAD_INPUT = 2
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "zerodha", help="Zerodha Kite Connect: daily login, status, local Kite server"
    )
    sub = parser.add_subparsers(dest="zerodha_command", required=True)

    p = sub.add_parser("fake", help="run the local Kite server on loopback (Ctrl-C stops it)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=5080, help="port (0 = any free port)")
    p.add_argument("--api-key", default="fake_api_key", help="the api_key it accepts")
    p.add_argument(
        "--api-secret",
        default="fake_api_secret",
        help="the api_secret the session checksum must be made with",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the price walk")
    p.add_argument("--tick-interval", type=float, default=0.2, help="seconds between market steps")
    p.add_argument(
        "--redirect-url",
        default=None,
        help="where /connect/login redirects with request_token (else it answers JSON)",
    )
    p.add_argument(
        "--issue-token",
        action="store_true",
        help="print a ready access token (skips the login exchange; fake server only)",
    )
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after N seconds (0 = until Ctrl-C)"
    )
    p.set_defaults(handler=fake_command)

    # The daily login and its status (alpha_panda/commands/zerodha_session.py).
    add_session_commands(sub)


def fake_command(args: argparse.Namespace) -> int:
    if args.host not in LOOPBACK_HOSTS:
        print(f"alpha-panda: --host must be a loopback address, not {args.host!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 <= args.port <= 65535:
        print("alpha-panda: --port must be within 0..65535", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.tick_interval <= 0:
        print("alpha-panda: --tick-interval must be > 0", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_serve(args))
    except OSError as exc:
        print(f"alpha-panda: cannot start the local Kite server: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    kite = FakeKite(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        seed=args.seed,
        tick_interval_s=args.tick_interval,
        redirect_url=args.redirect_url,
    )
    async with kite:
        lines = [
            f"local Kite server: {kite.root_url}",
            f"  root_url  {kite.root_url}",
            f"  ws_url    {kite.ws_url}",
            f"  login     {kite.login_url}?v=3&api_key={kite.api_key}",
            f"  controls  {kite.root_url}/_control/ (loopback only)",
        ]
        if args.issue_token:
            lines.append(f"  access_token {kite.issue_token()}")
        print("\n".join(lines), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration or None)
    print("local Kite server stopped", flush=True)
    return EXIT_OK
