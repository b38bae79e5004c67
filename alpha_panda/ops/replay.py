"""Reset a stage's consumer-group offsets so it re-reads its inputs (``alpha-panda replay``).

Safe only while the stage is stopped: a running member would overwrite the new offsets
with its own next commit, so the reset refuses while the group has live members.

Liveness comes from DescribeGroups. Redpanda and Kafka report each member's client id
and host; the embedded broker (Tansu) reports bare member ids and, worse, keeps a member
that stopped in the group's first generation for ever (aiokafka sends LeaveGroup only for
generation > 0 and Tansu numbers generations from 0), then refuses every commit from
outside the group. So when the broker's answer carries no member details it is not
trusted: if the stage's /health port answers the stage is running; otherwise each listed
member is asked to leave, and a live consumer shows itself by rejoining at its next
heartbeat (well within the session timeout); one that does not rejoin was stale.

The new offsets are committed by a consumer in the stage's group that only assigns
partitions (it never subscribes, so it never joins the group or triggers a rebalance).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from alpha_panda.admin import admin_client
from alpha_panda.ops import (
    EXIT_USAGE,
    OpsError,
    broker_error,
    plain_consumer,
    read_range,
    topic_partitions,
    unreachable,
    watermarks,
)
from alpha_panda.settings import Settings, Stage
from alpha_panda.stages import STAGES
from alpha_panda.topics import TopicSpec
from alpha_panda.workarounds import stale_group_members

# Stages whose memory of what they already handled is bounded (tables/risk_state.py
# SEEN_SIGNALS_BOUND; fill ids derive from signal ids and the portfolio keeps the last 500):
# re-read inputs older than that are decided or executed again.
REPLAY_CAUTION: Mapping[Stage, str] = MappingProxyType(
    {
        Stage.RISK_MANAGER: (
            "the risk manager remembers the last 500 signals per strategy; older signals "
            "read again are decided again and their approvals go on to the trading engine"
        ),
        Stage.TRADING_ENGINE: (
            "the trading engine executes every validated signal it reads again at today's "
            "price; a portfolio drops a repeated fill only among its last 500 fill ids; live "
            "signals older than ALPHA_PANDA_ZERODHA_MAX_SIGNAL_AGE_S are refused, not placed"
        ),
    }
)

HEALTH_TIMEOUT_S = 1.0
DESCRIBE_POLL_S = 0.2


def consumed_topics(stage: Stage) -> tuple[TopicSpec, ...]:
    specs = STAGES[stage].inputs  # what the stage's agents subscribe to
    if not specs:
        raise OpsError(
            f"{stage.value} consumes no topics (it only produces): it has no group offsets",
            code=EXIT_USAGE,
        )
    return specs


def parse_stage(text: str) -> Stage:
    try:
        return Stage(text)
    except ValueError:
        known = ", ".join(s.value for s in Stage)
        raise OpsError(f"unknown stage {text!r}; known: {known}", code=EXIT_USAGE) from None


class TargetKind(StrEnum):
    EARLIEST = "earliest"
    OFFSET = "offset"
    DATETIME = "datetime"


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    offset: int | None = None
    at: datetime | None = None

    @property
    def at_ms(self) -> int:
        assert self.at is not None
        return int(self.at.timestamp() * 1000)

    def describe(self) -> str:
        if self.kind is TargetKind.OFFSET:
            return f"offset {self.offset}"
        if self.kind is TargetKind.DATETIME:
            assert self.at is not None
            return f"first record at or after {self.at.isoformat()}"
        return "earliest"


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset; a naive time is refused, not guessed (the
    market is in IST, the servers may be in UTC)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise OpsError(
            f"--to-datetime {text!r} is not ISO 8601 (e.g. 2026-01-05T09:15:00+05:30)",
            code=EXIT_USAGE,
        ) from None
    if at.tzinfo is None:
        raise OpsError(
            f"--to-datetime {text!r} has no UTC offset; add one (+05:30 or Z)", code=EXIT_USAGE
        )
    return at


@dataclass(frozen=True)
class Planned:
    offset: int
    note: str = ""


def plan_offset(target: Target, begin: int, end: int, found: int | None = None) -> Planned:
    """The offset to commit for one partition with log start ``begin`` and high
    watermark ``end``; ``found`` is the time lookup's answer (None: no record that late).

    Offsets outside the log are clamped, as kafka-consumer-groups does, and say so.
    """
    if target.kind is TargetKind.EARLIEST:
        return Planned(begin)
    if target.kind is TargetKind.OFFSET:
        assert target.offset is not None
        if target.offset < begin:
            return Planned(begin, f"clamped to the log start {begin}")
        if target.offset > end:
            return Planned(end, f"clamped to the high watermark {end}")
        return Planned(target.offset)
    if found is None:
        return Planned(end, "no record at or after that time: end of the log")
    return Planned(found)


# ---------------------------------------------------------------------------------------
# Is the stage's group active?


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    client_host: str


@dataclass(frozen=True)
class GroupDescription:
    state: str
    members: tuple[Member, ...]

    @property
    def authoritative(self) -> bool:
        """Whether the broker reports who its members are. Kafka and Redpanda always fill
        in client id and host; a bare member id is the embedded broker, whose member list
        may hold consumers that are gone."""
        return all(m.client_id or m.client_host for m in self.members)


@dataclass(frozen=True)
class Activity:
    active: bool
    reason: str


def parse_description(response: Any, group: str) -> GroupDescription:
    for entry in response.groups:
        error_code, group_id, state, _protocol_type, _protocol, members = entry[:6]
        if group_id != group:
            continue
        if error_code:
            raise OpsError(f"describing group {group} failed with error code {error_code}")
        return GroupDescription(
            state=state,
            members=tuple(Member(m[0], m[1] or "", m[2] or "") for m in members),
        )
    raise OpsError(f"the broker did not describe group {group}")


def decide(description: GroupDescription, group: str) -> Activity | None:
    """Activity from the broker's answer alone, or None when it cannot tell."""
    if not description.members:
        return Activity(False, f"group {group} has no members ({description.state})")
    if description.authoritative:
        who = ", ".join(
            f"{m.client_id or m.member_id}@{m.client_host or '?'}" for m in description.members
        )
        return Activity(
            True, f"group {group} has {len(description.members)} active member(s): {who}"
        )
    return None


