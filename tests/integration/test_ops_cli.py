"""`alpha-panda dlq|replay|rebuild` end to end on a broker of the test's own.

The CLI runs in this thread (``main`` calls ``asyncio.run``), so anything that must stay
alive meanwhile, such as a group member that heartbeats, runs on a thread of its own.
Every CLI call clears the cached settings so this test's environment is the one used.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker, free_port
from alpha_panda.cli import main
from alpha_panda.mirror import MirrorKeys
from alpha_panda.ops.dlq import known_dlqs
from alpha_panda.settings import Stage, get_settings, load_settings
from alpha_panda.stages import STAGES
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    Tables,
    all_topic_layout,
    changelog_topic,
)
from models.envelope import new_event_id
from models.events import ExecutionMode, OrderFill, Side
from tables.portfolio import Portfolio
from tests.factories import OPEN, fill
from tests.factories import tick as stub_tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    committed,
    high_watermarks,
    metric,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

START_CASH = Decimal("1000000")
GROUP = Stage.STRATEGY_RUNNER.consumer_group
TICK_PARTITIONS = MARKET_TICKS.partitions
CHANGELOG = changelog_topic(Stage.PORTFOLIO_MANAGER.consumer_group, Tables.PORTFOLIOS)
# The tool waits this long for an evicted live member to rejoin (embedded broker only);
# the test members heartbeat every 0.2 s, well inside it.
SESSION_TIMEOUT_S = "2"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Cli:
    def __init__(self, broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]) -> None:
        self.broker = broker
        self.capsys = capsys

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def __call__(self, *argv: str) -> Result:
        get_settings.cache_clear()
        self.capsys.readouterr()
        code = main(list(argv))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


@pytest.fixture
def bare_cli(
    fresh_broker: EmbeddedBroker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Iterator[Cli]:
    """The CLI against a broker of the test's own that has no topics yet."""
    env = {
        "ALPHA_PANDA_BROKER_URL": fresh_broker.bootstrap,
        # The embedded broker refuses idempotent producers; say so up front, not per run.
        "ALPHA_PANDA_BROKER_ENABLE_IDEMPOTENCE": "false",
        "ALPHA_PANDA_BROKER_SESSION_TIMEOUT_S": SESSION_TIMEOUT_S,
        "ALPHA_PANDA_DATA_DIR": str(tmp_path),
        "ALPHA_PANDA_REDIS_ENABLED": "false",
        # Nothing listens on these, unless a test serves a stage's /health there itself.
        "ALPHA_PANDA_WEB_PORT": str(free_port()),
        "ALPHA_PANDA_WEB_STAGE_BASE_PORT": str(free_port_block(len(Stage) - 1)),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield Cli(fresh_broker, capsys)
    get_settings.cache_clear()


@pytest.fixture
def cli(bare_cli: Cli) -> Cli:
    asyncio.run(ensure_topics(load_settings(broker={"url": bare_cli.bootstrap})))
    return bare_cli


def test_an_empty_broker_needs_topics_create(bare_cli: Cli) -> None:
    """The embedded broker keeps its log in memory: after a restart it has no topics."""
    before = bare_cli("dlq", "list")
    assert before.code == 0
    assert "market.ticks.dlq\tmissing (alpha-panda topics create)" in before.out.splitlines()
    missing = bare_cli("dlq", "list", "market.ticks")
    assert missing.code == 1 and "market.ticks.dlq does not exist" in missing.err
    created = bare_cli("topics", "create")
    assert created.code == 0 and "created market.ticks.dlq" in created.out
    after = bare_cli("dlq", "list").out.splitlines()
    assert len(after) == len(known_dlqs())
    assert all(line.endswith("\t0 records") for line in after)
    assert bare_cli("replay", "strategy-runner", "--to-earliest").code == 0


# ---------------------------------------------------------------------------------------
# helpers


def free_port_block(size: int) -> int:
    """A port whose next ``size - 1`` neighbours are free too (stages use base, base+1...)."""
    while True:
        base = free_port()
        if base + size < 65_000 and all(_bindable(base + i) for i in range(size)):
            return base


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tick_bytes(token: int, price: str = "2900.5") -> tuple[bytes, bytes]:
    tick = stub_tick(price, ts=OPEN, token=token, symbol=f"S{token}")
    record = MARKET_TICKS.record(tick, event_id=new_event_id(), ts=OPEN, source="test")
    return record.key, record.value


def dlq_headers(
    *, partition: int, offset: int, error_type: str, message: str, attempts: int
) -> list[tuple[str, bytes]]:
    return [
        ("x-error-type", error_type.encode()),
        ("x-error-message", message.encode()),
        ("x-stage", b"strategy-runner"),
        ("x-attempts", str(attempts).encode()),
        ("x-original-topic", MARKET_TICKS.name.encode()),
        ("x-original-partition", str(partition).encode()),
        ("x-original-offset", str(offset).encode()),
    ]


Sent = tuple[str, int | None, bytes | None, bytes | None, int | None, list[tuple[str, bytes]]]


async def send_all(bootstrap: str, records: Sequence[Sent]) -> None:
    """(topic, partition, key, value, timestamp_ms, headers), acks=all, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1)
    await producer.start()
    try:
        for topic, partition, key, value, ts, headers in records:
            await producer.send_and_wait(
                topic, key=key, value=value, partition=partition, timestamp_ms=ts, headers=headers
            )
    finally:
        await producer.stop()


async def fill_ticks(bootstrap: str, per_partition: int, *, base_ms: int | None = None) -> None:
    """``per_partition`` ticks on every partition; with ``base_ms``, record k of each
    partition carries timestamp base_ms + k minutes."""
    records: list[Sent] = []
    for partition in range(TICK_PARTITIONS):
        for k in range(per_partition):
            key, value = tick_bytes(1000 + partition)
            ts = None if base_ms is None else base_ms + k * 60_000
            records.append((MARKET_TICKS.name, partition, key, value, ts, []))
    await send_all(bootstrap, records)


async def health_ok(request: aiohttp_web.Request) -> aiohttp_web.Response:
    return aiohttp_web.json_response({"status": "ok"})


class GroupMember:
    """A consumer subscribed in a stage's group (default: the strategy runner's), on a thread
    with its own event loop so it keeps heartbeating while the CLI blocks this one.
    Optionally it also answers /health on ``health_port`` like a running stage."""

    def __init__(
        self,
        bootstrap: str,
        *,
        consume: int,
        group: str = GROUP,
        topic: str = MARKET_TICKS.name,
        health_port: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.consume = consume
        self.health_port = health_port
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GroupMember:
        self._thread.start()
        if not self.ready.wait(60) or self.error is not None:
            self.stop()
            raise AssertionError(f"group member never became ready: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "group member did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = None
        if self.health_port is not None:
            app = aiohttp_web.Application()
            app.router.add_get("/health", health_ok)
            runner = aiohttp_web.AppRunner(app)
            await runner.setup()
            await aiohttp_web.TCPSite(runner, "127.0.0.1", self.health_port).start()
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            heartbeat_interval_ms=200,
            session_timeout_ms=6000,
        )
        await consumer.start()
        try:
            consumed = 0
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                consumed += sum(len(messages) for messages in batch.values())
                if batch:
                    await consumer.commit()
                if consumed >= self.consume and consumer.assignment():
                    self.ready.set()
        finally:
            await consumer.stop()
            if runner is not None:
                await runner.cleanup()


def fold(fills: Sequence[OrderFill], strategy_id: str) -> Portfolio:
    """The expected portfolio, folded here fill by fill (duplicates skipped)."""
    portfolio = Portfolio.new(strategy_id, START_CASH)
    for f in fills:
        if f.strategy_id == strategy_id:
            portfolio = portfolio.apply_fill(f) or portfolio
    return portfolio


def fill_record(f: OrderFill) -> Sent:
    spec = ORDERS_FILLED_LIVE if f.execution_mode is ExecutionMode.LIVE else ORDERS_FILLED_PAPER
    record = spec.record(f, event_id=new_event_id(), ts=OPEN, source="trading-engine")
    return (record.topic, None, record.key, record.value, None, [])


async def create_changelog(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(CHANGELOG, ORDERS_FILLED_PAPER.partitions, 1)])
    finally:
        await admin.close()


def changelog_record(strategy_id: str, value: dict[str, Any] | None) -> Sent:
    """A record as Faust writes it: JSON key and value (None: a tombstone)."""
    raw = None if value is None else json.dumps(value).encode()
    return (CHANGELOG, None, json.dumps(strategy_id).encode(), raw, None, [])


# ---------------------------------------------------------------------------------------
# dlq


@pytest.fixture
def dead_letters(cli: Cli) -> list[tuple[bytes, bytes]]:
    """Three hand-made DLQ records of market.ticks; returns their (key, value)."""
    poison = (b"256265", b"\xff\x00{not json\x1b[2J")
    failed = tick_bytes(738561)
    third = tick_bytes(408065, "1500.25")
    records: list[Sent] = [
        (
            "market.ticks.dlq",
            None,
            poison[0],
            poison[1],
            None,
            dlq_headers(
                partition=3,
                offset=17,
                error_type="DecodeError.invalid_json",
                message="Expecting value: line 1 column 1 (char 0)\x1b[31m",
                attempts=1,
            ),
        ),
        (
            "market.ticks.dlq",
            None,
            failed[0],
            failed[1],
            None,
            dlq_headers(
                partition=5, offset=40, error_type="ValueError", message="boom", attempts=3
            ),
        ),
        (
            "market.ticks.dlq",
            None,
            third[0],
            third[1],
            None,
            dlq_headers(partition=8, offset=2, error_type="KeyError", message="'x'", attempts=3),
        ),
    ]
    asyncio.run(send_all(cli.bootstrap, records))
    return [poison, failed, third]


def test_dlq_list_counts_every_dlq(cli: Cli, dead_letters: list[tuple[bytes, bytes]]) -> None:
    result = cli("dlq", "list")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    dlqs = sorted(name for name in all_topic_layout() if name.endswith(".dlq"))
    assert sorted(line.split("\t")[0] for line in lines) == dlqs
    ticks = next(line for line in lines if line.startswith("market.ticks.dlq\t"))
    assert "\t3 records\toldest 20" in ticks and "\tnewest 20" in ticks
    assert "orders.filled.paper.dlq\t0 records" in lines


def test_dlq_list_one_topic_by_either_name(
    cli: Cli, dead_letters: list[tuple[bytes, bytes]]
) -> None:
    by_original = cli("dlq", "list", "market.ticks")
    by_dlq = cli("dlq", "list", "market.ticks.dlq")
    assert by_original.code == by_dlq.code == 0
    assert by_original.out == by_dlq.out
    lines = by_original.out.splitlines()
    assert lines[0] == "market.ticks.dlq: 3 records"
    assert lines[1].split("\t")[:3] == ["dlq_offset", "original", "error_type"]
    assert lines[2].split("\t") == [
        "0",
        "market.ticks[3]@17",
        "DecodeError.invalid_json",
        "strategy-runner",
        "1",
        "Expecting value: line 1 column 1 (char 0)\\x1b[31m",
    ]
    assert lines[3].split("\t")[:5] == [
        "1",
        "market.ticks[5]@40",
        "ValueError",
        "strategy-runner",
        "3",
    ]
    assert "\x1b" not in by_original.out


def test_dlq_show_prints_the_raw_value_safely(
    cli: Cli, dead_letters: list[tuple[bytes, bytes]]
) -> None:
    result = cli("dlq", "show", "market.ticks", "--offset", "0")
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\x00" not in result.out
    lines = result.out.splitlines()
    assert lines[0] == "market.ticks.dlq[0]@0"
    assert "  x-original-offset: 17" in lines
    assert "key: 256265 (6 bytes)" in lines
    assert lines[-1] == "\\xff\\x00{not json\\x1b[2J"


def test_dlq_show_missing_offset_exits_1(cli: Cli, dead_letters: list[tuple[bytes, bytes]]) -> None:
    result = cli("dlq", "show", "market.ticks", "--offset", "9")
    assert result.code == 1
    assert result.err == "alpha-panda: no record at offset 9 (the DLQ holds offsets 0..2)\n"


def test_unknown_topic_exits_2_naming_the_known_ones(cli: Cli) -> None:
    for argv in (
        ("dlq", "list", "ticks"),
        ("dlq", "show", "ticks.dlq", "--offset", "0"),
        ("dlq", "replay", "ticks", "--all"),
    ):
        result = cli(*argv)
        assert result.code == 2, argv
        assert "unknown topic" in result.err and "known: " in result.err
        assert "market.ticks" in result.err and "orders.filled.paper" in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_dlq_replay_reproduces_key_and_bytes_to_the_original_topic(
    cli: Cli, dead_letters: list[tuple[bytes, bytes]]
) -> None:
    dry = cli("dlq", "replay", "market.ticks", "--offset", "1", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.out.splitlines()[0].startswith("would replay market.ticks.dlq@1 -> market.ticks")
    assert (
        asyncio.run(high_watermarks(cli.bootstrap, MARKET_TICKS.name, TICK_PARTITIONS))
        == [0] * TICK_PARTITIONS
    )

    result = cli("dlq", "replay", "market.ticks.dlq", "--offset", "0", "2")
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == (
        "replayed 2 record(s) from market.ticks.dlq to market.ticks"
    )
    landed = asyncio.run(read_topic(cli.bootstrap, MARKET_TICKS.name, until=2))
    assert sorted((r.key, r.value) for r in landed) == sorted([dead_letters[0], dead_letters[2]])
    assert all(r.headers == () for r in landed)

    everything = cli("dlq", "replay", "market.ticks", "--all")
    assert everything.code == 0, everything.err
    assert sum(asyncio.run(high_watermarks(cli.bootstrap, MARKET_TICKS.name, TICK_PARTITIONS))) == 5


def test_dlq_replay_of_a_missing_offset_replays_nothing(
    cli: Cli, dead_letters: list[tuple[bytes, bytes]]
) -> None:
    result = cli("dlq", "replay", "market.ticks", "--offset", "1", "7")
    assert result.code == 1
    assert "no record at offset 7" in result.err and "nothing replayed" in result.err
    assert sum(asyncio.run(high_watermarks(cli.bootstrap, MARKET_TICKS.name, TICK_PARTITIONS))) == 0


def test_dlq_replay_needs_offsets_or_all(cli: Cli) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("dlq", "replay", "market.ticks")
    assert exited.value.code == 2


# ---------------------------------------------------------------------------------------
# replay STAGE


def test_replay_refuses_while_the_group_is_active_then_resets(cli: Cli) -> None:
    asyncio.run(fill_ticks(cli.bootstrap, per_partition=3))
    with GroupMember(cli.bootstrap, consume=3 * TICK_PARTITIONS):
        refused = cli("replay", "strategy-runner", "--to-earliest")
        assert refused.code == 1, refused.out + refused.err
        assert refused.err.startswith("alpha-panda: refusing: group alpha-panda.strategy-runner")
        assert "stop strategy-runner first" in refused.err
        assert len(refused.err.strip().splitlines()) == 1
        offsets = asyncio.run(committed(cli.bootstrap, GROUP, MARKET_TICKS.name, TICK_PARTITIONS))
        assert offsets == [3] * TICK_PARTITIONS  # untouched
        status = cli("group", "strategy-runner")
        assert status.code == 0, status.err
        assert status.out.startswith("group alpha-panda.strategy-runner: ")
        assert "1 member(s)" in status.out.splitlines()[0]
        assert "market.ticks[4]\t3\t3\t0" in status.out.splitlines()
        assert status.out.splitlines()[-1] == "total lag 0"

    earliest = cli("replay", "strategy-runner", "--to-earliest")
    assert earliest.code == 0, earliest.err
    lines = earliest.out.splitlines()
    assert "reset alpha-panda.strategy-runner to earliest" in lines[1]
    ticks = [line for line in lines[2:] if line.startswith(f"{MARKET_TICKS.name}[")]
    assert ticks == [f"market.ticks[{p}]\t3 -> 0" for p in range(TICK_PARTITIONS)]
    # Its other inputs (its strategies' fills and rejections, and their repartition
    # topics) are empty here, and reset all the same.
    others = [line for line in lines[2:] if line not in ticks]
    inputs = STAGES[Stage.STRATEGY_RUNNER].inputs
    assert len(others) == sum(t.partitions for t in inputs if t is not MARKET_TICKS)
    assert all(line.endswith("\tnone -> 0") for line in others), others
    assert (
        asyncio.run(committed(cli.bootstrap, GROUP, MARKET_TICKS.name, TICK_PARTITIONS))
        == [0] * TICK_PARTITIONS
    )
    after_reset = cli("group", "strategy-runner").out.splitlines()
    assert after_reset[0] == "group alpha-panda.strategy-runner: Empty, 0 member(s)"
    assert "market.ticks[4]\t0\t3\t3" in after_reset
    assert after_reset[-1] == f"total lag {3 * TICK_PARTITIONS}"

    to_two = cli("replay", "strategy-runner", "--to-offset", "2")
    assert to_two.code == 0, to_two.err
    assert "market.ticks[7]\t0 -> 2" in to_two.out.splitlines()
    assert (
        asyncio.run(committed(cli.bootstrap, GROUP, MARKET_TICKS.name, TICK_PARTITIONS))
        == [2] * TICK_PARTITIONS
    )

    beyond = cli("replay", "strategy-runner", "--to-offset", "99")
    assert beyond.code == 0, beyond.err
    assert "market.ticks[0]\t2 -> 3  (clamped to the high watermark 3)" in beyond.out


def test_replay_refuses_while_the_stage_answers_health(cli: Cli) -> None:
    port = load_settings().stage_web_port(Stage.STRATEGY_RUNNER)
    asyncio.run(fill_ticks(cli.bootstrap, per_partition=1))
    with GroupMember(cli.bootstrap, consume=TICK_PARTITIONS, health_port=port):
        refused = cli("replay", "strategy-runner", "--to-offset", "0")
    assert refused.code == 1
    assert f"strategy-runner is running (http://127.0.0.1:{port}/health answered 200)" in (
        refused.err
    )


def test_replay_a_group_that_never_ran(cli: Cli) -> None:
    result = cli("replay", "risk-manager", "--to-earliest")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "trading.signals.generated[0]\tnone -> 0" in lines
    assert "alpha-panda.risk-manager.signals-by-strategy[5]\tnone -> 0" in lines
    assert lines[-1].startswith("CAUTION the risk manager remembers the last 500 signals")


def test_broker_unreachable_is_one_line_exit_1(
    bare_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALPHA_PANDA_BROKER_URL", f"127.0.0.1:{free_port()}")
    for argv in (
        ("dlq", "list"),
        ("group", "strategy-runner"),
        ("replay", "strategy-runner", "--to-earliest"),
        ("rebuild", "portfolios"),
    ):
        result = bare_cli(*argv)
        assert result.code == 1, argv
        assert result.err.startswith("alpha-panda: cannot reach the broker at 127.0.0.1:"), argv
        assert len(result.err.strip().splitlines()) == 1, result.err


def test_replay_to_datetime(cli: Cli) -> None:
    base_ms = int(OPEN.timestamp() * 1000)
    asyncio.run(fill_ticks(cli.bootstrap, per_partition=5, base_ms=base_ms))

    def run_to(at: str) -> list[int | None]:
        result = cli("replay", "strategy-runner", "--to-datetime", at)
        assert result.code == 0, result.err
        return asyncio.run(committed(cli.bootstrap, GROUP, MARKET_TICKS.name, TICK_PARTITIONS))

    # OPEN is 03:45Z = 09:15 IST; records sit at OPEN + 0..4 minutes.
    assert run_to("2026-03-02T09:17:30+05:30") == [3] * TICK_PARTITIONS
    assert run_to("2026-03-02T03:47:00Z") == [2] * TICK_PARTITIONS  # exactly on record 2
    assert run_to("2026-03-02T03:00:00Z") == [0] * TICK_PARTITIONS
    after = cli("replay", "strategy-runner", "--to-datetime", "2026-03-02T04:00:00Z")
    assert after.code == 0
    assert "(no record at or after that time: end of the log)" in after.out
    assert (
        asyncio.run(committed(cli.bootstrap, GROUP, MARKET_TICKS.name, TICK_PARTITIONS))
        == [5] * TICK_PARTITIONS
    )


@pytest.mark.parametrize(
    "stage", [s for s in Stage if s is not Stage.MARKET_FEED], ids=lambda s: s.value
)
def test_group_of_every_consuming_stage(cli: Cli, stage: Stage) -> None:
    result = cli("group", stage.value)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"group {stage.consumer_group}: Empty, 0 member(s)"
    assert lines[1] == "topic[partition]\tcommitted\thigh_watermark\tlag"
    assert lines[-1] == "total lag 0"
    assert len(lines) == 3 + sum(spec.partitions for spec in STAGES[stage].inputs)


def test_replay_bad_input_exits_2(cli: Cli) -> None:
    feed = cli("replay", "market-feed", "--to-earliest")
    assert feed.code == 2 and "market-feed consumes no topics" in feed.err
    assert cli("group", "market-feed").code == 2
    naive = cli("replay", "strategy-runner", "--to-datetime", "2026-03-02T09:15:00")
    assert naive.code == 2 and "has no UTC offset" in naive.err
    with pytest.raises(SystemExit) as exited:
        cli("replay", "no-such-stage", "--to-earliest")
    assert exited.value.code == 2


# ---------------------------------------------------------------------------------------
# rebuild portfolios

FILLS = [
    fill("m1", Side.BUY, 10, "2900", "1.50", strategy_id="momo", ts=OPEN),
    fill("r1", Side.BUY, 5, "2890", "0.75", strategy_id="meanrev", ts=OPEN),
    fill("m2", Side.SELL, 4, "2950.05", "1.25", strategy_id="momo", ts=OPEN),
    fill("m1", Side.BUY, 10, "2900", "1.50", strategy_id="momo", ts=OPEN),  # redelivered
    fill("r2", Side.SELL, 5, "2880", "0.70", strategy_id="meanrev", ts=OPEN),
    fill("l1", Side.BUY, 1, "2900", "0.10", strategy_id="lonely", ts=OPEN),
]


@pytest.fixture
def fills_and_table(cli: Cli) -> dict[str, Portfolio]:
    """Fills on the log; a changelog where momo is right (after an older wrong value),
    meanrev is wrong and lonely is absent. Returns the expected portfolios."""
    expected = {sid: fold(FILLS, sid) for sid in ("momo", "meanrev", "lonely")}
    wrong = expected["meanrev"].to_json_dict() | {"cash": "123.45", "trade_count": 1}
    asyncio.run(create_changelog(cli.bootstrap))
    records = [fill_record(f) for f in FILLS]
    records.append((ORDERS_FILLED_PAPER.name, None, b"momo", b"{garbage", None, []))
    records += [
        changelog_record("momo", Portfolio.new("momo", START_CASH).to_json_dict()),
        changelog_record("momo", expected["momo"].to_json_dict()),
        changelog_record("meanrev", wrong),
        changelog_record("gone", {"deleted": "below"}),
        changelog_record("gone", None),
    ]
    asyncio.run(send_all(cli.bootstrap, records))
    return expected


def test_rebuild_reports_table_differences(cli: Cli, fills_and_table: dict[str, Portfolio]) -> None:
    result = cli("rebuild", "portfolios")
    assert result.code == 1, result.err
    out = result.out
    assert "fills: 5 applied, 1 duplicate(s) ignored, 1 undecodable skipped; 3 portfolio(s)" in out
    assert "  skipped: cannot decode record at orders.filled.paper[" in out
    # The portfolio manager never ran here, so the tool warns its table may only be behind.
    assert "NOTE portfolio-manager has not committed 7 of these fills" in out
    assert "  momo: equal" in out
    meanrev = fills_and_table["meanrev"]
    assert "  meanrev: differs" in out
    assert f"    cash: rebuilt {meanrev.cash}, table 123.45" in out
    assert "    trade_count: rebuilt 2, table 1" in out
    assert "  lonely: missing (fills rebuild it; the table has no value)" in out
    assert "gone" not in out  # deleted by its tombstone
    assert "mirror: disabled" in out
    assert "an operator must act" in out.splitlines()[-1]


def test_rebuild_repair_table_then_all_equal(
    cli: Cli, fills_and_table: dict[str, Portfolio]
) -> None:
    repaired = cli("rebuild", "portfolios", "--repair-table")
    assert repaired.code == 0, repaired.out + repaired.err
    assert "wrote meanrev to " + CHANGELOG in repaired.out
    assert "wrote lonely to " + CHANGELOG in repaired.out
    assert "wrote momo" not in repaired.out
    again = cli("rebuild", "portfolios")
    assert again.code == 0, again.out
    assert again.out.splitlines()[-1] == "result: table and mirror equal the rebuild"


def test_rebuild_repair_table_refuses_while_the_portfolio_manager_runs(
    cli: Cli, fills_and_table: dict[str, Portfolio]
) -> None:
    pm_group = Stage.PORTFOLIO_MANAGER.consumer_group
    with GroupMember(cli.bootstrap, group=pm_group, topic=ORDERS_FILLED_PAPER.name, consume=6):
        refused = cli("rebuild", "portfolios", "--repair-table")
    assert refused.code == 1
    assert "alpha-panda: refusing: group alpha-panda.portfolio-manager" in refused.err
    assert "stop portfolio-manager first" in refused.err
    assert "wrote " not in refused.out
    assert "  meanrev: differs" in cli("rebuild", "portfolios").out  # nothing was written


def test_rebuild_with_no_fills_and_no_table_is_equal(cli: Cli) -> None:
    result = cli("rebuild", "portfolios")
    assert result.code == 0, result.out
    assert f"table ({CHANGELOG}: no such topic):" in result.out
    assert "  (no portfolios on either side)" in result.out


@pytest.fixture
def mirror_env(redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's Redis settings: the test database under a prefix of this test's own, as
    other suites may be using the same database at the same time."""
    env = {
        "ALPHA_PANDA_REDIS_ENABLED": "true",
        "ALPHA_PANDA_REDIS_URL": redis_url,
        "ALPHA_PANDA_REDIS_KEY_PREFIX": f"alpha-panda-ops-{unique}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_rebuild_apply_repairs_the_mirror(
    cli: Cli, redis_url: str, mirror_env: dict[str, str]
) -> None:
    import redis

    momo_fills = [f for f in FILLS if f.strategy_id in ("momo", "meanrev")]
    expected = {sid: fold(momo_fills, sid) for sid in ("momo", "meanrev")}
    asyncio.run(create_changelog(cli.bootstrap))
    records = [fill_record(f) for f in momo_fills]
    records += [changelog_record(sid, p.to_json_dict()) for sid, p in expected.items()]
    asyncio.run(send_all(cli.bootstrap, records))
    keys = MirrorKeys(load_settings().redis.key_prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        client.sadd(keys.portfolios, "momo")
        client.set(keys.portfolio("momo"), b'{"strategy_id": "momo", "cash": "1')  # corrupted

        before = cli("rebuild", "portfolios")
        assert before.code == 1
        assert "  momo: unreadable (not JSON:" in before.out
        assert "  meanrev: missing (fills rebuild it; the mirror has no value)" in before.out
        assert "not in the portfolio index: meanrev" in before.out
        assert "the mirror differs (run again with --apply)" in before.out

        applied = cli("rebuild", "portfolios", "--apply")
        assert applied.code == 0, applied.out + applied.err
        assert "rewrote 2 portfolio(s) in the mirror from the rebuild" in applied.out
        # The recomputation also records the last offset it booked from each partition,
        # as the portfolio manager does; learn those offsets from the log itself.
        logged = asyncio.run(read_topic(cli.bootstrap, ORDERS_FILLED_PAPER.name))
        for sid, portfolio in expected.items():
            last = max((r.partition, r.offset) for r in logged if r.key == sid.encode())
            want = portfolio.after_source(f"{ORDERS_FILLED_PAPER.name}:{last[0]}", last[1])
            raw = client.get(keys.portfolio(sid))
            assert isinstance(raw, bytes)
            assert json.loads(raw) == want.to_json_dict()
        members = client.smembers(keys.portfolios)
        assert isinstance(members, set)
        assert {m.decode() for m in members} == {"momo", "meanrev"}

        assert cli("rebuild", "portfolios").code == 0
    finally:
        client.close()


# ---------------------------------------------------------------------------------------
# against a real portfolio-manager worker


def test_rebuild_and_replay_against_a_real_portfolio_manager(
    cli: Cli,
    mirror_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The table and mirror the worker writes are what the rebuild reads; `replay` refuses
    while it runs, resets once it stopped, and the re-read leaves the books unchanged."""
    deployment = Deployment(
        bootstrap=cli.bootstrap,
        data_dir=tmp_path / "pm",
        redis_url=mirror_env["ALPHA_PANDA_REDIS_URL"],
        extra_env=mirror_env,
    )
    monkeypatch.setenv("ALPHA_PANDA_WEB_PORT", str(deployment.api_port))
    records = [fill_record(f) for f in FILLS]
    records.append((ORDERS_FILLED_PAPER.name, None, b"momo", b"{poison", None, []))
    asyncio.run(send_all(cli.bootstrap, records))
    fills_topics = (ORDERS_FILLED_PAPER.name, ORDERS_FILLED_LIVE.name)

    def booked(pm: StageProcess) -> float:
        return sum(
            metric(pm, name, topic=topic)
            for name in ("alpha_panda_messages_processed_total", "alpha_panda_dlq_records_total")
            for topic in fills_topics
        )

    pm = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    try:
        pm.wait_ready()
        wait_for(lambda: booked(pm) >= len(records), what="every fill handled")
        running = cli("replay", "portfolio-manager", "--to-earliest")
        assert running.code == 1, running.out
        assert "refusing:" in running.err and "stop portfolio-manager first" in running.err
    finally:
        pm.stop()

    group = cli("group", "portfolio-manager")
    assert group.code == 0, group.err
    assert "orders.filled.paper[2]\t7\t7\t0" in group.out.splitlines()
    first = cli("rebuild", "portfolios")
    assert first.code == 0, first.out + first.err
    for sid in ("momo", "meanrev", "lonely"):
        assert first.out.count(f"  {sid}: equal") == 2, first.out  # table and mirror

    reset = cli("replay", "portfolio-manager", "--to-earliest")
    assert reset.code == 0, reset.out + reset.err
    assert "orders.filled.paper[0]\t" in reset.out

    pm = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    try:
        pm.wait_ready()
        wait_for(lambda: booked(pm) >= len(records), what="every fill handled again")
    finally:
        pm.stop()
    again = cli("rebuild", "portfolios")
    table_part = again.out.split("\nmirror (")[0]
    for sid in ("momo", "meanrev", "lonely"):
        assert f"  {sid}: equal" in table_part, again.out
    assert again.out.splitlines()[-1] == "result: table and mirror equal the rebuild"
