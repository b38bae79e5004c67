"""`alpha-panda dlq|replay|rebuild`: the operator's tools (docs/RUNBOOK.md says when).

Exit codes: 0 ok; 1 refused, not found, or a difference an operator must look at;
2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from alpha_panda.mirror import MirrorKeys, rewrite_portfolios
from alpha_panda.ops import (
    EXIT_OK,
    EXIT_REFUSED,
    OpsError,
    broker_error,
    plain_consumer,
    read_range,
    topic_partitions,
    watermarks,
)
from alpha_panda.ops import dlq as dlq_ops
from alpha_panda.ops import rebuild as rebuild_ops
from alpha_panda.ops import replay as replay_ops
from alpha_panda.producer import start_producer
from alpha_panda.settings import Settings, Stage, get_settings
from alpha_panda.topics import (
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    Tables,
    changelog_topic,
)
from models.codec import DecodeError, decode
from models.envelope import EventType
from models.events import OrderFill
from tables.portfolio import Portfolio
from tables.specs import PORTFOLIOS

FILL_TOPICS = (ORDERS_FILLED_PAPER, ORDERS_FILLED_LIVE)
RUNBOOK_WRONG_PORTFOLIO = 'docs/RUNBOOK.md, "A wrong portfolio"'


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = subparsers.add_parser("dlq", help="inspect and replay dead-letter queues")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="every DLQ's size, or one DLQ's records")
    listing.add_argument(
        "topic", nargs="?", help=f"e.g. {MARKET_TICKS.name} or {MARKET_TICKS.dlq_name}"
    )
    listing.set_defaults(handler=dlq_list)
    show = sub.add_parser("show", help="one DLQ record: headers, key, raw value")
    show.add_argument("topic")
    show.add_argument("--offset", type=_offset, required=True)
    show.set_defaults(handler=dlq_show)
    replay = sub.add_parser("replay", help="re-produce DLQ records to their original topic")
    replay.add_argument("topic")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--offset", type=_offset, nargs="+", action="extend", dest="offsets", metavar="N"
    )
    which.add_argument("--all", action="store_true", help="every record in the DLQ")
    replay.add_argument("--dry-run", action="store_true", help="print, produce nothing")
    replay.set_defaults(handler=dlq_replay)

    reset = subparsers.add_parser(
        "replay", help="reset a stopped stage's consumer-group offsets so it re-reads"
    )
    reset.add_argument("stage", choices=[s.value for s in Stage])
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true")
    to.add_argument("--to-offset", type=_offset, metavar="N")
    to.add_argument("--to-datetime", metavar="ISO8601", help="e.g. 2026-01-05T09:15:00+05:30")
    reset.set_defaults(handler=replay_command)

    group = subparsers.add_parser(
        "group", help="a stage's consumer group: members, committed offsets, lag (read-only)"
    )
    group.add_argument("stage", choices=[s.value for s in Stage])
    group.set_defaults(handler=group_command)

    rebuild = subparsers.add_parser("rebuild", help="recompute state from the log and compare")
    what = rebuild.add_subparsers(dest="rebuild_command", required=True)
    portfolios = what.add_parser(
        "portfolios", help="portfolios from the fills vs the live table and the Redis mirror"
    )
    portfolios.add_argument(
        "--apply", action="store_true", help="rewrite the Redis mirror from the rebuild"
    )
    portfolios.add_argument(
        "--repair-table",
        action="store_true",
        help="write the rebuilt portfolios to the table's changelog (portfolio manager stopped)",
    )
    portfolios.set_defaults(handler=rebuild_portfolios)


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an offset") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; offsets start at 0")
    return value


def _run(action: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    settings = get_settings()
    kafka_log = logging.getLogger("aiokafka")
    previous = kafka_log.level
    if settings.log_level != "DEBUG":
        # Every failure ends in one line naming its cause; aiokafka's own error logs would
        # print the same failure again, several times, unformatted.
        kafka_log.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(action(settings))
    except OpsError as exc:
        print(f"alpha-panda: {exc}", file=sys.stderr)
        return exc.code
    finally:
        kafka_log.setLevel(previous)


# ---------------------------------------------------------------------------------------
# dlq


def dlq_list(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        if args.topic is None:
            for summary in await dlq_ops.summarize(settings):
                print(summary.line())
            return EXIT_OK
        _original, dlq = dlq_ops.resolve(args.topic)
        records = await dlq_ops.read_dlq(settings, dlq)
        print(f"{dlq}: {len(records)} records")
        if records:
            print(dlq_ops.LIST_HEADER)
        for record in records:
            print(record.list_line())
        return EXIT_OK

    return _run(action)


def dlq_show(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        _original, dlq = dlq_ops.resolve(args.topic)
        records = await dlq_ops.read_dlq(settings, dlq)
        (record,) = dlq_ops.select(records, [args.offset])
        for line in record.show_lines():
            print(line)
        return EXIT_OK

    return _run(action)


def dlq_replay(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        original, dlq = dlq_ops.resolve(args.topic)
        available = await dlq_ops.read_dlq(settings, dlq)
        try:
            records = dlq_ops.select(available, None if args.all else args.offsets)
        except OpsError as exc:
            raise OpsError(f"{exc}; nothing replayed", exc.code) from None
        if not records:
            print(f"{dlq} is empty; nothing to replay")
            return EXIT_OK
        done = await dlq_ops.replay(settings, original, records, dry_run=args.dry_run)
        for replayed in done:
            print(replayed.line(args.dry_run))
        verb = "would replay" if args.dry_run else "replayed"
        print(f"{verb} {len(done)} record(s) from {dlq} to {original}")
        return EXIT_OK

    return _run(action)


# ---------------------------------------------------------------------------------------
# replay (consumer-group offsets)


def replay_command(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        stage = replay_ops.parse_stage(args.stage)
        if args.to_earliest:
            target = replay_ops.Target(replay_ops.TargetKind.EARLIEST)
        elif args.to_offset is not None:
            target = replay_ops.Target(replay_ops.TargetKind.OFFSET, offset=args.to_offset)
        else:
            at = replay_ops.parse_datetime(args.to_datetime)
            target = replay_ops.Target(replay_ops.TargetKind.DATETIME, at=at)
        replay_ops.consumed_topics(stage)  # exit 2 for a stage that consumes nothing
        activity, resets = await replay_ops.reset_offsets(settings, stage, target)
        print(activity.reason)
        print(f"reset {stage.consumer_group} to {target.describe()} (partition: before -> after)")
        for reset in resets:
            print(reset.line())
        caution = replay_ops.REPLAY_CAUTION.get(stage)
        if caution:
            print(
                f"CAUTION {caution}: rewind only minutes, with trading halted, then run "
                "`alpha-panda rebuild portfolios` (docs/RUNBOOK.md)"
            )
        return EXIT_OK

    return _run(action)


def group_command(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        stage = replay_ops.parse_stage(args.stage)
        status = await replay_ops.group_status(settings, stage)
        for line in status.lines():
            print(line)
        return EXIT_OK

    return _run(action)


# ---------------------------------------------------------------------------------------
# rebuild portfolios: reading the fills, the table's changelog and the mirror


@dataclass
class LogFills:
    fills: list[rebuild_ops.LoggedFill] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # partitions whose log start > 0
    partition_of: dict[str, int] = field(default_factory=dict)  # strategy -> fill partition
    topics_of: dict[str, set[str]] = field(default_factory=dict)
    marks: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)


@dataclass
class TableState:
    topic: str
    exists: bool
    values: dict[str, bytes] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    # How its keys are written: Faust JSON-encodes str keys; a repair must match, or the
    # portfolio manager could not read the record back on recovery.
    json_keys: bool = True

    def encode_key(self, strategy_id: str) -> bytes:
        return json.dumps(strategy_id).encode() if self.json_keys else strategy_id.encode()


async def read_fills(settings: Settings) -> LogFills:
    """Every fill, topic by topic, partition by partition, in offset order."""
    out = LogFills()
    present = await topic_partitions(settings, [spec.name for spec in FILL_TOPICS])
    async with plain_consumer(settings, client_id="alpha-panda.ops.rebuild") as consumer:
        for spec in FILL_TOPICS:
            if spec.name not in present:
                raise OpsError(f"{spec.name} does not exist (alpha-panda topics create)")
            tps = [TopicPartition(spec.name, p) for p in present[spec.name]]
            marks = await watermarks(consumer, tps)
            out.marks.update(marks)
            for tp, (begin, end) in marks.items():
                if begin > 0:
                    out.truncated.append(f"{tp.topic}[{tp.partition}] starts at offset {begin}")
                for record in await read_range(consumer, tp, begin, end):
                    try:
                        envelope = decode(
                            record.value,
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=record.offset,
                            expect=EventType.ORDER_FILLED,
                            key=record.key,
                        )
                    except DecodeError as exc:
                        # The portfolio manager dead-letters these too, so skipping
                        # them is what it did.
                        out.undecodable.append(str(exc))
                        continue
                    fill: OrderFill = envelope.data
                    source = f"{tp.topic}:{tp.partition}"
                    out.fills.append(rebuild_ops.LoggedFill(fill, source, record.offset))
                    out.partition_of.setdefault(fill.strategy_id, tp.partition)
                    out.topics_of.setdefault(fill.strategy_id, set()).add(tp.topic)
    return out


async def portfolio_manager_lag(settings: Settings, log: LogFills) -> int:
    """Fills the portfolio manager has not committed yet (it has not run: all of them).

    Reading committed offsets does not join the group."""
    group = Stage.PORTFOLIO_MANAGER.consumer_group
    lag = 0
    async with plain_consumer(
        settings, client_id="alpha-panda.ops.rebuild", group_id=group
    ) as consumer:
        for tp, (begin, end) in log.marks.items():
            committed = await consumer.committed(tp)
            lag += max(0, end - max(begin, committed or 0))
    return lag


async def read_table(settings: Settings) -> TableState:
    """The portfolio manager's table as its changelog says: the last value per key."""
    topic = changelog_topic(Stage.PORTFOLIO_MANAGER.consumer_group, Tables.PORTFOLIOS)
    state = TableState(topic, exists=False)
    partitions = (await topic_partitions(settings, [topic])).get(topic)
    if partitions is None:
        return state
    async with plain_consumer(settings, client_id="alpha-panda.ops.rebuild") as consumer:
        state.exists = True
        tps = [TopicPartition(topic, p) for p in partitions]
        for tp, (begin, end) in (await watermarks(consumer, tps)).items():
            records = await read_range(consumer, tp, begin, end)
            encodings = {rebuild_ops.table_key(r.key)[1] for r in records if r.key is not None}
            if encodings == {False}:
                state.json_keys = False
            latest = rebuild_ops.latest_values((r.key, r.value) for r in records)
            for key, value in latest.items():
                state.values[key] = value
                state.partition_of[key] = tp.partition
    return state


