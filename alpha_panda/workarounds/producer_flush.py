"""Faust's producer flush gives up after 0.1 s with table writes still queued; ours waits.

**Defect** (faust-streaming 0.15.3): every table write (``table[key] = value``, and the
write-behind tables' flush) goes to its changelog through ``Producer.send_soon``: a queue
(``ProducerBuffer``) that one background task hands to aiokafka, one record at a time.
Before it commits offsets the consumer awaits ``Producer.flush()``, whose first step,
``ProducerBuffer.flush``, waits at most 0.1 s for the next record to be handed over and
then *returns*, records still queued (and it never counts the record being handed over).
aiokafka's flush, the second step, covers only what reached aiokafka. So the commit can
move past source records whose changelog writes are still in Faust's queue: a worker
killed then loses those writes for good (its offsets say done, its changelog never got
them) and the partition's next owner recovers a table behind its committed offsets.
Handing a record over takes longer than 0.1 s whenever aiokafka must wait for a full
batch to go out before it takes the next, which on a loaded machine is often (a portfolio
manager under the scale-out test's load logged Faust's "producer flush took 2.4 s" for
about 100 queued records). It showed in ``tests/integration/test_scale_out.py`` as a
portfolio table behind the fills after every commit had caught up.

**Workaround**: :class:`DrainingBuffer` replaces the producer's buffer (installed per app
by :func:`install`, through the transport's ``Producer`` class, as
:mod:`alpha_panda.workarounds.faust_drain` does for the consumer). Its ``flush`` returns
only once the queue is empty and no record is being handed over; a buffer that no longer
runs gets Faust's own flush (which refuses while records are queued). ``flush_atmost``
(Faust's back-pressure when the queue is long) is unchanged. The commit, and the
write-behind flush on revocation (:mod:`alpha_panda.write_behind`), then wait for every
write made before them.

**Versions checked**: faust-streaming 0.15.3: the buffer's 0.1 s give-up, its hand-over
loop (queue, ``_send_pending``, ``message_sent``), the producer building its buffer in
``__init__`` and flushing it first. Checked at import against the source.

**Proof it is still needed**: ``tests/unit/test_producer_flush.py`` runs Faust's own
buffer with a slow hand-over (its flush returns with records queued) against this one,
and checks that every stage app's producer gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import Producer as FaustProducer
from faust.transport.producer import ProducerBuffer

from alpha_panda.workarounds._versions import require_source, require_versions

CHECKED_VERSIONS = {"faust-streaming": "0.15.3"}

# How often a waiting flush looks again at whether the buffer still runs: a hand-over
# that crashed the buffer's task never signals.
_RECHECK_S = 1.0


def _check() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    require_source(__name__, ProducerBuffer.flush_atmost, "timeout=0.1", "return flushed_messages")
    require_source(
        __name__,
        ProducerBuffer._handle_pending.fun,  # a mode ServiceTask around the coroutine
        "msg = await get_pending()",
        "await send_pending(msg)",
        "self.message_sent.set()",
    )
    require_source(__name__, FaustProducer.__init__, "self.buffer = ProducerBuffer(")
    require_source(__name__, faust_aiokafka.Producer.flush, "await self.buffer.flush()")


_check()


class DrainingBuffer(ProducerBuffer):  # type: ignore[misc]  # faust is untyped
    """Faust's producer buffer whose ``flush`` waits until every record is handed over."""

    _handing_over = 0

    async def _send_pending(self, fut: Any) -> None:
        self._handing_over += 1
        try:
            await super()._send_pending(fut)
        finally:
            self._handing_over -= 1

    async def flush(self) -> None:
        while self.size or self._handing_over:
            if self.state != "running":
                await super().flush()  # stopping: Faust's own answer (it refuses if queued)
                return
            self.message_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=_RECHECK_S)


class DrainingProducer(faust_aiokafka.Producer):  # type: ignore[misc]  # faust is untyped
    """Faust's aiokafka producer with :class:`DrainingBuffer` as its buffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = DrainingBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app


def install(app: Any) -> None:
    """Make ``app`` (a faust.App, before its producer is built) use :class:`DrainingProducer`.

    The buffer's hand-over counting assumes Faust's in-loop producer, not its threaded one.
    """
    if app.conf.producer_threaded:
        raise RuntimeError("producer_flush: Faust's threaded producer is not covered")
    app.transport.Producer = DrainingProducer
