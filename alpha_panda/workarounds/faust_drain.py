"""Faust's consumer hands each record to the streams through four tasks; ours, without.

**Defect** (faust-streaming 0.15.3, with mode-streaming 0.7.1): ``Consumer._drain_messages``
delivers every fetched record with
``await self.wait_first(callback(message), self.suspend_flow.wait())``. mode's
``wait_first`` wraps the callback, the suspension event, and the service's stopped and
crashed events in four tasks, waits for the first, and cancels three: about 35 µs of a
bare agent's ~65 µs per event on this machine. The race exists for one case: a callback
that blocks (Faust's flow control is suspended, the producer buffer is over its limit, or
a stream queue is full) must give way when a rebalance suspends the flow.

**Workaround**: :class:`DirectDrainConsumer` runs the same loop, line for line, except
that the callback's coroutine is first stepped directly. A callback that finishes
without suspending (the normal case: it puts the event on a queue with room) costs no
task at all. One that suspends is finished exactly as Faust would have run it: the
rest of it is raced against ``suspend_flow`` by the same ``wait_first``, so a rebalance
still cancels it. When the flow is already suspended, Faust's own call is made. Read
offsets, gap acking (``_add_gap``), commits every ``commit_every`` records and the
``yield_every`` yield are untouched.

**Versions checked**: faust-streaming 0.15.3, mode-streaming 0.7.1. Importing this module
with another version fails, as does a stock ``_drain_messages`` that no longer makes the
call replaced here: re-measure and re-check before widening :data:`CHECKED_VERSIONS`.

**Proof it is still needed**: ``tests/unit/test_faust_drain.py`` counts the tasks the
stock method creates per record (four) against this one (none), and checks that a
callback blocked when the flow is suspended is cancelled as before. The SIGKILL restart
tests (``tests/integration/test_restarts.py``) and the scale-out test run on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service

from alpha_panda.workarounds._versions import (
    WorkaroundVersionError,
    require_source,
    require_versions,
)

CHECKED_VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}
_STOCK_CALL = "callback(message), self.suspend_flow.wait()"

__all__ = [
    "CHECKED_VERSIONS",
    "DirectDrainConsumer",
    "WorkaroundVersionError",
    "deliver",
    "install",
]


def _check_versions() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    require_source(__name__, AIOKafkaConsumer._drain_messages, _STOCK_CALL)


_check_versions()


class _Rest:
    """The remainder of a coroutine that has already been stepped once.

    Awaiting it hands the coroutine's pending future to whoever awaits (the task made by
    ``wait_first``) and continues it from there, as if that task had run it from the
    start: values and exceptions, including a cancellation, go into the coroutine.
    """

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # every exception, a cancellation too, goes in
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _Rest(coro, pending)


WaitFirst = Callable[..., Awaitable[Any]]


async def deliver(
    wait_first: WaitFirst,
    callback: Callable[[Any], Coroutine[Any, Any, Any]],
    message: Any,
    suspend_flow: Any,  # mode.utils.locks.Event: is_set() and wait(), as asyncio.Event
) -> None:
    """``await wait_first(callback(message), suspend_flow.wait())``, without its tasks
    when the callback finishes without suspending (see the module docstring)."""
    if suspend_flow.is_set():  # as Faust: the race decides at once
        await wait_first(callback(message), suspend_flow.wait())
        return
    coro = callback(message)
    try:
        pending = coro.send(None)
    except StopIteration:
        return  # delivered without suspending: no task needed
    # It must wait for something: finish it in a task raced against suspension.
    await wait_first(_finish(coro, pending), suspend_flow.wait())


class DirectDrainConsumer(AIOKafkaConsumer):  # type: ignore[misc]  # faust is untyped
    """Faust's aiokafka consumer with the per-record delivery described above."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - see tests
        # faust-streaming 0.15.3's Consumer._drain_messages, with the one call replaced
        # by :func:`deliver`. Keep it line for line with the stock method.
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        callback, wait_first, suspend_flow = self.callback, self.wait_first, self.suspend_flow

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:  # type: ignore[has-type]
                                self._n_acked = 0
                                await self.commit()
                            await deliver(wait_first, callback, message, suspend_flow)
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


def install(app: Any) -> None:
    """Make ``app`` (a faust.App, before its worker starts) use :class:`DirectDrainConsumer`.

    Per app, not process-wide: the transport's ``Consumer`` class is set on this app's
    transport instance (building the transport does no I/O).
    """
    app.transport.Consumer = DirectDrainConsumer
