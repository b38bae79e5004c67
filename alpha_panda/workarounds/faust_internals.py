"""Three values Faust and aiokafka keep private that a stage needs: one home for the reach-ins.

**Defects** (faust-streaming 0.15.3 over aiokafka 0.14.0):

1. *No way to send buffered records now.* Faust's ``Producer.flush()`` waits for the open
   batches to fill or for ``producer_linger_ms``; a stage that waits for acks (it writes
   "input offset o done" only once o's outputs are durable) paid the linger on every
   wait: a third of the strategy runner's time in the benchmark.
   :func:`flush_open_batches` closes the open batches the way aiokafka's own
   transactional commit does (``_message_accumulator.flush_for_commit()``, on the
   aiokafka producer Faust keeps in ``Producer._producer``).
2. *No accessor for the committed offset.* Faust tracks the next offset to consume per
   partition in ``Consumer._committed_offset`` (last acked + 1, as Kafka does); the lag
   metric and the offset-gap alarm (:mod:`alpha_panda.runtime`) read it through
   :func:`committed_offset`.
3. *The fetch wait is hard-coded.* Faust builds its worker consumer with aiokafka's
   ``fetch_max_wait_ms=1500`` and no setting; the embedded broker does not answer a
   waiting fetch when records arrive, so every idle hop would add 1.5 s.
   :func:`set_fetch_max_wait` sets the value on the consumer's fetcher once partitions
   are assigned (the consumer exists then; every later fetch request reads it).

**Versions checked**: faust-streaming 0.15.3, aiokafka 0.14.0. At import the versions
are checked and so is the source of each place read or written here (the private name
is still the one used, and Faust still hard-codes the fetch wait): a rename would
otherwise turn the assignment in (3) into a silent no-op.

**Proof it is still needed**: the import-time source checks (a public accessor or a
Faust setting would fail them); ``tests/unit/test_workarounds.py`` runs each function on
a real Faust app's producer and consumer; the fetch-wait figures in docs/PERFORMANCE.md
(``scripts/bench.py`` reports ``workers_fetch_max_wait_ms``) and the offset-gap check run
by ``tests/integration/test_restarts.py``.
"""

from __future__ import annotations

from typing import Any

import faust
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.producer.producer import AIOKafkaProducer
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from alpha_panda.workarounds._versions import require_source, require_versions

CHECKED_VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def _check() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    require_source(__name__, AIOKafkaProducer.__init__, "self._message_accumulator = ")
    require_source(__name__, MessageAccumulator.flush_for_commit, "batch._builder.close()")
    require_source(__name__, faust_aiokafka.Producer._ensure_producer, "self._producer")
    require_source(__name__, FaustConsumer.__init__, "self._committed_offset = ")
    require_source(
        __name__,
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer,
        "fetch_max_wait_ms=1500",
    )
    require_source(__name__, ThreadDelegateConsumer.__init__, "self._thread = ")
    require_source(
        __name__, faust_aiokafka.AIOKafkaConsumerThread._ensure_consumer, "self._consumer"
    )
    require_source(__name__, Fetcher.__init__, "self._fetch_max_wait_ms = ")


_check()


async def flush_open_batches(producer: Any) -> None:
    """Send everything ``producer`` (a Faust app's producer) buffers now (defect 1)."""
    await producer.buffer.flush()  # Faust's buffer drains into aiokafka in the background
    client = producer._producer
    if client is None:
        await producer.flush()
        return
    await client._message_accumulator.flush_for_commit()


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The next offset Faust's ``consumer`` will commit for ``tp``, or None (defect 2)."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def set_fetch_max_wait(app: faust.App, wait_ms: int) -> None:
    """Set the worker consumer's fetch wait once partitions are assigned (defect 3)."""

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]  # faust is untyped
    async def apply_fetch_wait(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        consumer = app.consumer._thread._ensure_consumer()
        consumer._fetcher._fetch_max_wait_ms = wait_ms
