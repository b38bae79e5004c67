"""A small circuit breaker for calls to outside systems (Redis now, a broker API later).

Closed: calls go through. After `failure_threshold` consecutive failures it opens and
fails fast for `reset_timeout_s`; then it is half-open and lets one probe through: success
closes it, failure opens it again. The clock is injected so tests control time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(RuntimeError):
    """Raised instead of calling while the breaker is open."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_state_change = on_state_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.last_error: str | None = None

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._failures = 0
        self.last_error = None
        self._set(BreakerState.CLOSED)

    def record_failure(self, error: BaseException | str) -> None:
        self._probe_in_flight = False
        self._failures += 1
        self.last_error = (
            str(error)[:300] if isinstance(error, str) else f"{type(error).__name__}: {error}"[:300]
        )
        if self._state is not BreakerState.CLOSED or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if not self.allow():
            raise CircuitOpenError(f"circuit {self.name!r} is open: {self.last_error}")
        try:
            result = await fn()
        except BaseException as exc:
            # Cancellation (a timeout around the call, a stopping task) counts as a failed
            # probe too; otherwise a cancelled probe would leave the breaker open for good.
            self.record_failure(exc if isinstance(exc, Exception) else "cancelled")
            raise
        self.record_success()
        return result

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_state_change is not None:
                self._on_state_change(self.name, state)