async def describe(admin: AIOKafkaAdminClient, group: str) -> GroupDescription:
    responses = await admin.describe_consumer_groups([group])
    for response in responses:
        try:
            return parse_description(response, group)
        except OpsError:
            continue
    raise OpsError(f"the broker did not describe group {group}")


async def health_answers(settings: Settings, stage: Stage) -> str | None:
    """Where the stage answered /health (any HTTP status), or None when nothing did."""
    host = settings.web.host if settings.web.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.stage_web_port(stage)}/health"
    timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            return f"{url} answered {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def group_activity(settings: Settings, stage: Stage) -> Activity:
    group = stage.consumer_group
    admin = admin_client(settings)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise unreachable(settings, exc) from None
    try:
        try:
            description = await describe(admin, group)
        except (KafkaError, OpsError) as exc:
            # The broker cannot describe groups: the stage's own port is the evidence left.
            answered = await health_answers(settings, stage)
            if answered:
                return Activity(True, f"{stage.value} is running ({answered})")
            return Activity(
                False, f"broker cannot describe {group} ({exc}); {stage.value} /health is silent"
            )
        activity = decide(description, group)
        if activity is not None:
            return activity
        answered = await health_answers(settings, stage)
        if answered:
            return Activity(True, f"{stage.value} is running ({answered})")
        return await _evict_and_watch(admin, settings, group, description)
    finally:
        await admin.close()


