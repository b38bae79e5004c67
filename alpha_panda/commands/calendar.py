"""`alpha-panda calendar [DATE]`: the NSE sessions of a day (today in IST by default)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime

from alpha_panda.market_calendar import IST, NseCalendar, TradingDay
from alpha_panda.settings import get_settings

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("calendar", help="NSE sessions of a day (IST)")
    p.add_argument("date", nargs="?", help="YYYY-MM-DD; default: today in Asia/Kolkata")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=calendar_command)


def describe(day: TradingDay, square_off: datetime | None) -> dict[str, object]:
    return {
        "date": day.day.isoformat(),
        "trading_day": day.is_trading_day,
        "note": day.note,
        "sessions": [
            {
                "kind": s.kind.value,
                "start": s.start.strftime("%H:%M"),
                "end": s.end.strftime("%H:%M"),
            }
            for s in day.sessions
        ],
        "mis_square_off": square_off.strftime("%H:%M") if square_off else None,
        "timezone": "Asia/Kolkata",
    }


def calendar_command(args: argparse.Namespace) -> int:
    if args.date is None:
        # The CLI is the one place that may ask the clock: it answers "today" for a person.
        day = datetime.now(UTC).astimezone(IST).date()
    else:
        try:
            day = date.fromisoformat(args.date)
        except ValueError:
            print(f"alpha-panda: date: expected YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
            return EXIT_BAD_INPUT
    calendar = NseCalendar.default()
    trading_day = calendar.day(day)
    square_off = calendar.square_off_at(day, get_settings().market.square_off_lead)
    info = describe(trading_day, square_off)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    status = "trading day" if trading_day.is_trading_day else "closed"
    print(f"{day.isoformat()} {day:%A}: {status} ({trading_day.note})")
    for session in trading_day.sessions:
        print(f"  {session.kind.value:<9} {session.start:%H:%M}-{session.end:%H:%M} IST")
    if square_off is not None:
        print(f"  MIS square-off {square_off:%H:%M} IST")
    return EXIT_OK
