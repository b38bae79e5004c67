"""Retry semantics of the stage runtime: a handler failing twice then succeeding is not
dead-lettered; one failing three times is, with attempts=3."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from alpha_panda import runtime
from alpha_panda.metrics import StageMetrics
from alpha_panda.runtime import Route, StageContext
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS


@dataclass
class FakeMessage:
    topic: str = MARKET_TICKS.name
    partition: int = 3
    offset: int = 41
    key: bytes = b"101"
    value: bytes = b"{}"
    timestamp: float = 0.0


@dataclass
class FakeEnvelope:
    id: str = "event-1"


@dataclass
class FakeEvent:
    message: FakeMessage = field(default_factory=FakeMessage)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "RETRY_BACKOFF_S", (0.0, 0.0))


def context() -> tuple[StageContext, list[dict[str, Any]]]:
    letters: list[dict[str, Any]] = []
    ctx = StageContext(
        app=None,  # type: ignore[arg-type]
        settings=load_settings(),
        stage=Stage.STRATEGY_RUNNER,
        metrics=StageMetrics("strategy-runner"),
    )

    async def dead_letter(message: Any, **kw: Any) -> None:
        letters.append({"message": message, **kw})

    ctx.dead_letter = dead_letter  # type: ignore[method-assign]
    return ctx, letters


def failing(times: int) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def handler(envelope: Any, event: Any) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise RuntimeError(f"boom {len(calls)}")

    return handler, calls


async def test_two_failures_then_success_is_not_dead_lettered() -> None:
    ctx, letters = context()
    handler, calls = failing(2)
    await ctx._handle_with_retries(Route(MARKET_TICKS, handler), FakeEnvelope(), FakeEvent())  # type: ignore[arg-type]
    assert len(calls) == 3
    assert letters == []
    labels = ("strategy-runner", MARKET_TICKS.name)
    assert ctx.metrics.processed.labels(*labels)._value.get() == 1
    assert ctx.metrics.failed.labels(*labels, "handler")._value.get() == 2


async def test_three_failures_are_dead_lettered_with_attempts_and_reason() -> None:
    ctx, letters = context()
    handler, calls = failing(3)
    event = FakeEvent()
    await ctx._handle_with_retries(Route(MARKET_TICKS, handler), FakeEnvelope(), event)  # type: ignore[arg-type]
    assert len(calls) == 3
    assert len(letters) == 1
    assert letters[0]["message"] is event.message
    assert letters[0]["attempts"] == 3
    assert letters[0]["error_type"] == "RuntimeError"
    assert letters[0]["error"] == "boom 3"
    assert ctx.metrics.processed.labels("strategy-runner", MARKET_TICKS.name)._value.get() == 0