@dataclass
class MirrorState:
    values: dict[str, bytes]
    indexed: set[str]  # the ids the mirror's portfolio index lists


async def read_mirror(settings: Settings, strategy_ids: set[str]) -> MirrorState:
    import redis.asyncio as redis_asyncio
    from redis.exceptions import RedisError

    keys = MirrorKeys(settings.redis.key_prefix)
    client = redis_asyncio.Redis.from_url(
        settings.redis.url, socket_connect_timeout=2.0, socket_timeout=5.0
    )
    try:
        indexed = {m.decode() for m in await client.smembers(keys.portfolios)}
        values: dict[str, bytes] = {}
        for strategy_id in sorted(strategy_ids | indexed):
            raw = await client.get(keys.portfolio(strategy_id))
            if raw is not None:
                values[strategy_id] = raw
        return MirrorState(values, indexed)
    except (RedisError, OSError) as exc:
        raise OpsError(f"cannot read the Redis mirror at {settings.redis.url}: {exc}") from None
    finally:
        await client.aclose()


def _compare_mirror(
    rebuilt: dict[str, Portfolio], mirror: MirrorState
) -> tuple[list[rebuild_ops.Comparison], list[str]]:
    """Value comparisons, plus rebuilt ids the index does not list (readers that list
    portfolios from the index would not see them)."""
    unlisted = sorted(set(rebuilt) - mirror.indexed)
    return rebuild_ops.compare_all(rebuilt, mirror.values), unlisted


