"""Which log the pipeline runs on: an id created with the log and kept inside it.

The Redis mirror is a cache of the portfolio manager's tables, and those tables are
rebuilt from the log. When the log is new (a fresh embedded broker, ``alpha-panda
broker --reset``, or the last snapshot restored after a broker crash), whatever the
mirror holds came from another log and must not be served as current. So the log
carries its identity: topic ``alpha-panda.log-identity`` (one partition), whose last
record is the current log's id. The mirror stores the id it was built from and is
cleared when the ids differ (:meth:`alpha_panda.mirror.RedisMirror.flush`).

The record also says how durable the log is, so `/health` can say plainly what a
broker crash would lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from alpha_panda.topics import LOG_IDENTITY, LOG_IDENTITY_PARTITIONS
from alpha_panda.workarounds.end_offsets import EndOffsetsUnconfirmed, watermarks

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext

EXTERNAL_DURABILITY = "the broker's own storage"
_TP = TopicPartition(LOG_IDENTITY, 0)


@dataclass(frozen=True)
class LogIdentity:
    log_id: str
    created_at: str
    durability: str
    reason: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> LogIdentity:
        return cls(**json.loads(raw))


async def read_identity(bootstrap: list[str]) -> LogIdentity | None:
    """The log's current identity, or None when it has none (or no identity topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if LOG_IDENTITY not in await admin.list_topics():  # listing creates nothing
            return None
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        marks = await watermarks(consumer, [_TP], stall_s=10.0)
        _begin, end = marks[_TP]
        if end == 0:
            return None
        consumer.seek(_TP, end - 1)
        for _attempt in range(10):
            batch = await consumer.getmany(_TP, timeout_ms=1000)
            for message in batch.get(_TP, []):
                if message.offset == end - 1 and message.value is not None:
                    return LogIdentity.decode(message.value)
        raise EndOffsetsUnconfirmed(f"{LOG_IDENTITY}: no record at offset {end - 1} in 10s")
    finally:
        await consumer.stop()


async def new_identity(bootstrap: list[str], *, durability: str, reason: str) -> LogIdentity:
    """Declare the log new: append a fresh id (creating the identity topic if needed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        if LOG_IDENTITY not in await admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(LOG_IDENTITY, LOG_IDENTITY_PARTITIONS, 1)])
    finally:
        await admin.close()
    identity = LogIdentity(
        log_id=str(uuid.uuid4()),
        created_at=datetime.now(UTC).isoformat(),
        durability=durability,
        reason=reason,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(LOG_IDENTITY, identity.encode(), partition=0)
    finally:
        await producer.stop()
    return identity


async def ensure_identity(
    bootstrap: list[str], *, durability: str = EXTERNAL_DURABILITY
) -> LogIdentity:
    """The log's identity; a log without one gets one now."""
    current = await read_identity(bootstrap)
    if current is not None:
        return current
    return await new_identity(bootstrap, durability=durability, reason="new log")


async def wait_for_identity(
    bootstrap: list[str], *, should_stop: Callable[[], bool], poll_s: float = 1.0
) -> LogIdentity | None:
    """Read the identity, retrying while the broker does not answer; None if there is none."""
    while not should_stop():
        try:
            return await read_identity(bootstrap)
        except (KafkaError, EndOffsetsUnconfirmed, OSError):
            await asyncio.sleep(poll_s)
    return None


def install_identity_check(context: StageContext) -> None:
    """`/health` check ``log``: which log the stage runs on and what a broker crash loses.

    Informational (always ok): the durability is a property of the deployment, not a
    fault; it is said where an operator looks.
    """
    app = context.app
    known: dict[str, LogIdentity | None] = {}

    @app.task  # type: ignore[untyped-decorator]  # faust ships no types
    async def read_log_identity() -> None:
        known["identity"] = await wait_for_identity(
            context.settings.broker.bootstrap_servers, should_stop=lambda: app.should_stop
        )

    async def check() -> tuple[bool, str]:
        if "identity" not in known:
            return True, "log identity not read yet"
        identity = known["identity"]
        if identity is None:
            return True, f"log without an identity record; durability: {EXTERNAL_DURABILITY}"
        return True, f"log {identity.log_id} ({identity.reason}); durability: {identity.durability}"

    context.health_checks["log"] = check
