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
    has_schema,
    session_factory,
    upgrade,
)
from alpha_panda.pipeline_record import read_record, sqlite_file
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


class _RefusedError(Exception):
    """The command would use a new, empty database; the message says which and why not."""


def _pipeline_conflict(url: str, *, creating: bool) -> str | None:
    """Why ``url``, new and empty, must not be used: the pipeline records another one."""
    record = read_record(get_settings())
    if record is None or record.url == describe_url(url):
        return None
    hint = " (db upgrade --force creates it anyway)" if creating else ""
    return (
        f"refusing to use a new, empty database at {describe_url(url)}: the pipeline "
        f"uses {record.describe()}; set ALPHA_PANDA_DATABASE_URL or ALPHA_PANDA_DATA_DIR "
        f"to match it{hint}"
    )


def _run(
    action: Callable[[AsyncEngine], Awaitable[int]],
    *,
    creating: bool = False,
    force: bool = False,
) -> int:
    """``action`` on the configured database; ``creating``: it may create the schema.

    Before anything is created (a SQLite file included), a database without our schema
    is checked against the running pipeline's record (alpha_panda/pipeline_record.py);
    ``force`` skips that check.
    """
    url = get_settings().database.url

    async def go() -> int:
        sqlite_path = None if force else sqlite_file(url)
        if sqlite_path is not None and not sqlite_path.exists():
            # Connecting would create the file: decide before that.
            refusal = _pipeline_conflict(url, creating=creating)
            if refusal is None and not creating:
                refusal = (
                    f"no configuration database at {describe_url(url)}; run `alpha-panda "
                    "db upgrade` (or `make run`) first, or set ALPHA_PANDA_DATABASE_URL or "
                    "ALPHA_PANDA_DATA_DIR to the pipeline's"
                )
            if refusal is not None:
                raise _RefusedError(refusal)
        engine = create_engine(url)
        try:
            if not force and not await has_schema(engine):
                refusal = _pipeline_conflict(url, creating=creating)
                if refusal is not None:
                    raise _RefusedError(refusal)
            return await action(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except _RefusedError as exc:
        return fail(str(exc), EXIT_FAILED)
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
    except BrokenPipeError:
        raise  # our reader went away, not the database (handled in cli.main)
    except OSError as exc:
        # asyncpg raises plain OSError (connection refused, DNS) before any DBAPI exists.
        return fail(f"cannot reach database at {describe_url(url)}: {exc}", EXIT_FAILED)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="configuration database schema")
    sub = parser.add_subparsers(dest="db_command", required=True)
    upgrade_parser = sub.add_parser(
        "upgrade", help="create missing tables (idempotent; safe on every deploy)"
    )
    upgrade_parser.add_argument(
        "--force",
        action="store_true",
        help="create a new database even though the running pipeline uses another one",
    )
    upgrade_parser.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    async def action(engine: AsyncEngine) -> int:
        done = await upgrade(engine)
        print(f"database: {describe_url(get_settings().database.url)}")
        for line in done:
            print(line)
        if not done:
            print("schema up to date")
        return EXIT_OK

    # --force: the operator has read the refusal and means this database.
    return _run(action, creating=True, force=bool(getattr(args, "force", False)))
