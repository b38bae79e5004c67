"""Faust's table recovery, hardened against two defects that lose or stale state.

Installed as every stage app's ``TableManager`` (see :mod:`alpha_panda.factory`).

**1. Records skipped at the hand-over to the streams** (faust-streaming 0.15.x, seen
after SIGKILL restarts). Once a rebalance's table recovery is done, Faust's
``Recovery.on_recovery_completed`` does, in this order:

1. resume fetching the stream (source) partitions,
2. seek them to the committed offsets (an ``await``),
3. ``flow_control.resume()``, which *clears every stream queue*,
4. ``consumer.resume_flow()``.

But the consumer's flow is already active at step 1: changelog recovery resumed it. So
while step 2 awaits the broker, the fetcher delivers source records into the stream
queues and moves the consumer position past them; step 3 throws them away. The stream
starts after them, nothing re-fetches them, and once later records are acked the commit
moves past them too. It showed as ``offset_gap_detected`` (see :mod:`alpha_panda.runtime`)
with e.g. "expected 1, got 41": one fetch batch lost, in about two restarts of three.

The fix: stop the consumer's flow before the hand-over. A fetch that returns while flow
is stopped is discarded by Faust itself, which then seeks back to the committed offsets;
nothing is queued until step 4, which comes after the clear. A record queued before the
stop is cleared and re-fetched from the committed offset, so the cost is at most a
re-delivery, which every stage handles (at-least-once, idempotent stages).

**2. Changelogs read short** (embedded broker). Recovery reads each changelog partition
up to the end offset the broker lists, and Tansu lists the last batch's base offset + 1
(:mod:`alpha_panda.end_offsets`): after a multi-record batch, recovery stopped early and
a restarted worker served a stale table. The end offsets are confirmed by a fetch.
"""

from __future__ import annotations

from collections import Counter

from aiokafka import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT

from alpha_panda.end_offsets import high_watermarks


class HardenedRecovery(Recovery):  # type: ignore[misc]  # faust is untyped for mypy here
    """Faust's recovery with the hand-over race closed and end offsets confirmed."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super()._resume_streams(generation_id)

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        if not tps:
            return
        servers = [f"{url.host}:{url.port}" for url in self.app.conf.broker]
        confirmed = await high_watermarks(
            servers, [TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
        for tp in tps:
            # Faust keeps "last offset" (high watermark - 1) here.
            last = confirmed[TopicPartition(tp.topic, tp.partition)] - 1
            if last > destination[tp]:
                self.log.warning(
                    "Changelog %s[%s]: the broker listed its end at %s; a fetch says %s",
                    tp.topic,
                    tp.partition,
                    destination[tp] + 1,
                    last + 1,
                )
                destination[tp] = last


class HardenedTableManager(TableManager):  # type: ignore[misc]  # faust is untyped for mypy here
    """The app's table manager (Faust setting ``TableManager``) with the recovery above."""

    _recovery: Recovery | None = None

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = HardenedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