def _print_mirror(
    title: str, comparisons: list[rebuild_ops.Comparison], unlisted: list[str]
) -> None:
    _print_comparisons(title, comparisons, "mirror")
    if unlisted:
        print(f"  not in the portfolio index: {', '.join(unlisted)}")


async def write_mirror(settings: Settings, portfolios: dict[str, Any]) -> None:
    from redis.exceptions import RedisError

    try:
        await rewrite_portfolios(
            settings.redis.url, MirrorKeys(settings.redis.key_prefix), portfolios
        )
    except (RedisError, OSError) as exc:
        raise OpsError(f"cannot write the Redis mirror at {settings.redis.url}: {exc}") from None


async def repair_table(
    settings: Settings,
    table: TableState,
    rebuilt: dict[str, Any],
    comparisons: list[rebuild_ops.Comparison],
    log: LogFills,
) -> list[str]:
    """Append the rebuilt value of every differing portfolio to the table's changelog,
    on the partition that key lives on, so the portfolio manager restores it on start."""
    if not table.exists:
        raise OpsError(
            f"{table.topic} does not exist: the portfolio manager has not run; it builds "
            "its table from the fills on first start, nothing to repair"
        )
    if log.truncated:
        raise OpsError(
            "refusing to repair: the fills log no longer starts at offset 0 ("
            + "; ".join(log.truncated)
            + "), so the rebuild is incomplete"
        )
    activity = await replay_ops.group_activity(settings, Stage.PORTFOLIO_MANAGER)
    if activity.active:
        raise OpsError(f"refusing: {activity.reason}; stop portfolio-manager first")
    fix = [
        c.strategy_id
        for c in comparisons
        if c.status
        in (rebuild_ops.Status.DIFFERS, rebuild_ops.Status.MISSING, rebuild_ops.Status.UNREADABLE)
    ]
    lines = [activity.reason]
    if not fix:
        return lines
    producer: AIOKafkaProducer = await start_producer(settings, client_id="alpha-panda.ops.rebuild")
    try:
        for strategy_id in fix:
            partition = table.partition_of.get(strategy_id, log.partition_of.get(strategy_id))
            meta = await producer.send_and_wait(
                table.topic,
                key=table.encode_key(strategy_id),
                value=json.dumps(rebuilt[strategy_id]).encode(),
                partition=partition,
            )
            lines.append(f"wrote {strategy_id} to {table.topic}[{meta.partition}]@{meta.offset}")
    finally:
        await producer.stop()
    return lines


