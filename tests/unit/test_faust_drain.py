"""The per-record delivery workaround (alpha_panda/workarounds/faust_drain.py).

The first test is the proof that the workaround is still needed: mode's ``wait_first``,
which Faust's ``Consumer._drain_messages`` awaits for every record, still makes four
tasks per call. The others prove that the direct delivery keeps the race's meaning.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mode import Service
from mode.utils.locks import Event

from alpha_panda.settings import Stage, load_settings
from alpha_panda.workarounds import faust_drain
from alpha_panda.workarounds.faust_drain import DirectDrainConsumer, deliver


@contextmanager
def counting_tasks() -> Iterator[list[Any]]:
    loop = asyncio.get_running_loop()
    created: list[Any] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        yield created
    finally:
        loop.set_task_factory(previous)


async def no_wait() -> None:
    return None


class Svc(Service):  # type: ignore[misc]  # mode is untyped
    pass


async def test_stock_delivery_still_makes_four_tasks_per_record() -> None:
    svc, suspend = Svc(), Event()
    delivered: list[int] = []

    async def callback(message: int) -> None:
        delivered.append(message)

    with counting_tasks() as created:
        await svc.wait_first(callback(1), suspend.wait())
    assert delivered == [1]
    assert len(created) == 4, "mode's wait_first changed: re-measure the workaround"


async def test_direct_delivery_of_a_record_that_does_not_wait_makes_no_task() -> None:
    svc, suspend = Svc(), Event()
    delivered: list[int] = []

    async def callback(message: int) -> None:
        await no_wait()  # an await that does not suspend, as a put on a queue with room
        delivered.append(message)

    with counting_tasks() as created:
        for i in range(100):
            await deliver(svc.wait_first, callback, i, suspend)
    assert delivered == list(range(100))
    assert created == []


async def test_a_callback_that_waits_is_finished_with_its_values_and_errors() -> None:
    svc, suspend = Svc(), Event()
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def callback(message: int) -> None:
        seen.append(f"got {await gate}")
        await asyncio.sleep(0)  # a bare yield, as Faust's flow control makes
        seen.append("done")

    task = asyncio.ensure_future(deliver(svc.wait_first, callback, 1, suspend))
    await asyncio.sleep(0.01)
    assert seen == [] and not task.done()
    gate.set_result("room")
    await task
    assert seen == ["got room", "done"]

    failing: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def raising(message: int) -> None:
        await failing

    task = asyncio.ensure_future(deliver(svc.wait_first, raising, 2, suspend))
    await asyncio.sleep(0.01)
    failing.set_exception(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        await task


async def test_a_waiting_callback_is_cancelled_when_the_flow_is_suspended() -> None:
    svc, suspend = Svc(), Event()
    blocked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cancelled: list[bool] = []

    async def callback(message: int) -> None:
        try:
            await blocked
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = asyncio.ensure_future(deliver(svc.wait_first, callback, 1, suspend))
    await asyncio.sleep(0.01)
    suspend.set()  # a rebalance
    await asyncio.wait_for(task, timeout=1)  # returns, as Faust's race does
    assert cancelled == [True]


async def test_when_the_flow_is_already_suspended_faust_own_race_runs() -> None:
    svc, suspend = Svc(), Event()
    suspend.set()
    calls: list[int] = []

    async def callback(message: int) -> None:
        calls.append(message)

    with counting_tasks() as created:
        await deliver(svc.wait_first, callback, 1, suspend)
    assert len(created) == 4


def test_stage_apps_use_the_direct_consumer_and_a_wrong_version_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alpha_panda.factory import create_app

    app = create_app(load_settings(redis={"enabled": False}), Stage.RISK_MANAGER)
    assert app.transport.Consumer is DirectDrainConsumer
    monkeypatch.setitem(faust_drain.CHECKED_VERSIONS, "faust-streaming", "0.0.1")
    with pytest.raises(faust_drain.WorkaroundVersionError, match="faust-streaming"):
        faust_drain._check_versions()
