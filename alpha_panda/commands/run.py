"""`alpha-panda run`: the whole pipeline on one machine (what `make run` calls).

Starts the embedded broker when nothing answers at the configured address, creates the
topics, prepares the configuration database, starts one `faust -A alpha_panda worker`
per stage, prints a live summary, and on Ctrl-C or SIGTERM stops the workers (each
flushes its producer), then the broker.
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
from pathlib import Path
from types import FrameType

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker, is_reachable
from alpha_panda.settings import Settings, Stage, get_settings

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


class _Stop(Exception):
    pass


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


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    stages = [Stage(s.strip()) for s in args.stages.split(",") if s.strip()]
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    workers: dict[Stage, subprocess.Popen[bytes]] = {}
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        bootstrap = settings.broker.bootstrap_servers[0]
        if is_reachable(bootstrap):
            print(f"broker: using the one at {bootstrap}")
        elif settings.broker.embedded:
            host, _, port = bootstrap.rpartition(":")
            broker = EmbeddedBroker(host or "127.0.0.1", int(port), log_dir / "broker.log")
            broker.start()
            # The embedded broker refuses InitProducerId; say so in settings, not in errors.
            env["ALPHA_PANDA_BROKER_ENABLE_IDEMPOTENCE"] = "false"
            env["ALPHA_PANDA_BROKER_EXACTLY_ONCE"] = "false"
            print(f"broker: started the embedded broker on {broker.bootstrap} (in-memory log)")
        else:
            print(f"alpha-panda: no broker answers at {bootstrap}", file=sys.stderr)
            return 1
        report = asyncio.run(ensure_topics(settings))
        print(f"topics: {len(report.created)} created, {len(report.existing)} already there")
        seeded = _prepare_database(settings)
        if seeded:
            print(f"database: seeded demo strategies {', '.join(seeded)}")
        for stage in stages:
            log_path = log_dir / f"{stage.value}.log"
            stage_env = {**env, "ALPHA_PANDA_STAGE": stage.value}
            with log_path.open("ab") as sink:
                workers[stage] = subprocess.Popen(
                    [_faust_bin(), "-A", "alpha_panda", "worker", "-l", "info"],
                    env=stage_env,
                    stdout=sink,
                    stderr=sink,
                    stdin=subprocess.DEVNULL,
                    # Own session: a terminal's Ctrl-C reaches only this orchestrator, which
                    # stops the stages in order and the broker last.
                    start_new_session=True,
                )
            print(
                f"stage {stage.value}: pid {workers[stage].pid}, "
                f"http://{settings.web.host}:{settings.stage_web_port(stage)}/health, "
                f"log {log_path}"
            )
        print(
            f"read API and dashboard: http://{settings.web.host}:{settings.web.port}/  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            for stage, proc in workers.items():
                if proc.poll() is not None:
                    print(
                        f"alpha-panda: stage {stage.value} exited with {proc.returncode}; "
                        f"see {log_dir / (stage.value + '.log')}",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(2.0)
            if not args.no_summary:
                print(time.strftime("%H:%M:%S"), _summary(settings, stages), flush=True)
        return 0
    except (KeyboardInterrupt, _Stop):
        print("\nstopping ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_workers(workers)
        if broker is not None:
            broker.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "stopped cleanly"
            if all(p.returncode == 0 for p in workers.values())
            else "stopped (a stage did not exit cleanly; see its log)"
        )


def _stop_workers(workers: dict[Stage, subprocess.Popen[bytes]]) -> None:
    # The feed first, so nothing new enters while the others drain and flush.
    for stage in reversed(START_ORDER):
        proc = workers.get(stage)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for stage, proc in workers.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"stage {stage.value} did not stop in {STOP_TIMEOUT_S:.0f}s; killing it")
            proc.kill()
            proc.wait()
