"""`alpha-panda users create|list|set-password|disable|enable`."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from alpha_panda.commands.db import EXIT_BAD_INPUT, EXIT_OK, fail, run_store
from alpha_panda.db import (
    SessionFactory,
    create_user,
    list_users,
    set_password,
    set_user_disabled,
)
from alpha_panda.passwords import check_password_rules
from models.db import USER_ROLES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("users", help="web API users")
    sub = parser.add_subparsers(dest="users_command", required=True)

    p = sub.add_parser("create", help="create a user (prompts for the password)")
    p.add_argument("username")
    p.add_argument("--role", choices=USER_ROLES, default="trader")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    p.set_defaults(handler=create_command)

    p = sub.add_parser("list", help="every user")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=list_command)

    p = sub.add_parser("set-password", help="replace a user's password")
    p.add_argument("username")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    p.set_defaults(handler=set_password_command)

    for name, disabled in (("disable", True), ("enable", False)):
        p = sub.add_parser(name, help=f"{name} a user's login")
        p.add_argument("username")
        p.set_defaults(handler=disable_command, disabled=disabled)


class _PasswordInputError(Exception):
    pass


def read_password(from_stdin: bool) -> str:
    """The new password, from stdin (scripts) or an interactive prompt asked twice."""
    if from_stdin:
        # Only the line ending is stripped: leading/trailing spaces may be deliberate.
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise _PasswordInputError("password: the two entries do not match")
    if not password:
        raise _PasswordInputError("password: empty")
    try:
        check_password_rules(password)
    except ValueError as exc:
        raise _PasswordInputError(str(exc)) from None
    return password


def create_command(args: argparse.Namespace) -> int:
    try:
        password = read_password(args.password_stdin)
    except _PasswordInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def action(sessions: SessionFactory) -> int:
        user = await create_user(sessions, args.username, password, role=args.role)
        print(f"created user {user.username} ({user.role})")
        return EXIT_OK

    return run_store(action)


def list_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        users = await list_users(sessions)
        if args.json:
            print(json.dumps([u.model_dump(mode="json") for u in users], indent=2))
            return EXIT_OK
        if not users:
            print("no users (create one with `alpha-panda users create NAME --role admin`)")
            return EXIT_OK
        width = max(len("USERNAME"), *(len(u.username) for u in users))
        print(f"{'USERNAME'.ljust(width)}  ROLE    STATUS    CREATED")
        for u in users:
            status = "disabled" if u.disabled else "active"
            print(
                f"{u.username.ljust(width)}  {u.role.ljust(6)}  {status.ljust(8)}  "
                f"{u.created_at:%Y-%m-%d %H:%M:%S}Z"
            )
        return EXIT_OK

    return run_store(action)


def set_password_command(args: argparse.Namespace) -> int:
    try:
        password = read_password(args.password_stdin)
    except _PasswordInputError as exc:
        return fail(str(exc), EXIT_BAD_INPUT)

    async def action(sessions: SessionFactory) -> int:
        user = await set_password(sessions, args.username, password)
        print(f"password changed for {user.username}; their earlier API tokens are revoked")
        return EXIT_OK

    return run_store(action)


def disable_command(args: argparse.Namespace) -> int:
    async def action(sessions: SessionFactory) -> int:
        user = await set_user_disabled(sessions, args.username, args.disabled)
        state = "disabled" if user.disabled else "enabled"
        print(f"user {user.username} {state}; their earlier API tokens are revoked")
        return EXIT_OK

    return run_store(action)