def rebuild_portfolios(args: argparse.Namespace) -> int:
    async def action(settings: Settings) -> int:
        try:
            return await _rebuild(settings, apply=args.apply, repair=args.repair_table)
        except KafkaError as exc:
            raise broker_error(settings, exc) from None

    return _run(action)


def _print_comparisons(title: str, comparisons: list[rebuild_ops.Comparison], label: str) -> None:
    print(title)
    if not comparisons:
        print("  (no portfolios on either side)")
    for comparison in comparisons:
        for line in comparison.lines(label):
            print(f"  {line}")


async def _rebuild(settings: Settings, *, apply: bool, repair: bool) -> int:
    log = await read_fills(settings)
    result = rebuild_ops.recompute(log.fills, settings.portfolio.starting_cash)
    rebuilt = {sid: PORTFOLIOS.encode(p) for sid, p in result.portfolios.items()}
    print(
        f"fills: {result.applied} applied, {result.duplicates} duplicate(s) ignored, "
        f"{len(log.undecodable)} undecodable skipped; {len(rebuilt)} portfolio(s)"
    )
    for problem in log.undecodable:
        print(f"  skipped: {problem}")
    for note in log.truncated:
        print(f"  WARNING {note}: older fills were deleted by retention; the rebuild is partial")
    for strategy_id, topics in sorted(log.topics_of.items()):
        if len(topics) > 1:
            print(
                f"  NOTE {strategy_id} has fills in {' and '.join(sorted(topics))}; the log does "
                "not order them against each other, so they were applied topic by topic"
            )

    lag = await portfolio_manager_lag(settings, log)
    if lag:
        print(
            f"  NOTE portfolio-manager has not committed {lag} of these fills: its table may "
            "only be behind (compare again when alpha_panda_consumer_lag is 0)"
        )

    table = await read_table(settings)
    table_cmp = rebuild_ops.compare_all(result.portfolios, table.values)
    label = f"table ({table.topic})" if table.exists else f"table ({table.topic}: no such topic)"
    _print_comparisons(label + ":", table_cmp, "table")
    if repair and not rebuild_ops.all_equal(table_cmp):
        for line in await repair_table(settings, table, rebuilt, table_cmp, log):
            print(line)
        table = await read_table(settings)
        table_cmp = rebuild_ops.compare_all(result.portfolios, table.values)
        _print_comparisons("table after repair:", table_cmp, "table")
    tables_equal = rebuild_ops.all_equal(table_cmp)

    mirror_equal = True
    if not settings.redis.enabled:
        print("mirror: disabled (ALPHA_PANDA_REDIS_ENABLED=false); not compared")
    else:
        ids = set(result.portfolios)
        mirror = await read_mirror(settings, ids)
        mirror_cmp, unlisted = _compare_mirror(result.portfolios, mirror)
        _print_mirror(f"mirror ({settings.redis.url}):", mirror_cmp, unlisted)
        if apply and (unlisted or not rebuild_ops.all_equal(mirror_cmp)):
            await write_mirror(settings, rebuilt)
            print(f"rewrote {len(rebuilt)} portfolio(s) in the mirror from the rebuild")
            if not tables_equal:
                print(
                    "  NOTE the table differs, and the portfolio manager rewrites the mirror "
                    "from its table on its next change of those portfolios"
                )
            mirror_cmp, unlisted = _compare_mirror(
                result.portfolios, await read_mirror(settings, ids)
            )
            _print_mirror("mirror after --apply:", mirror_cmp, unlisted)
        mirror_equal = not unlisted and rebuild_ops.all_equal(mirror_cmp)

    if not tables_equal:
        print(
            "result: the portfolio manager's table differs from the fills: an operator must "
            f"act ({RUNBOOK_WRONG_PORTFOLIO})"
        )
        return EXIT_REFUSED
    if not mirror_equal:
        print("result: the table is right; the mirror differs (run again with --apply)")
        return EXIT_REFUSED
    print("result: table and mirror equal the rebuild")
    return EXIT_OK
