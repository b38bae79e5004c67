"""`alpha-panda run`: the whole pipeline on one machine (what `make run` calls).

Starts the embedded broker when nothing answers at the configured address, creates the
topics, prepares the configuration database, starts one `faust -A alpha_panda worker`
per stage, prints a live summary, and on Ctrl-C, SIGTERM or SIGHUP stops the workers
(each flushes its producer), then the broker.

It supervises what it started (:mod:`alpha_panda.supervisor`): a stage that exits
unexpectedly is restarted with backoff, one that crash-loops is marked down while the
others keep running; a dead embedded broker is restarted, its topics created again, and
every stage restarted against it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker, is_reachable
from alpha_panda.embedded_log import close_log, durability, open_log, snapshot_path
from alpha_panda.log_identity import ensure_identity
from alpha_panda.log_snapshot import SnapshotError
from alpha_panda.settings import KITE_ROOT_URL, Settings, Stage, get_settings
from alpha_panda.supervisor import ChildStatus, Process, Supervisor, die_with_parent
from models.events import ExecutionMode

STOP_TIMEOUT_S = 30.0

# Downstream stages first, so the feed's first ticks find their consumers ready.
START_ORDER = (
    Stage.PORTFOLIO_MANAGER,
    Stage.TRADING_ENGINE,
    Stage.RISK_MANAGER,
    Stage.STRATEGY_RUNNER,
    Stage.MARKET_FEED,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("run", help="run the whole pipeline (make run)")
    parser.add_argument(
        "--stages",
        default=",".join(s.value for s in START_ORDER),
        help="comma separated stages to start (default: all five)",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after N seconds (0 = until Ctrl-C)"
    )
    parser.add_argument("--no-summary", action="store_true", help="do not print the summary")
    parser.set_defaults(handler=run)


class _Stop(BaseException):
    """SIGTERM or SIGHUP, raised wherever the supervisor is, like Ctrl-C's KeyboardInterrupt.

    A BaseException so that no ``except Exception`` on the way swallows it: the summary's
    database and Redis reads and a stage's restart tolerate their own failures, and a stop
    arriving while one of them runs (often, on a loaded machine) was once taken for such a
    failure and lost, leaving the pipeline trading until it was killed.
    """


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _faust_bin() -> str:
    candidate = Path(sys.executable).with_name("faust")
    return str(candidate) if candidate.exists() else "faust"


def _prepare_database(settings: Settings) -> list[str]:
    try:
        from alpha_panda import db
    except ImportError:
        return []

    async def prepare() -> list[str]:
        engine = db.create_engine(settings.database.url)
        try:
            await db.upgrade(engine)
            sessions = db.session_factory(engine)
            for halt in await db.list_halts(sessions):  # a halted pipeline says so at start
                print(f"HALTED {'all trading' if halt.is_global else halt.scope}: {halt.reason}")
            return await db.seed_demo_strategies(sessions)
        finally:
            await engine.dispose()

    return asyncio.run(prepare())


def _live_without_trading_day(settings: Settings, live: Sequence[str]) -> str | None:
    """Why live trading must not run with the trading-day rules off, or None.

    `make run` turns the NSE session rules off so that its demo trades at any hour; with
    them off no ``market_closed`` check runs, no new MIS entry is refused after the
    cut-off and no MIS position is squared off. Against the real Kite that is refused
    (the caller exits); against the local Kite server it is said loudly and allowed.
    """
    if settings.market.enforce_sessions or not live:
        return None
    return (
        f"alpha-panda: strategies {', '.join(live)} trade live while the NSE trading-day "
        "rules are off (ALPHA_PANDA_MARKET_ENFORCE_SESSIONS=false): no market_closed check, "
        "no MIS cut-off, no MIS square-off. "
        + (
            "Refused against the real Kite: set ALPHA_PANDA_MARKET_ENFORCE_SESSIONS=true "
            "(`make run` sets it false only for the mock feed)."
            if settings.zerodha.root_url == KITE_ROOT_URL
            else f"Allowed against {settings.zerodha.root_url} (not the real Kite)."
        )
    )


def _live_refused(settings: Settings, live: Sequence[str]) -> str | None:
    """What to say at start when live strategies are enabled but the trading engine will
    refuse their signals (``Settings.live_trading_refusal``: the embedded broker without
    the opt-in), or None. Paper trading runs on; the engine's /health says the same."""
    refusal = settings.live_trading_refusal
    if not settings.zerodha.configured or refusal is None or not live:
        return None
    return f"alpha-panda: strategies {', '.join(live)} trade live, but {refusal}"