async def _evict_and_watch(
    admin: AIOKafkaAdminClient, settings: Settings, group: str, description: GroupDescription
) -> Activity:
    """Ask the listed members to leave; a live one rejoins within the session timeout."""
    evicted = {m.member_id for m in description.members}
    await stale_group_members.ask_to_leave(admin, group, evicted)
    window = settings.broker.session_timeout_s
    deadline = time.monotonic() + window
    while True:
        current = await describe(admin, group)
        if current.members:
            ids = ", ".join(m.member_id for m in current.members)
            return Activity(
                True,
                f"group {group} has a live member (it rejoined after being asked to leave): {ids}",
            )
        if time.monotonic() >= deadline:
            return Activity(
                False,
                f"group {group}: {len(evicted)} departed member(s) the broker still listed "
                f"did not rejoin within {window:g}s and were removed",
            )
        await asyncio.sleep(DESCRIBE_POLL_S)


# ---------------------------------------------------------------------------------------
# The reset


@dataclass(frozen=True)
class PartitionReset:
    tp: TopicPartition
    before: int | None
    after: int
    note: str

    def line(self) -> str:
        before = "none" if self.before is None else str(self.before)
        note = f"  ({self.note})" if self.note else ""
        return f"{self.tp.topic}[{self.tp.partition}]\t{before} -> {self.after}{note}"


async def _first_at_or_after(
    consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int, end: int, at_ms: int
) -> int | None:
    """The first offset whose timestamp is >= at_ms, by reading the partition."""
    position = begin
    step = 500
    while position < end:
        chunk = await read_range(consumer, tp, position, min(end, position + step))
        for record in chunk:
            if record.timestamp >= at_ms:
                return int(record.offset)
        position = min(end, position + step)
    return None


async def _verified(
    consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int, end: int, at_ms: int, answer: int
) -> bool:
    """Whether the broker's time lookup is right: the record at ``answer`` is at or after
    the time and the one before it is earlier. (The embedded broker answers 0 always.)"""
    if answer < end:
        at = await read_range(consumer, tp, answer, answer + 1)
        if not at or at[0].offset != answer or at[0].timestamp < at_ms:
            return False
    if answer > begin:
        before = await read_range(consumer, tp, answer - 1, answer)
        if not before or before[0].offset != answer - 1 or before[0].timestamp >= at_ms:
            return False
    return True


async def _time_lookup(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    marks: Mapping[TopicPartition, tuple[int, int]],
    at_ms: int,
) -> dict[TopicPartition, int | None]:
    try:
        answers = await consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
    except KafkaError:
        answers = {}  # no usable answer: every partition is read instead
    found: dict[TopicPartition, int | None] = {}
    for tp in tps:
        begin, end = marks[tp]
        answer = answers.get(tp)
        offset = None if answer is None else int(answer.offset)
        if tp in answers and await _verified(
            consumer, tp, begin, end, at_ms, end if offset is None else offset
        ):
            found[tp] = offset
        else:
            found[tp] = await _first_at_or_after(consumer, tp, begin, end, at_ms)
    return found


async def reset_offsets(
    settings: Settings, stage: Stage, target: Target
) -> tuple[Activity, list[PartitionReset]]:
    """Refuse while the group is active; otherwise commit ``target`` on every partition of
    every topic the stage consumes. Returns why the group counted as inactive and
    before/after per partition."""
    specs = consumed_topics(stage)
    group = stage.consumer_group
    try:
        activity = await group_activity(settings, stage)
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    if activity.active:
        raise OpsError(f"refusing: {activity.reason}; stop {stage.value} first")
    present = await topic_partitions(settings, [spec.name for spec in specs])
    tps: list[TopicPartition] = []
    for spec in specs:
        if spec.name not in present:
            raise OpsError(f"{spec.name} does not exist (alpha-panda topics create)")
        tps += [TopicPartition(spec.name, p) for p in present[spec.name]]
    try:
        # Reading (watermarks, the time lookup) reassigns partitions freely, which a
        # consumer with a group id must not do; it only assigns once, then commits.
        async with plain_consumer(settings, client_id="alpha-panda.ops.replay") as reader:
            marks = await watermarks(reader, tps)
            found: Mapping[TopicPartition, int | None] = {}
            if target.kind is TargetKind.DATETIME:
                found = await _time_lookup(reader, tps, marks, target.at_ms)
        plans = {tp: plan_offset(target, *marks[tp], found.get(tp)) for tp in tps}
        async with plain_consumer(
            settings, client_id="alpha-panda.ops.replay", group_id=group
        ) as consumer:
            before = {tp: await consumer.committed(tp) for tp in tps}
            consumer.assign(tps)
            for tp, planned in plans.items():
                consumer.seek(tp, planned.offset)
            try:
                await consumer.commit(
                    {tp: OffsetAndMetadata(p.offset, "") for tp, p in plans.items()}
                )
            except KafkaError as exc:
                raise OpsError(
                    f"the broker refused the commit for {group} ({type(exc).__name__}); "
                    "did the stage start meanwhile? nothing was changed"
                ) from None
            after = {tp: await consumer.committed(tp) for tp in tps}
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    resets = []
    for tp in tps:
        committed = after[tp]
        if committed != plans[tp].offset:
            raise OpsError(
                f"{tp.topic}[{tp.partition}]: committed {committed}, expected {plans[tp].offset}"
            )
        resets.append(PartitionReset(tp, before[tp], plans[tp].offset, plans[tp].note))
    return activity, resets


