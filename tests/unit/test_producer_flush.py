"""A producer flush (what Faust awaits before it commits offsets) waits for every queued
table write (alpha_panda/workarounds/producer_flush.py).

The hand-over of each record to aiokafka is made slow here, as it is on a loaded machine
when aiokafka waits for a full batch to go out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.transport.producer import ProducerBuffer

from alpha_panda.factory import create_app
from alpha_panda.settings import Stage, load_settings
from alpha_panda.workarounds.producer_flush import DrainingBuffer, DrainingProducer

HAND_OVER_S = 0.15  # longer than the 0.1 s Faust's flush waits for one record
RECORDS = 3


class SlowChannel:
    """Stands in for the topic a queued record is published to (``publish_message`` hands
    it to aiokafka), taking longer than Faust's flush waits for one record."""

    def __init__(self) -> None:
        self.handed: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(HAND_OVER_S)
        self.handed.append(fut.number)


def queued_record(channel: SlowChannel, number: int) -> Any:
    """What ``send_soon`` queues (a FutureMessage), as far as the buffer looks at it."""
    return SimpleNamespace(number=number, message=SimpleNamespace(channel=channel))


@pytest.fixture(params=[ProducerBuffer, DrainingBuffer], ids=["faust", "draining"])
async def buffer(request: pytest.FixtureRequest) -> AsyncIterator[ProducerBuffer]:
    made = request.param()
    made.app = faust.App("producer-flush-test", broker="memory://")
    await made.start()
    try:
        yield made
    finally:
        while made.size:  # Faust's buffer refuses to stop with records queued
            await made.flush()
        await made.stop()


async def test_flush_returns_only_once_every_queued_record_is_handed_over(
    buffer: ProducerBuffer,
) -> None:
    channel = SlowChannel()
    for number in range(RECORDS):
        buffer.put(queued_record(channel, number))
    await buffer.flush()
    if type(buffer) is ProducerBuffer:
        # The defect, still there: a commit after this flush would run ahead of the
        # writes still queued (this fails once Faust's flush waits: drop the workaround).
        assert channel.handed != list(range(RECORDS))
        assert buffer.size > 0
    else:
        assert channel.handed == list(range(RECORDS))
        assert buffer.size == 0


def test_every_stage_app_builds_the_draining_producer() -> None:
    for stage in Stage:
        app = create_app(load_settings(), stage)
        assert isinstance(app.producer, DrainingProducer), stage
        assert isinstance(app.producer.buffer, DrainingBuffer), stage
