"""The embedded broker's log saved from one broker and restored into a fresh one, exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alpha_panda.broker import EmbeddedBroker
from alpha_panda.log_identity import ensure_identity, read_identity
from alpha_panda.log_snapshot import SnapshotError, restore_log, save_log

pytestmark = pytest.mark.integration


async def _fill(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("snap.a", 3, 1), NewTopic("snap.b.dlq", 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(300):  # several records per batch: Tansu's short end offsets
            await producer.send(
                "snap.a", f"v{i}".encode(), key=f"k{i % 7}".encode(), timestamp_ms=1_000 + i
            )
        await producer.send(
            "snap.b.dlq", b"bad", key=None, headers=[("x-error-type", b"DecodeError")]
        )
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="alpha-panda.g")
    await consumer.start()
    try:
        tps = [TopicPartition("snap.a", 0), TopicPartition("snap.a", 2)]
        consumer.assign(tps)
        await consumer.commit({tps[0]: 17, tps[1]: 5})
    finally:
        await consumer.stop()


async def _dump(bootstrap: str) -> dict[tuple[str, int], list[tuple[object, ...]]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: dict[tuple[str, int], list[tuple[object, ...]]] = {}
    try:
        tps = [TopicPartition("snap.a", p) for p in range(3)] + [TopicPartition("snap.b.dlq", 0)]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        # 301 records written; read until they are all in (or 30 s have passed).
        for _ in range(150):
            if sum(len(v) for v in out.values()) >= 301:
                break
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                out.setdefault((tp.topic, tp.partition), []).extend(
                    (m.offset, m.key, m.value, m.timestamp, tuple(m.headers)) for m in messages
                )
    finally:
        await consumer.stop()
    return out


async def _committed(bootstrap: str) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="alpha-panda.g")
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition("snap.a", p)) for p in range(3)]
    finally:
        await consumer.stop()


def test_a_saved_log_restores_with_the_same_offsets_groups_and_identity(
    fresh_broker: EmbeddedBroker, second_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    asyncio.run(_fill(fresh_broker.bootstrap))
    identity = asyncio.run(ensure_identity([fresh_broker.bootstrap], durability="test"))
    path = tmp_path / "log.snapshot"
    saved = asyncio.run(save_log(fresh_broker.bootstrap, path, identity.log_id))
    assert saved.records == 300 + 1 + 1  # the ticks, the DLQ record, the identity record
    assert saved.groups == {"alpha-panda.g": {"snap.a:0": 17, "snap.a:2": 5}}

    restored = asyncio.run(restore_log(second_broker.bootstrap, path))
    assert restored.log_id == identity.log_id
    before, after = (
        asyncio.run(_dump(fresh_broker.bootstrap)),
        asyncio.run(_dump(second_broker.bootstrap)),
    )
    assert sum(len(v) for v in before.values()) == 301
    assert after == before
    assert asyncio.run(_committed(second_broker.bootstrap)) == [17, None, 5]
    assert asyncio.run(read_identity([second_broker.bootstrap])) == identity

    # Restoring into a log that is not empty would interleave two logs: refused.
    with pytest.raises(SnapshotError, match="not empty"):
        asyncio.run(restore_log(second_broker.bootstrap, path))
