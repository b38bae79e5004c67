"""Benchmark: N ticks through the running pipeline vs. raw aiokafka on the same broker.

Prints sustained ticks/s through the stages, the CPU each process (workers and broker)
spent per tick, tick-to-portfolio and tick-to-fill latency percentiles at paced rates
(100, 300 and 1,000 ticks/s by default), raw produce-then-consume throughput on the same
broker in the same run, their ratio, and each stage worker's resident memory. Then,
with the stages stopped, three bare Faust agents (scripts/faust_floor_agent.py) read all
of the run's ticks at once: the ceiling for stages that are Faust agents, on this machine.
A benchmark, not a test: it asserts nothing.

    .venv/bin/python scripts/bench.py [--ticks 20000] [--rates 100,300,1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import NewTopic  # noqa: E402

from alpha_panda import db  # noqa: E402
from alpha_panda.admin import admin_client, ensure_topics  # noqa: E402
from alpha_panda.broker import EmbeddedBroker  # noqa: E402
from alpha_panda.log_snapshot import restore_log, save_log  # noqa: E402
from alpha_panda.settings import Stage, load_settings  # noqa: E402
from alpha_panda.topics import (  # noqa: E402
    MARKET_TICKS,
    ORDERS_FILLED_PAPER,
    SIGNALS_GENERATED,
    TopicSpec,
)
from models.codec import decode  # noqa: E402
from models.envelope import new_event_id  # noqa: E402
from models.events import MarketTick  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    Deployment,
    StageProcess,
    metric,
    scrape,
    wait_for,
)

INSTRUMENTS = [(256265 + i, f"BENCH{i}") for i in range(24)]
# The raw passthrough the pipeline is compared with: a bench-only topic, so it lives here
# and not in the pipeline's registry (alpha_panda/topics.py).
BENCH_PASSTHROUGH = TopicSpec(
    "alpha-panda.bench.passthrough",
    MARKET_TICKS.partitions,
    MARKET_TICKS.event_type,
    MARKET_TICKS.key_of,
)
STAGES = [Stage.PORTFOLIO_MANAGER, Stage.TRADING_ENGINE, Stage.RISK_MANAGER, Stage.STRATEGY_RUNNER]
PROCESSED = "alpha_panda_messages_processed_total"
PRODUCED = "alpha_panda_messages_produced_total"


def tick_records(n: int, start: datetime) -> list[tuple[bytes, bytes]]:
    out = []
    prices = {token: Decimal(1000) for token, _ in INSTRUMENTS}
    for i in range(n):
        token, symbol = INSTRUMENTS[i % len(INSTRUMENTS)]
        # A deterministic saw-tooth so strategies trade now and then.
        prices[token] += Decimal("0.05") * (1 if (i // 97) % 2 else -1)
        tick = MarketTick(
            instrument_token=token,
            symbol=symbol,
            last_price=prices[token],
            volume=i + 1,
            exchange_ts=start + timedelta(milliseconds=i),
        )
        record = MARKET_TICKS.record(
            tick, event_id=new_event_id(), ts=tick.exchange_ts, source="bench"
        )
        out.append((record.key, record.value))
    return out


async def raw_passthrough(
    bootstrap: str, records: list[tuple[bytes, bytes]], max_batch_size: int, fetch_wait_ms: int
) -> float:
    """One process producing and consuming the same envelopes on a fresh topic."""
    admin = admin_client(load_settings(broker={"url": bootstrap}))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(BENCH_PASSTHROUGH.name, BENCH_PASSTHROUGH.partitions, 1)]
        )
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        BENCH_PASSTHROUGH.name,
        bootstrap_servers=bootstrap,
        group_id="alpha-panda.bench",
        auto_offset_reset="earliest",
        max_poll_records=5000,
        fetch_max_wait_ms=fetch_wait_ms,  # as the workers use it
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=max_batch_size
    )
    await consumer.start()
    await producer.start()
    while not consumer.assignment():  # noqa: ASYNC110 - aiokafka exposes no assignment event
        await asyncio.sleep(0.05)
    try:
        started = time.perf_counter()

        async def produce_all() -> None:
            for key, value in records:
                await producer.send(BENCH_PASSTHROUGH.name, key=key, value=value)
            await producer.flush()

        async def consume_all() -> None:
            seen = 0
            while seen < len(records):
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                seen += sum(len(m) for m in batch.values())

        await asyncio.gather(produce_all(), consume_all())
        return len(records) / (time.perf_counter() - started)
    finally:
        await producer.stop()
        await consumer.stop()


async def produce_ticks(
    bootstrap: str,
    records: list[tuple[bytes, bytes]],
    rate: float | None,
    max_batch_size: int,
    linger_ms: int,
) -> float:
    """Send the ticks as the market feed does (its linger), paced at `rate` if given."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for i, (key, value) in enumerate(records):
            await producer.send(MARKET_TICKS.name, key=key, value=value)
            if rate is not None and i % 10 == 9:
                ahead = started + (i + 1) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def paced_ticks_with_fills(
    bootstrap: str, n: int, rate: float, max_batch_size: int, linger_ms: int
) -> list[float]:
    """Send `n` ticks at `rate`, each stamped with the wall-clock time it is due (its
    exchange time), while reading the fills they cause: tick-to-fill seconds per fill.

    A market order fills at once with ``filled_ts`` = the exchange time of the tick that
    made its signal (or of a later tick of the instrument the engine had already seen),
    and the fill record's broker timestamp is when the engine sent it.
    """
    consumer = AIOKafkaConsumer(
        ORDERS_FILLED_PAPER.name,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    while not consumer.assignment():  # noqa: ASYNC110 - aiokafka exposes no assignment event
        await asyncio.sleep(0.05)
    for tp in consumer.assignment():  # "latest" as of now: only this run's fills
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_batch_size=max_batch_size
    )
    await producer.start()
    ages: list[float] = []
    started = time.time()
    done = asyncio.Event()

    async def read_fills() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    fill = decode(r.value, topic=r.topic).data
                    filled = fill.filled_ts.timestamp()
                    if filled >= started:
                        ages.append(r.timestamp / 1000 - filled)
            if done.is_set() and not batch:
                return

    reader = asyncio.ensure_future(read_fills())
    try:
        prices = {token: Decimal(1000) for token, _ in INSTRUMENTS}
        for i in range(n):
            due = started + i / rate
            ahead = due - time.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            token, symbol = INSTRUMENTS[i % len(INSTRUMENTS)]
            prices[token] += Decimal("0.05") * (1 if (i // 97) % 2 else -1)
            tick = MarketTick(
                instrument_token=token,
                symbol=symbol,
                last_price=prices[token],
                volume=i + 1,
                exchange_ts=datetime.fromtimestamp(due, UTC),
            )
            record = MARKET_TICKS.record(
                tick, event_id=new_event_id(), ts=tick.exchange_ts, source="bench"
            )
            await producer.send(MARKET_TICKS.name, key=record.key, value=record.value)
        await producer.flush()
        await asyncio.sleep(2.0)  # the last ticks' fills
        done.set()
        await asyncio.wait_for(reader, timeout=30)
    finally:
        reader.cancel()
        await producer.stop()
        await consumer.stop()
    return ages


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        f"p{int(q * 100)}": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)
        for q in qs
    }


