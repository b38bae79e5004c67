"""`alpha-panda zerodha login|status|logout`: the daily Kite login and what it left behind.

Added to the `zerodha` command group of :mod:`alpha_panda.commands.zerodha` by
:func:`add_session_commands`. Nothing here prints or logs the access token or the secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_panda import db
from alpha_panda.broker_session import clear_session, load_session
from alpha_panda.commands.db import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, _run, fail
from alpha_panda.kite_login import (
    LoginInputError,
    complete_login,
    login_url,
    parse_request_token,
    require_credentials,
)
from alpha_panda.settings import Settings, Stage, get_settings
from alpha_panda.zerodha.errors import KiteError

HEALTH_TIMEOUT_S = 2.0
# The stages that hold a Kite connection, and the name of their /health check.
CONNECTED_STAGES = {"feed": Stage.MARKET_FEED, "trader": Stage.TRADING_ENGINE}
ZERODHA_CHECK = "zerodha"


def add_session_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "login",
        help="print Kite's login URL, then store the day's access token from the "
        "request token (or redirect URL) Kite hands back",
    )
    p.add_argument(
        "--request-token",
        help="the request token or the whole redirect URL (otherwise read from stdin)",
    )
    p.set_defaults(handler=login_command)

    p = sub.add_parser(
        "status",
        help="who is logged in, until when, and whether the feed and the trader are connected",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=status_command)

    p = sub.add_parser("logout", help="forget the stored access token")
    p.set_defaults(handler=logout_command)


def login_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        require_credentials(settings, secret=True)
        url = login_url(settings)
    except LoginInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    print("1. Open this URL and log in to Kite:")
    print(f"   {url}")
    print("2. Kite redirects to your app's registered URL with ?request_token=...")
    pasted = args.request_token
    if pasted is None:
        print("   Paste the request token or the whole redirect URL: ", end="", flush=True)
        pasted = sys.stdin.readline()
    try:
        request_token = parse_request_token(pasted)
    except LoginInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def action(engine: AsyncEngine) -> int:
        await db.upgrade(engine)  # the token table may be newer than the database
        async with aiohttp.ClientSession() as http:
            try:
                record = await complete_login(
                    settings, request_token, sessions=db.session_factory(engine), http=http
                )
            except KiteError as exc:
                return fail(f"Kite refused the login: {exc}", EXIT_FAILED)
            except aiohttp.ClientError as exc:
                return fail(f"cannot reach Kite at {settings.zerodha.root_url}: {exc}", EXIT_FAILED)
        public = record.public(datetime.now(UTC))
        print(f"logged in as {record.user_id} ({record.user_name})")
        print(f"access token stored; it expires at {public['expires_at_ist']} (06:00 IST)")
        print("running stages pick it up within ALPHA_PANDA_ZERODHA_TOKEN_POLL_S seconds")
        return EXIT_OK

    return _run(action)


async def probe_health(settings: Settings, stage: Stage) -> dict[str, Any]:
    """The stage's `zerodha` /health check: {"state": connected|disconnected|not running}."""
    url = f"http://{settings.web.host}:{settings.stage_web_port(stage)}/health"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)) as http,
            http.get(url) as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {"state": "not running", "detail": f"no answer at {url}"}
    check = (body.get("checks") or {}).get(ZERODHA_CHECK) if isinstance(body, dict) else None
    if not isinstance(check, dict):
        return {"state": "not using zerodha", "detail": "the stage runs without Kite"}
    ok = bool(check.get("ok"))
    return {"state": "connected" if ok else "disconnected", "detail": str(check.get("detail"))}


def status_command(args: argparse.Namespace) -> int:
    settings = get_settings()

    async def action(engine: AsyncEngine) -> int:
        await db.upgrade(engine)
        record = await load_session(db.session_factory(engine))
        now = datetime.now(UTC)
        stages = {
            name: await probe_health(settings, stage) for name, stage in CONNECTED_STAGES.items()
        }
        report: dict[str, Any] = {
            "configured": settings.zerodha.configured,
            "session": record.public(now) if record is not None else None,
            **stages,
        }
        if args.json:
            print(json.dumps(report, indent=2))
            return EXIT_OK
        print(f"api key:  {'set' if settings.zerodha.configured else 'not set'}")
        if record is None:
            print("session:  none stored (run `alpha-panda zerodha login`)")
        else:
            state = "valid" if record.valid_at(now) else "EXPIRED: log in again"
            print(f"user:     {record.user_id} ({record.user_name})")
            print(f"expires:  {record.public(now)['expires_at_ist']} ({state})")
        for name, probe in stages.items():
            print(f"{name + ':':<9} {probe['state']} ({probe['detail']})")
        return EXIT_OK

    return _run(action)


def logout_command(args: argparse.Namespace) -> int:
    async def action(engine: AsyncEngine) -> int:
        await db.upgrade(engine)
        removed = await clear_session(db.session_factory(engine))
        print("access token removed" if removed else "no access token was stored")
        return EXIT_OK

    return _run(action)
