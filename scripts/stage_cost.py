"""CPU per record of each consuming stage alone: where a tick's microseconds go.

For each stage, on a fresh embedded broker: preload its input (ticks for the strategy
runner, the trading engine and the portfolio manager; generated signals for the risk
manager), start the stage's worker alone, and read its CPU time (/proc, both threads)
from the moment it has processed its first record to the last, less the CPU it spends
idle over the same time (measured before the input is released). A measurement, not a
test: it asserts nothing. docs/PERFORMANCE.md quotes it.

    .venv/bin/python scripts/stage_cost.py [--ticks 20000] [--signals 3000] [--stages a,b]
                                            [--json FILE]

The workers import the code on PYTHONPATH first, so another checkout's stages can be
measured with this script (PYTHONPATH=/path/to/checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import INSTRUMENTS, configure, cpu_seconds, produce_ticks, tick_records  # noqa: E402

from alpha_panda.admin import ensure_topics  # noqa: E402
from alpha_panda.broker import EmbeddedBroker  # noqa: E402
from alpha_panda.settings import Stage, load_settings  # noqa: E402
from alpha_panda.topics import (  # noqa: E402
    MARKET_TICKS,
    RISK_SIGNALS_BY_STRATEGY,
    SIGNALS_GENERATED,
)
from models.envelope import new_event_id  # noqa: E402
from models.events import Side, TradingSignal  # noqa: E402
from tests.integration.harness import Deployment, StageProcess, metric, produce, wait_for  # noqa: E402

PROCESSED = "alpha_panda_messages_processed_total"
IDLE_S = 5.0


def signal_records(n: int, start: datetime) -> list[tuple[str, bytes, bytes]]:
    out = []
    for i in range(n):
        token, symbol = INSTRUMENTS[i % len(INSTRUMENTS)]
        signal = TradingSignal(
            strategy_id="bench-mom" if i % 2 else "bench-mr",
            instrument_token=token,
            symbol=symbol,
            side=Side.BUY if (i // 7) % 2 else Side.SELL,
            quantity=1,
            reference_price=Decimal("1000.05"),
            signal_ts=start + timedelta(milliseconds=20 * i),
        )
        record = SIGNALS_GENERATED.record(
            signal, event_id=new_event_id(), ts=signal.signal_ts, source="bench"
        )
        out.append((record.topic, record.key, record.value))
    return out


def measure(stage: Stage, n_ticks: int, n_signals: int, work: Path) -> dict[str, float]:
    broker = EmbeddedBroker.on_free_port()
    broker.start()
    worker: StageProcess | None = None
    try:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))
        db_url = f"sqlite+aiosqlite:///{work}/{stage.value}.db"
        asyncio.run(configure(db_url))
        deployment = Deployment(
            bootstrap=bootstrap,
            data_dir=work / stage.value,
            database_url=db_url,
            extra_env={"ALPHA_PANDA_LOG_LEVEL": "WARNING", "ALPHA_PANDA_REDIS_ENABLED": "false"},
        )
        worker = StageProcess(deployment, stage).start()
        worker.wait_ready(timeout=90)
        assert worker.proc is not None
        pid = worker.proc.pid
        # Idle cost first (fetch polling, timers), to take out of the busy figure.
        idle_from, idle_cpu = time.perf_counter(), cpu_seconds(pid)
        time.sleep(IDLE_S)
        idle_per_s = (cpu_seconds(pid) - idle_cpu) / (time.perf_counter() - idle_from)
        start = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
        if stage is Stage.RISK_MANAGER:
            topic, n = RISK_SIGNALS_BY_STRATEGY.name, n_signals
            records = signal_records(n, start)
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            asyncio.run(produce(bootstrap, records))
        else:
            topic, n = MARKET_TICKS.name, n_ticks
            ticks = tick_records(n, start)
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            asyncio.run(produce_ticks(bootstrap, ticks, None, 16384, 0))
        wait_for(
            lambda: metric(worker, PROCESSED, topic=topic) >= n,  # type: ignore[arg-type]
            timeout=600,
            what=f"{stage.value} to process its input",
        )
        busy_s = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0 - idle_per_s * busy_s
        return {
            "records": n,
            "cpu_us_per_record": round(cpu / n * 1e6, 1),
            "records_per_s": round(n / busy_s),
            "idle_core": round(idle_per_s, 3),
        }
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--signals", type=int, default=3_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--stages",
        default="strategy-runner,risk-manager,trading-engine,portfolio-manager",
        help="comma separated",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alpha-panda-stage-cost-"))
    results = {}
    for stage in (Stage(name.strip()) for name in args.stages.split(",")):
        results[stage.value] = measure(stage, args.ticks, args.signals, work)
        print(stage.value, results[stage.value], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