def _enabled_live_strategies(settings: Settings) -> list[str]:
    from alpha_panda import db

    async def read() -> list[str]:
        engine = db.create_engine(settings.database.url)
        try:
            config = await db.load_runtime_config(db.session_factory(engine))
        finally:
            await engine.dispose()
        return [
            s.strategy_id
            for s in config.enabled_strategies
            if s.execution_mode is ExecutionMode.LIVE
        ]

    return asyncio.run(read())


def _scrape(port: int) -> dict[str, float]:
    """Sum each metric family of a stage's /metrics (labels folded), for the summary."""
    totals: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return totals
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{")[0]
        detail = ""
        if 'event="' in name_labels:
            detail = name_labels.split('event="')[1].split('"')[0]
        with contextlib.suppress(ValueError):
            key = f"{name}:{detail}" if detail else name
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def _summary(settings: Settings, stages: list[Stage]) -> str:
    from web.pipeline_summary import counts_line

    scraped = {stage: _scrape(settings.stage_web_port(stage)) for stage in stages}
    line = counts_line(scraped, stages, _halted_scopes(settings))
    equity = _equity_line(settings)
    return line + (f"\n  {equity}" if equity else "")


def _halted_scopes(settings: Settings) -> list[str]:
    """The halts in force (``all`` or strategy ids); [] when the database cannot say."""
    from alpha_panda import db

    async def read() -> list[str]:
        engine = db.create_engine(settings.database.url)
        try:
            halts = await db.list_halts(db.session_factory(engine))
        finally:
            await engine.dispose()
        return ["all" if h.is_global else h.scope for h in halts]

    try:
        return asyncio.run(read())
    except Exception:  # the summary is decoration; the stages' logs carry the failure
        return []


def _equity_line(settings: Settings) -> str:
    try:
        from web.summary import equity_summary
    except ImportError:
        return ""
    return equity_summary(settings)


BROKER = "broker"
POLL_INTERVAL_S = 0.5
SUMMARY_INTERVAL_S = 2.0
# Stages stopped because the broker died cannot commit or leave their groups: no point
# waiting the full STOP_TIMEOUT_S for them.
BROKER_LOST_STOP_TIMEOUT_S = 10.0


def _processes_line(supervisor: Supervisor) -> str:
    """Each supervised process's state: running, restart count, or DOWN with exit and log."""
    return "processes: " + "  ".join(
        f"{name} {child.describe()}" for name, child in supervisor.children.items()
    )


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    stages = [Stage(s.strip()) for s in args.stages.split(",") if s.strip()]
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    supervisor = Supervisor()
    stage_names = [stage.value for stage in stages]
    # Saved at stop only when the embedded broker holds the log we opened: never a
    # half-restored or empty log over the last good snapshot.
    log_opened = False
    # SIGHUP (the terminal closed) stops everything like SIGTERM: the stages run in their
    # own sessions, so without this they would keep trading with nobody watching.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        bootstrap = settings.broker.bootstrap_servers[0]
        if is_reachable(bootstrap):
            print(f"broker: using the one at {bootstrap}")
        elif settings.broker.embedded:
            host, _, port = bootstrap.rpartition(":")
            embedded = broker = EmbeddedBroker(
                host or "127.0.0.1",
                int(port),
                log_dir / "broker.log",
                preexec_fn=die_with_parent(),
            )

            def launch_broker() -> Process:
                embedded.start()
                return embedded.process

            supervisor.add(BROKER, launch_broker, log_dir / "broker.log")
            supervisor.start(BROKER)
            # The embedded broker refuses InitProducerId; say so in settings, not in errors.
            env["ALPHA_PANDA_BROKER_ENABLE_IDEMPOTENCE"] = "false"
            env["ALPHA_PANDA_BROKER_EXACTLY_ONCE"] = "false"
            print(
                f"broker: started the embedded broker on {broker.bootstrap} "
                f"(pid {embedded.process.pid}, {durability(settings)})"
            )
            try:
                identity, note = asyncio.run(open_log(settings))
            except SnapshotError as exc:
                print(
                    f"alpha-panda: cannot restore the saved log: {exc}\n"
                    "  `alpha-panda broker --reset` deletes it (its history is then lost)",
                    file=sys.stderr,
                )
                return 1
            log_opened = True
            print(f"log: {note}; log id {identity.log_id}")
        else:
            print(f"alpha-panda: no broker answers at {bootstrap}", file=sys.stderr)
            return 1
        report = asyncio.run(ensure_topics(settings))
        print(f"topics: {len(report.created)} created, {len(report.existing)} already there")
        if broker is None:
            asyncio.run(ensure_identity(settings.broker.bootstrap_servers))
        seeded = _prepare_database(settings)
        if seeded:
            print(f"database: seeded demo strategies {', '.join(seeded)}")
        live = _enabled_live_strategies(settings)  # read once, judged twice
        refusal = _live_without_trading_day(settings, live)
        if refusal is not None:
            print(refusal, file=sys.stderr, flush=True)
            if settings.zerodha.root_url == KITE_ROOT_URL:
                return 1
        refused = _live_refused(settings, live)
        if refused is not None:
            print(refused, file=sys.stderr, flush=True)
        for stage in stages:
            log_path = log_dir / f"{stage.value}.log"
            supervisor.add(
                stage.value,
                _stage_launcher(stage, env, log_path, lambda: _topics_if_reachable(settings)),
                log_path,
                gate=lambda: is_reachable(bootstrap),
            )
            child = supervisor.start(stage.value)
            print(
                f"stage {stage.value}: pid {child.proc.pid if child.proc else '?'}, "
                f"http://{settings.web.host}:{settings.stage_web_port(stage)}/health, "
                f"log {log_path}"
            )
        print(
            f"read API and dashboard: http://{settings.web.host}:{settings.web.port}/  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration else None
        next_summary = time.monotonic() + SUMMARY_INTERVAL_S
        while deadline is None or time.monotonic() < deadline:
            for event in supervisor.poll():
                print(f"alpha-panda: {event.child} {event.detail}", file=sys.stderr, flush=True)
                if event.child != BROKER:
                    continue
                if event.what == "down":
                    print("alpha-panda: the broker is down; stopping", file=sys.stderr)
                    return 1
                if event.what == "exited":
                    # The stages' positions, tables and groups refer to a log that is
                    # gone; they start again, from what the new broker holds, once it is up.
                    supervisor.stop(stage_names, BROKER_LOST_STOP_TIMEOUT_S)
                elif event.what == "restarted":
                    log_opened = False
                    try:
                        identity, note = asyncio.run(open_log(settings, after_crash=True))
                    except Exception as exc:
                        print(
                            f"alpha-panda: the restarted broker's log could not be opened "
                            f"({type(exc).__name__}: {exc}); stopping",
                            file=sys.stderr,
                        )
                        return 1
                    log_opened = True
                    print(f"alpha-panda: log {note}; log id {identity.log_id}", file=sys.stderr)
                    for name in stage_names:
                        if supervisor.children[name].status is not ChildStatus.DOWN:
                            supervisor.restart_now(name, STOP_TIMEOUT_S)
                    print("alpha-panda: broker back; stages restarted", file=sys.stderr)
            time.sleep(POLL_INTERVAL_S)
            if not args.no_summary and time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_INTERVAL_S
                print(time.strftime("%H:%M:%S"), _summary(settings, stages), flush=True)
                print(f"  {_processes_line(supervisor)}", flush=True)
        return 0
    except (KeyboardInterrupt, _Stop):
        print("\nstopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # The feed first, so nothing new enters while the others drain and flush.
        order = [s.value for s in reversed(START_ORDER) if s.value in supervisor.children]
        codes = supervisor.stop(order, STOP_TIMEOUT_S)
        if broker is not None:
            if log_opened and supervisor.running(BROKER):
                _save_log(settings)
            broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "stopped cleanly"
            if all(code == 0 for code in codes.values())
            else "stopped (a stage did not exit cleanly; see its log)"
        )


def _save_log(settings: Settings) -> None:
    try:
        print(f"log: {asyncio.run(close_log(settings))}", flush=True)
    except Exception as exc:  # the broker still stops; the previous snapshot stays
        print(
            f"alpha-panda: the log was NOT saved ({type(exc).__name__}: {exc}); "
            f"{snapshot_path(settings)} still holds the previous clean stop",
            file=sys.stderr,
            flush=True,
        )


def _topics_if_reachable(settings: Settings) -> None:
    """Create missing topics before a stage (re)starts, so its subscription does not.

    A broker restarted with an empty log (the embedded broker's memory engine, or one
    reset by hand) would otherwise get the topics from the first client that names
    them, with the broker's default partition count instead of the registry's.
    """
    if is_reachable(settings.broker.bootstrap_servers[0]):
        asyncio.run(ensure_topics(settings))


def _stage_launcher(
    stage: Stage, env: dict[str, str], log_path: Path, before: Callable[[], None]
) -> Callable[[], Process]:
    stage_env = {**env, "ALPHA_PANDA_STAGE": stage.value}
    die_with_us = die_with_parent()

    def launch() -> Process:
        before()
        with log_path.open("ab") as sink:
            return subprocess.Popen(
                [_faust_bin(), "-A", "alpha_panda", "worker", "-l", "info"],
                env=stage_env,
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
                # Own session: a terminal's Ctrl-C reaches only this supervisor, which
                # stops the stages in order and the broker last.
                start_new_session=True,
                # ... and if the supervisor dies, the kernel stops the stage.
                preexec_fn=die_with_us,
            )

    return launch