def faust_floor(bootstrap: str, events: int, work: Path, processes: int = 3) -> tuple[float, float]:
    """Ticks/s of `processes` bare Faust agents reading the topic's ticks at once.

    One bare agent per tick-consuming stage (scripts/faust_floor_agent.py), each in its
    own consumer group, while nothing else runs: the ceiling for any pipeline here whose
    stages are Faust agents processing one event at a time.
    """
    script = ROOT / "scripts" / "faust_floor_agent.py"
    results = [work / f"floor-{i}.json" for i in range(processes)]
    procs = []
    for i, result in enumerate(results):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")},
            "FLOOR_BOOTSTRAP": bootstrap,
            "FLOOR_GROUP": f"alpha-panda.bench-floor-{i}",
            "FLOOR_COUNT": str(events),
            "FLOOR_RESULT": str(result),
            "FLOOR_DATADIR": str(work / f"floor-{i}"),
        }
        with (work / f"floor-{i}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(script)], env=env, stdout=log, stderr=log, cwd=work
                )
            )

    def finished() -> bool:
        for proc, result in zip(procs, results, strict=True):
            if proc.poll() is not None and not result.exists():
                raise RuntimeError(f"bare agent exited with {proc.returncode}: see {work}")
        return all(r.exists() for r in results)

    try:
        wait_for(finished, timeout=600, what="bare agents to finish")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    reports = [json.loads(r.read_text()) for r in results]
    span = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    cpu_us_per_event = sum(r["cpu_s"] for r in reports) / len(reports) / events * 1e6
    return events / span, cpu_us_per_event


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def configure(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        sessions = db.session_factory(engine)
        half = len(INSTRUMENTS) // 2
        await db.add_strategy(
            sessions,
            "bench-mom",
            "momentum",
            INSTRUMENTS[:half],
            {"lookback": 20, "threshold_pct": "0.05", "quantity": 1},
            risk_limits={"max_orders_per_minute": 100000},
        )
        await db.add_strategy(
            sessions,
            "bench-mr",
            "mean_reversion",
            INSTRUMENTS[half:],
            {"window": 30, "entry_z": "1.5", "exit_z": "0.2", "quantity": 1},
            risk_limits={"max_orders_per_minute": 100000},
        )
    finally:
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ticks", type=int, default=20_000, help="ticks for the throughput run")
    parser.add_argument(
        "--rate", type=float, default=1_000.0, help="ticks/s of the latency run in latency_ms"
    )
    parser.add_argument(
        "--rates",
        default="100,300,1000",
        help="ticks/s of the latency runs, comma separated (--rate is added if missing)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each latency run")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--single-record-batches",
        action="store_true",
        help="every producer (raw, feed, workers) sends one record per batch",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every stage worker, e.g. ALPHA_PANDA_BROKER_LINGER_MS=0 (repeatable)",
    )
    args = parser.parse_args()
    # The broker and the workers run in their own sessions (so Ctrl-C reaches them only
    # through us): a SIGTERM must unwind through the `finally` that stops them.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    settings = load_settings(broker={"single_record_batches": args.single_record_batches})
    batch = settings.broker.max_batch_size
    # What the workers run with: the defaults, and any broker setting given to them.
    worker_broker = load_settings(
        broker={
            k.removeprefix("ALPHA_PANDA_BROKER_").lower(): v
            for k, v in worker_env.items()
            if k.startswith("ALPHA_PANDA_BROKER_")
        }
    ).broker

    work = Path(tempfile.mkdtemp(prefix="alpha-panda-bench-"))
    broker = EmbeddedBroker.on_free_port()
    broker.start()
    workers: list[StageProcess] = []
    try:
        bootstrap = broker.bootstrap
        asyncio.run(ensure_topics(load_settings(broker={"url": bootstrap})))
        start = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
        records = tick_records(args.ticks, start)
        fetch_wait_ms = settings.broker.fetch_wait_ms
        raw = asyncio.run(raw_passthrough(bootstrap, records, batch, fetch_wait_ms))

        db_url = f"sqlite+aiosqlite:///{work}/bench.db"
        asyncio.run(configure(db_url))
        deployment = Deployment(
            bootstrap=bootstrap,
            data_dir=work,
            database_url=db_url,
            redis_url=os.environ.get("ALPHA_PANDA_BENCH_REDIS", "redis://127.0.0.1:6379/14"),
            extra_env={
                "ALPHA_PANDA_LOG_LEVEL": "WARNING",
                "ALPHA_PANDA_REDIS_KEY_PREFIX": "alpha-panda-bench",
                "ALPHA_PANDA_BROKER_SINGLE_RECORD_BATCHES": str(args.single_record_batches),
                **worker_env,
            },
        )
        workers = [StageProcess(deployment, s).start() for s in STAGES]
        for w in workers:
            w.wait_ready(timeout=90)
        pids = {w.stage.value: w.proc.pid for w in workers if w.proc is not None}
        if broker._process is not None:  # the broker's own CPU is part of a tick's cost
            pids["broker"] = broker._process.pid
        by_stage = {w.stage: w for w in workers}
        tick_consumers = [
            by_stage[Stage.STRATEGY_RUNNER],
            by_stage[Stage.TRADING_ENGINE],
            by_stage[Stage.PORTFOLIO_MANAGER],
        ]

        # 1. Throughput: push N ticks as fast as the producer goes; time until every stage
        # that consumes ticks has processed all of them.
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        produce_s = asyncio.run(
            produce_ticks(bootstrap, records, None, batch, settings.feed.linger_ms)
        )
        wait_for(
            lambda: all(
                metric(w, PROCESSED, topic=MARKET_TICKS.name) >= args.ticks for w in tick_consumers
            ),
            timeout=600,
            what="all stages to process the ticks",
        )
        pipeline_s = time.perf_counter() - started
        pipeline = args.ticks / pipeline_s
        signals = metric(by_stage[Stage.RISK_MANAGER], PROCESSED, topic=SIGNALS_GENERATED.name)

        # The ticks are through, but the signals they caused may still be on their way
        # to fills: let the whole pipeline drain, so the paced run starts from quiet.
        drained_from = time.perf_counter()
        wait_for(lambda: drained(workers), timeout=600, what="the pipeline to drain")
        drain_s = time.perf_counter() - drained_from
        # CPU per tick per process: everything the N ticks caused, through the drain.
        cpu_us = {
            name: (cpu_seconds(pid) - cpu_before[name]) / args.ticks * 1e6
            for name, pid in pids.items()
        }
        cpu_us["total"] = sum(cpu_us.values())

        # 2. Latency at paced rates: the histogram is cumulative, so a paced run's
        # quantiles come from the difference of two scrapes of its buckets.
        pm = by_stage[Stage.PORTFOLIO_MANAGER]
        rates = sorted({float(r) for r in args.rates.split(",") if r.strip()} | {args.rate})
        sent = args.ticks
        by_rate: dict[str, dict[str, object]] = {}
        quantiles: dict[float, float] = {}
        for rate in rates:
            hops_before = {w.stage.value: age_buckets(w) for w in workers}
            before = {
                k: v
                for k, v in scrape(pm).items()
                if k[0] == "alpha_panda_record_age_seconds_bucket"
            }
            paced_n = int(rate * args.seconds)
            fill_ages = asyncio.run(
                paced_ticks_with_fills(bootstrap, paced_n, rate, batch, settings.feed.linger_ms)
            )
            sent += paced_n
            wait_for(
                lambda sent=sent: metric(pm, PROCESSED, topic=MARKET_TICKS.name) >= sent,
                timeout=300,
                what="paced ticks processed",
            )
            after = {
                k: v
                for k, v in scrape(pm).items()
                if k[0] == "alpha_panda_record_age_seconds_bucket"
            }
            deltas = [
                (k, after[k] - before.get(k, 0.0))
                for k in after
                if ("topic", MARKET_TICKS.name) in k[1]
            ]
            rate_quantiles = _quantiles_from(deltas, [0.5, 0.95, 0.99])
            hops: dict[str, dict[str, float]] = {}
            for w in workers:
                now = age_buckets(w)
                old = hops_before[w.stage.value]
                for topic in sorted({dict(k[1])["topic"] for k in now}):
                    hop = [
                        (k, v - old.get(k, 0.0))
                        for k, v in now.items()
                        if dict(k[1])["topic"] == topic
                    ]
                    q = _quantiles_from(hop, [0.5, 0.99])
                    if q:
                        hops[f"{w.stage.value} <- {topic}"] = {
                            f"p{int(x * 100)}": round(v * 1000, 2) for x, v in q.items()
                        }
            if rate == args.rate:
                quantiles = rate_quantiles
            by_rate[f"{rate:g}"] = {
                "tick_to_portfolio_ms": {
                    f"p{int(q * 100)}": round(v * 1000, 2) for q, v in rate_quantiles.items()
                },
                "tick_to_fill_ms": percentiles(fill_ages),
                "fills": len(fill_ages),
                # Per stage and source topic: record's broker timestamp to processed.
                "record_age_ms": hops,
            }
            wait_for(lambda: drained(workers), timeout=300, what="the pipeline to drain")
        paced_n = sent - args.ticks
        memory = {w.stage.value: rss_mb(w.proc.pid) for w in workers if w.proc is not None}
        for w in workers:
            w.stop()
        workers = []
        # 3. The floor: bare agents over every tick the run produced, with nothing else
        # running, in the same broker.
        floor, floor_cpu_us = faust_floor(bootstrap, args.ticks + paced_n, work)
        # 4. The embedded broker's log across a clean stop: save the whole run's log (ticks,
        # derived topics, changelogs, group offsets) and restore it into a fresh broker.
        snapshot = log_snapshot_round_trip(bootstrap, work)
    finally:
        for w in workers:
            w.stop()
        broker.stop()

    result = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "ticks": args.ticks,
        "producer_max_batch_size": batch,
        "raw_passthrough_msgs_per_s": round(raw),
        "pipeline_ticks_per_s": round(pipeline),
        "ratio": round(pipeline / raw, 3),
        "faust_floor_ticks_per_s": round(floor),
        "pipeline_over_floor": round(pipeline / floor, 3),
        "producer_seconds": round(produce_s, 2),
        "signals_decided": int(signals),
        "drain_seconds_after_ticks": round(drain_s, 2),
        "latency_rate_ticks_per_s": args.rate,
        "latency_ms": {f"p{int(q * 100)}": round(v * 1000, 2) for q, v in quantiles.items()},
        "rss_mb": {k: round(v, 1) for k, v in memory.items()},
        **snapshot,
        "cpu_us_per_tick": {k: round(v, 1) for k, v in cpu_us.items()},
        "faust_floor_cpu_us_per_event": round(floor_cpu_us, 1),
        "latency_by_rate": by_rate,
        "workers_fetch_max_wait_ms": worker_broker.fetch_wait_ms,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"machine                      {result['machine']}")
    print(f"producer batches             max {batch} bytes")
    print(f"raw aiokafka passthrough     {result['raw_passthrough_msgs_per_s']:>8} msg/s")
    print(
        f"pipeline (4 consuming stages){result['pipeline_ticks_per_s']:>8} ticks/s"
        f"  ({args.ticks} ticks)"
    )
    print(f"ratio pipeline / raw         {result['ratio']:>8.3f}")
    print(
        f"faust floor (3 bare agents)  {result['faust_floor_ticks_per_s']:>8} ticks/s"
        f"  (pipeline / floor {result['pipeline_over_floor']:.3f})"
    )
    print(
        f"signals decided              {result['signals_decided']:>8}"
        f"  (rest of the pipeline drained {result['drain_seconds_after_ticks']} s later)"
    )
    print(f"faust floor CPU per event     {result['faust_floor_cpu_us_per_event']:>7} us per agent")
    print(
        "CPU per tick (us), throughput run and its drain: "
        + "  ".join(f"{k} {v}" for k, v in result["cpu_us_per_tick"].items())
    )
    for rate_key, row in by_rate.items():
        to_pm = row["tick_to_portfolio_ms"]
        to_fill = row["tick_to_fill_ms"]
        print(
            f"at {rate_key:>5} ticks/s  tick->portfolio "
            + " ".join(f"{k} {v}" for k, v in to_pm.items())  # type: ignore[attr-defined]
            + " ms   tick->fill "
            + " ".join(f"{k} {v}" for k, v in to_fill.items())  # type: ignore[attr-defined]
            + f" ms ({row['fills']} fills)"
        )
    print(
        f"workers' fetch wait          {worker_broker.fetch_wait_ms} ms"
        f" ({worker_broker.kind.value}); load average {os.getloadavg()}"
    )
    print(
        "resident memory (MB):        " + "  ".join(f"{k} {v}" for k, v in result["rss_mb"].items())
    )
    print(
        f"log snapshot (clean stop)    {result['log_snapshot_records']:>8} records, "
        f"{result['log_snapshot_bytes'] / 1e6:.1f} MB: save {result['log_snapshot_save_s']} s, "
        f"restore {result['log_snapshot_restore_s']} s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def log_snapshot_round_trip(bootstrap: str, work: Path) -> dict[str, float | int]:
    """Time saving the broker's whole log and restoring it into a fresh broker."""
    path = work / "broker" / "log.snapshot"
    started = time.perf_counter()
    saved = asyncio.run(save_log(bootstrap, path, "bench"))
    save_s = time.perf_counter() - started
    fresh = EmbeddedBroker.on_free_port()
    fresh.start()
    try:
        started = time.perf_counter()
        asyncio.run(restore_log(fresh.bootstrap, path))
        restore_s = time.perf_counter() - started
    finally:
        fresh.stop()
    return {
        "log_snapshot_records": saved.records,
        "log_snapshot_bytes": path.stat().st_size,
        "log_snapshot_save_s": round(save_s, 2),
        "log_snapshot_restore_s": round(restore_s, 2),
    }


def age_buckets(worker: StageProcess) -> dict:  # type: ignore[type-arg]
    return {
        k: v for k, v in scrape(worker).items() if k[0] == "alpha_panda_record_age_seconds_bucket"
    }


def drained(workers: list[StageProcess]) -> bool:
    """Every record a stage produced has been processed by the stage consuming it.

    Each topic a stage produces has exactly one consuming stage in this deployment.
    """
    produced: dict[str, float] = {}
    processed: dict[str, float] = {}
    for w in workers:
        for (name, labels), value in scrape(w).items():
            topic = dict(labels).get("topic", "")
            if name == PRODUCED:
                produced[topic] = produced.get(topic, 0.0) + value
            elif name == PROCESSED:
                processed[topic] = processed.get(topic, 0.0) + value
    return all(processed.get(topic, 0.0) >= n for topic, n in produced.items())


def _quantiles_from(deltas: list, qs: list[float]) -> dict[float, float]:  # type: ignore[type-arg]
    buckets = sorted(
        (float("inf") if dict(k[1])["le"] == "+Inf" else float(dict(k[1])["le"]), v)
        for k, v in deltas
    )
    total = buckets[-1][1] if buckets else 0.0
    out: dict[float, float] = {}
    for q in qs:
        target, prev_le, prev_count = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= target:
                span = count - prev_count
                frac = (target - prev_count) / span if span else 0.0
                out[q] = prev_le + ((le - prev_le) * frac if le != float("inf") else 0.0)
                break
            prev_le, prev_count = le, count
    return out


if __name__ == "__main__":
    sys.exit(main())
