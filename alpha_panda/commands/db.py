"""`alpha-panda db upgrade`, and the plumbing every config-store command shares.

Exit codes for all store commands: 0 success, 1 not found or the database failed,
2 bad input (a refused value, a name already taken).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_panda.db import (
    AlreadyExistsError,
    ConfigValidationError,
    NotFoundError,
    SchemaTooNewError,
    SessionFactory,
    create_engine,
    describe_url,
    session_factory,
    upgrade,
)
from alpha_panda.settings import get_settings

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def fail(message: str, code: int) -> int:
    print(f"alpha-panda: {message}", file=sys.stderr)
    return code


def _database_error(url: str, exc: Exception) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    hint = ""
    if "no such table" in detail or ("relation" in detail and "does not exist" in detail):
        hint = "; run `alpha-panda db upgrade` to create the schema"
    return f"database error at {describe_url(url)}: {detail}{hint}"


def run_store(action: Callable[[SessionFactory], Awaitable[int]]) -> int:
    """Run ``action`` against the configured database and map store errors to exit codes."""
    return _run(lambda engine: action(session_factory(engine)))


def _run(action: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    url = get_settings().database.url

    async def go() -> int:
        engine = create_engine(url)
        try:
            return await action(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except NotFoundError as exc:
        return fail(str(exc), EXIT_NOT_FOUND)
    except (ConfigValidationError, AlreadyExistsError) as exc:
        return fail(str(exc), EXIT_BAD_INPUT)
    except SchemaTooNewError as exc:
        return fail(str(exc), EXIT_FAILED)
    except (DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # asyncpg errors raised while connecting (unknown database, bad password) reach
        # here unwrapped; once connected, SQLAlchemy wraps them in DBAPIError.
        return fail(_database_error(url, exc), EXIT_FAILED)
    except OSError as exc:
        # asyncpg raises plain OSError (connection refused, DNS) before any DBAPI exists.
        return fail(f"cannot reach database at {describe_url(url)}: {exc}", EXIT_FAILED)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="configuration database schema")
    sub = parser.add_subparsers(dest="db_command", required=True)
    sub.add_parser(
        "upgrade", help="create missing tables (idempotent; safe on every deploy)"
    ).set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    async def action(engine: AsyncEngine) -> int:
        done = await upgrade(engine)
        print(f"database: {describe_url(get_settings().database.url)}")
        for line in done:
            print(line)
        if not done:
            print("schema up to date")
        return EXIT_OK

    return _run(action)
