"""Micro-benchmark: what the NSE trading-day checks cost per event (pure code, no broker).

Risk calls the session check once per signal; the strategy host calls it once per signal
and the square-off check once per tick of an instrument an MIS strategy holds. Prints
microseconds per call and, with --json, writes them. A benchmark, not a test: it asserts
nothing.

    .venv/bin/python scripts/bench_trading_day.py [--calls 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alpha_panda.domain.session_rules import SessionRules, session_rejection, square_off_due  # noqa: E402
from alpha_panda.market_calendar import NseCalendar  # noqa: E402
from models.events import Side, TradingSignal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    calendar = NseCalendar.default()
    rules = SessionRules(calendar, timedelta(minutes=10))
    ts = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 10:30 IST on a Monday
    signal = TradingSignal(
        strategy_id="bench",
        instrument_token=1,
        symbol="X",
        side=Side.BUY,
        quantity=1,
        reference_price=Decimal("100"),
        signal_ts=ts,
    )
    cases = {
        "session_at_us": lambda: calendar.session_at(ts),
        "session_rejection_us": lambda: session_rejection(
            signal, rules, product="MIS", allow_pre_open=False, held=0
        ),
        "square_off_due_us": lambda: square_off_due(rules, ts, ts),
    }
    results = {
        name: round(timeit.timeit(call, number=args.calls) / args.calls * 1e6, 3)
        for name, call in cases.items()
    }
    for name, value in results.items():
        print(f"{name:<24} {value:8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"calls": args.calls, **results}, indent=2))


if __name__ == "__main__":
    main()
