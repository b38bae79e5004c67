"""`alpha-panda backtest` and `alpha-panda record`: past ticks through the stages' code.

``record`` writes market.ticks (from an offset or a time) to JSON Lines; ``backtest``
replays a file, market.ticks itself or the seeded random walk through strategy, risk,
paper fills and portfolio in one process (see alpha_panda/backtest and
docs/BACKTESTING.md), prints a summary per strategy and writes CSV, JSON and an HTML
report. ``--param`` turns a run into a parameter sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from alpha_panda.backtest import config as backtest_config
from alpha_panda.backtest import kite
from alpha_panda.backtest.engine import BacktestConfigError, BacktestSetup
from alpha_panda.backtest.kite import INTERVALS as KITE_INTERVALS
from alpha_panda.backtest.record import read_market_ticks, write_jsonl
from alpha_panda.backtest.report import cell, summary_table, table, write_outputs
from alpha_panda.backtest.runner import (
    RANK_KEYS,
    FileSource,
    KiteSource,
    Progress,
    RandomWalkSource,
    SweepParam,
    TickSource,
    TopicSource,
    parse_param,
    run_backtest,
    sweep,
)
from alpha_panda.backtest.sources import BadInputError, OnBadInput, TickGuard
from alpha_panda.db import ConfigStoreError
from alpha_panda.ops import OpsError
from alpha_panda.settings import Settings, get_settings
from alpha_panda.zerodha.errors import KiteError
from alpha_panda.zerodha.rest import DEFAULT_ROOT_URL as KITE_ROOT_URL

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_START = "2026-01-05T09:15:00+05:30"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bt = subparsers.add_parser(
        "backtest",
        help="replay ticks through strategy, risk, paper fills and portfolio",
        description="Replay past ticks through the stages' own code in one process.",
    )
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--ticks", type=Path, metavar="FILE", help="JSON Lines (.gz allowed)")
    source.add_argument(
        "--from-topic", action="store_true", help="market.ticks, from the earliest offset"
    )
    source.add_argument(
        "--random-walk", type=int, metavar="N", help="N ticks of the mock feed's random walk"
    )
    source.add_argument(
        "--kite-historical",
        choices=list(KITE_INTERVALS),
        metavar="INTERVAL",
        help="Kite historical candles of the strategies' instruments, four ticks a candle "
        f"({', '.join(KITE_INTERVALS)}); needs --from, --to, --kite-api-key and "
        "--kite-access-token-stdin",
    )
    bt.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="strategies from a TOML/JSON file (default: the configuration database)",
    )
    bt.add_argument(
        "--strategy", action="append", default=[], metavar="ID", help="only these (repeatable)"
    )
    bt.add_argument("--seed", type=int, help="random walk seed (default: feed.seed)")
    bt.add_argument("--instruments", help="random walk instruments (default: feed.instruments)")
    bt.add_argument("--volatility-bps", help="random walk move std dev (default: feed setting)")
    bt.add_argument("--start", default=DEFAULT_START, help="random walk first tick time")
    bt.add_argument("--interval-ms", type=int, default=200, help="random walk time between ticks")
    bt.add_argument(
        "--on-bad-input",
        choices=[p.value for p in OnBadInput],
        default=OnBadInput.REFUSE.value,
        help="malformed lines, unknown instruments, ticks out of order: stop, or skip and "
        "report (default: refuse)",
    )
    bt.add_argument("--from", dest="from_", metavar="TIME", help="Kite: first candle (ISO 8601)")
    bt.add_argument("--to", metavar="TIME", help="Kite: last candle (ISO 8601)")
    bt.add_argument("--kite-url", default=KITE_ROOT_URL, help="Kite REST root URL")
    bt.add_argument("--kite-api-key", help="Kite Connect api_key")
    bt.add_argument(
        "--kite-access-token-stdin",
        action="store_true",
        help="read the day's Kite access token from stdin (never from the command line)",
    )
    bt.add_argument("--bar-seconds", type=int, default=60, help="equity sampling bar")
    bt.add_argument("--out", type=Path, default=Path("var/backtest"), help="output directory")
    bt.add_argument("--title", default="Alpha Panda backtest", help="HTML report title")
    bt.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: only on a terminal)",
    )
    bt.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep a strategy parameter (NAME or STRATEGY.NAME); repeatable: the grid",
    )
    bt.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="sweep processes in parallel"
    )
    bt.add_argument("--rank-by", choices=RANK_KEYS, default="net_pnl", help="sweep ranking")
    bt.set_defaults(handler=backtest_command)

    rec = subparsers.add_parser(
        "record", help="write market.ticks to a JSON Lines file for backtests"
    )
    rec.add_argument("out", type=Path, help="output file (.gz: gzip)")
    start = rec.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, default=0, help="first offset in every partition")
    start.add_argument("--from-time", help="first event time, ISO 8601 with offset")
    rec.set_defaults(handler=record_command)


def _time(text: str, flag: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BacktestConfigError(f"{flag} {text!r} is not ISO 8601") from None
    if at.tzinfo is None:
        raise BacktestConfigError(f"{flag} {text!r} has no UTC offset; add one (+05:30 or Z)")
    return at.astimezone(UTC)


def _kite_source(args: argparse.Namespace, instruments: list[tuple[int, str]]) -> TickSource:
    if not (args.from_ and args.to and args.kite_api_key and args.kite_access_token_stdin):
        raise BacktestConfigError(
            "--kite-historical needs --from, --to, --kite-api-key and --kite-access-token-stdin"
        )
    start, end = _time(args.from_, "--from"), _time(args.to, "--to")
    if end < start:
        raise BacktestConfigError("--to is before --from")
    token = sys.stdin.readline().strip()
    if not token:
        raise BacktestConfigError("no Kite access token on stdin")
    try:
        candles = asyncio.run(
            kite.load(
                root_url=args.kite_url,
                api_key=args.kite_api_key,
                access_token=token,
                instruments=instruments,
                interval=args.kite_historical,
                start=start,
                end=end,
            )
        )
    except KiteError as exc:
        # The client masks the token in its messages.
        raise OpsError(f"Kite historical data: {exc}") from None
    return KiteSource(tuple(candles), args.kite_historical)


def _source(
    args: argparse.Namespace,
    settings: Settings,
    scratch: Path,
    instruments: list[tuple[int, str]],
) -> TickSource:
    if args.ticks is not None:
        if not args.ticks.is_file():
            raise BacktestConfigError(f"--ticks {args.ticks}: no such file")
        return FileSource(args.ticks)
    if args.from_topic:
        read = asyncio.run(read_market_ticks(settings))
        if not args.param:
            return TopicSource(read)
        # A sweep's processes each read the ticks themselves: hand them a file. Records
        # that were unreadable on the topic are reported (or refused) here, once.
        guard = TickGuard(frozenset(), OnBadInput(args.on_bad_input))
        for problem in read.problems:
            guard.note(problem)
        for line in guard.report():
            print(line, file=sys.stderr)
        path = scratch / "market.ticks.jsonl"
        write_jsonl(read, path)
        return FileSource(path)
    if args.kite_historical is not None:
        return _kite_source(args, instruments)
    try:
        volatility = Decimal(args.volatility_bps or settings.feed.volatility_bps)
    except InvalidOperation:
        raise BacktestConfigError(
            f"--volatility-bps {args.volatility_bps!r} is no number"
        ) from None
    if args.random_walk <= 0 or args.interval_ms <= 0:
        raise BacktestConfigError("--random-walk and --interval-ms must be positive")
    return RandomWalkSource(
        instruments=args.instruments or settings.feed.instruments,
        seed=settings.feed.seed if args.seed is None else args.seed,
        volatility_bps=volatility,
        count=args.random_walk,
        start=_time(args.start, "--start"),
        interval=timedelta(milliseconds=args.interval_ms),
    )


def backtest_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        if args.config is not None:
            config = backtest_config.load_file(args.config)
        else:
            config = asyncio.run(backtest_config.load_database(settings))
        config = backtest_config.select(config, args.strategy)
        if args.bar_seconds <= 0:
            raise BacktestConfigError("--bar-seconds must be positive")
        setup = BacktestSetup.from_settings(config, settings, timedelta(seconds=args.bar_seconds))
        params = [parse_param(p) for p in args.param]
        on_bad_input = OnBadInput(args.on_bad_input)
        with tempfile.TemporaryDirectory(prefix="alpha-panda-backtest-") as scratch:
            instruments = list(
                dict.fromkeys((i.token, i.symbol) for s in config.strategies for i in s.instruments)
            )
            source = _source(args, settings, Path(scratch), instruments)
            if params:
                return _sweep(args, source, setup, on_bad_input, params)
            show = sys.stderr.isatty() if args.progress is None else args.progress
            progress = Progress(source.total, after_s=2.0 if args.progress is None else 0.0)
            result, guard = run_backtest(source, setup, on_bad_input, progress if show else None)
    except (BacktestConfigError, BadInputError, ConfigStoreError, OpsError) as exc:
        print(f"alpha-panda backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, BacktestConfigError) else EXIT_FAILED
    for line in guard.report():
        print(line, file=sys.stderr)
    print(summary_table(result))
    for path in write_outputs(result, args.out, args.title):
        print(f"wrote {path}")
    return EXIT_OK


def _sweep(
    args: argparse.Namespace,
    source: TickSource,
    setup: BacktestSetup,
    on_bad_input: OnBadInput,
    params: list[SweepParam],
) -> int:
    rows = sweep(source, setup, on_bad_input, params, jobs=max(1, args.jobs), rank_by=args.rank_by)
    names = [p.name for p in params]
    header = ["rank", *names, "fills", "net P&L", "fees", "max DD", "sharpe*"]
    lines = [
        [
            str(rank),
            *(row.combination[n] for n in names),
            str(row.fills),
            cell(row.net_pnl),
            cell(row.fees),
            cell(row.max_drawdown),
            cell(row.sharpe_like),
        ]
        for rank, row in enumerate(rows, 1)
    ]
    print(f"{len(rows)} runs, ranked by {args.rank_by} (sums over strategies; max DD: worst)")
    print(table(header, lines))
    skipped = {row.skipped for row in rows}
    if skipped != {0}:
        print(f"skipped bad input: {max(skipped)} item(s) per run", file=sys.stderr)
    return EXIT_OK


def record_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        from_time = None if args.from_time is None else _time(args.from_time, "--from-time")
        read = asyncio.run(
            read_market_ticks(settings, from_offset=args.from_offset, from_time=from_time)
        )
    except (BacktestConfigError, OpsError) as exc:
        print(f"alpha-panda record: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for problem in read.problems:
        print(f"skipped {problem.line()}", file=sys.stderr)
    count = write_jsonl(read, args.out)
    print(f"wrote {count} ticks to {args.out}")
    return EXIT_OK