# ---------------------------------------------------------------------------------------
# Read-only status (``alpha-panda group STAGE``)


@dataclass(frozen=True)
class PartitionStatus:
    tp: TopicPartition
    committed: int | None
    begin: int
    end: int

    @property
    def lag(self) -> int:
        """Records not yet committed (from the log start when nothing is)."""
        return max(0, self.end - max(self.begin, self.committed or 0))

    def line(self) -> str:
        committed = "none" if self.committed is None else str(self.committed)
        return f"{self.tp.topic}[{self.tp.partition}]\t{committed}\t{self.end}\t{self.lag}"


@dataclass(frozen=True)
class GroupStatus:
    group: str
    description: GroupDescription | None  # None: the broker could not describe it
    detail: str
    partitions: tuple[PartitionStatus, ...]

    def lines(self) -> list[str]:
        out = [self.detail]
        out += ["topic[partition]\tcommitted\thigh_watermark\tlag"]
        out += [p.line() for p in self.partitions]
        out.append(f"total lag {sum(p.lag for p in self.partitions)}")
        return out


def describe_members(group: str, description: GroupDescription) -> str:
    members = description.members
    text = f"group {group}: {description.state}, {len(members)} member(s)"
    if not members:
        return text
    listed = ", ".join(
        f"{m.client_id or m.member_id}@{m.client_host}" if m.client_host else m.member_id
        for m in members
    )
    text += f": {listed}"
    if not description.authoritative:
        text += " (this broker keeps members that left in the first generation; stopped?)"
    return text


async def group_status(settings: Settings, stage: Stage) -> GroupStatus:
    """Where the stage's group stands, changing nothing (no eviction, no commit)."""
    specs = consumed_topics(stage)
    group = stage.consumer_group
    admin = admin_client(settings)
    description: GroupDescription | None
    try:
        try:
            await admin.start()
        except KafkaError as exc:
            raise unreachable(settings, exc) from None
        try:
            description = await describe(admin, group)
            detail = describe_members(group, description)
        except (KafkaError, OpsError) as exc:
            description, detail = None, f"group {group}: the broker cannot describe it ({exc})"
    finally:
        await admin.close()
    present = await topic_partitions(settings, [spec.name for spec in specs])
    tps = [TopicPartition(s.name, p) for s in specs for p in present.get(s.name, [])]
    marks: dict[TopicPartition, tuple[int, int]] = {}
    try:
        if tps:  # (aiokafka's stop() raises if a group-less consumer was never assigned)
            async with plain_consumer(settings, client_id="alpha-panda.ops.group") as reader:
                marks = await watermarks(reader, tps)
        async with plain_consumer(
            settings, client_id="alpha-panda.ops.group", group_id=group
        ) as consumer:
            committed = {tp: await consumer.committed(tp) for tp in tps}
    except KafkaError as exc:
        raise broker_error(settings, exc) from None
    partitions = tuple(PartitionStatus(tp, committed[tp], *marks[tp]) for tp in tps)
    return GroupStatus(group, description, detail, partitions)
