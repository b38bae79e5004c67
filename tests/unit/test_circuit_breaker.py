"""The circuit breaker, driven by an injected clock (no sleeping, no wall time)."""

from __future__ import annotations

import asyncio

import pytest

from alpha_panda.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError

THRESHOLD = 3
TIMEOUT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Calls:
    """A fake outside system: counts calls and fails while told to."""

    def __init__(self) -> None:
        self.count = 0
        self.failing = False

    async def __call__(self) -> str:
        self.count += 1
        if self.failing:
            raise ConnectionError(f"down (call {self.count})")
        return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: Clock, changes: list[tuple[str, BreakerState]]) -> CircuitBreaker:
    return CircuitBreaker(
        "redis",
        failure_threshold=THRESHOLD,
        reset_timeout_s=TIMEOUT,
        clock=clock,
        on_state_change=lambda name, state: changes.append((name, state)),
    )


def state(breaker: CircuitBreaker) -> BreakerState:
    # Read through a function: mypy would otherwise narrow the property after one check
    # and call the next check, after the clock moved, unreachable.
    return breaker.state


async def fail_times(breaker: CircuitBreaker, calls: Calls, n: int) -> None:
    calls.failing = True
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await breaker.call(calls)
    calls.failing = False


async def test_closed_breaker_passes_calls_through(breaker: CircuitBreaker) -> None:
    calls = Calls()
    assert state(breaker) is BreakerState.CLOSED
    assert await breaker.call(calls) == "ok"
    assert calls.count == 1
    assert breaker.last_error is None


async def test_opens_after_threshold_consecutive_failures(
    breaker: CircuitBreaker, changes: list[tuple[str, BreakerState]]
) -> None:
    calls = Calls()
    await fail_times(breaker, calls, THRESHOLD - 1)
    assert state(breaker) is BreakerState.CLOSED
    assert changes == []
    await fail_times(breaker, calls, 1)
    assert state(breaker) is BreakerState.OPEN
    assert changes == [("redis", BreakerState.OPEN)]
    assert breaker.last_error == "ConnectionError: down (call 3)"


async def test_fails_fast_while_open(breaker: CircuitBreaker, clock: Clock) -> None:
    calls = Calls()
    await fail_times(breaker, calls, THRESHOLD)
    clock.advance(TIMEOUT - 0.001)
    with pytest.raises(CircuitOpenError, match=r"circuit 'redis' is open: ConnectionError"):
        await breaker.call(calls)
    assert calls.count == THRESHOLD  # the outside system was not touched
    assert state(breaker) is BreakerState.OPEN


async def test_half_open_after_the_reset_timeout(breaker: CircuitBreaker, clock: Clock) -> None:
    await fail_times(breaker, Calls(), THRESHOLD)
    clock.advance(TIMEOUT)
    assert state(breaker) is BreakerState.HALF_OPEN


async def test_half_open_lets_exactly_one_probe_through(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    await fail_times(breaker, Calls(), THRESHOLD)
    clock.advance(TIMEOUT)
    started, release = asyncio.Event(), asyncio.Event()
    probes = 0

    async def slow_probe() -> str:
        nonlocal probes
        probes += 1
        started.set()
        await release.wait()
        return "ok"

    probe = asyncio.create_task(breaker.call(slow_probe))
    await started.wait()  # the probe is in flight until `release`
    calls = Calls()
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await breaker.call(calls)
    assert calls.count == 0 and probes == 1
    release.set()
    assert await probe == "ok"
    assert state(breaker) is BreakerState.CLOSED


async def test_probe_success_closes_and_resets_the_count(
    breaker: CircuitBreaker, clock: Clock, changes: list[tuple[str, BreakerState]]
) -> None:
    calls = Calls()
    await fail_times(breaker, calls, THRESHOLD)
    clock.advance(TIMEOUT)
    assert await breaker.call(calls) == "ok"
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.last_error is None
    assert changes == [("redis", BreakerState.OPEN), ("redis", BreakerState.CLOSED)]
    # A fresh run of failures is needed to open again.
    await fail_times(breaker, calls, THRESHOLD - 1)
    assert state(breaker) is BreakerState.CLOSED


async def test_probe_failure_reopens_for_a_full_timeout(
    breaker: CircuitBreaker, clock: Clock, changes: list[tuple[str, BreakerState]]
) -> None:
    calls = Calls()
    await fail_times(breaker, calls, THRESHOLD)
    clock.advance(TIMEOUT)
    await fail_times(breaker, calls, 1)  # the probe: one failure is enough
    assert state(breaker) is BreakerState.OPEN
    assert breaker.last_error == f"ConnectionError: down (call {THRESHOLD + 1})"
    clock.advance(TIMEOUT - 0.001)  # the timeout restarts at the failed probe
    assert state(breaker) is BreakerState.OPEN
    clock.advance(0.001)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert await breaker.call(calls) == "ok"
    assert state(breaker) is BreakerState.CLOSED
    # OPEN -> (half-open, not reported) -> OPEN is no change of the stored state.
    assert changes == [("redis", BreakerState.OPEN), ("redis", BreakerState.CLOSED)]


async def test_success_resets_the_consecutive_count(breaker: CircuitBreaker) -> None:
    calls = Calls()
    for _ in range(3):
        await fail_times(breaker, calls, THRESHOLD - 1)
        assert await breaker.call(calls) == "ok"
    assert state(breaker) is BreakerState.CLOSED


async def test_callback_sees_each_transition_once(
    breaker: CircuitBreaker, clock: Clock, changes: list[tuple[str, BreakerState]]
) -> None:
    calls = Calls()
    for _ in range(2):
        await fail_times(breaker, calls, THRESHOLD)
        clock.advance(TIMEOUT)
        await breaker.call(calls)
    assert changes == [
        ("redis", BreakerState.OPEN),
        ("redis", BreakerState.CLOSED),
        ("redis", BreakerState.OPEN),
        ("redis", BreakerState.CLOSED),
    ]


def test_manual_allow_and_record(clock: Clock) -> None:
    breaker = CircuitBreaker("api", failure_threshold=1, reset_timeout_s=TIMEOUT, clock=clock)
    assert breaker.allow()
    breaker.record_failure("timed out " + "x" * 400)
    assert breaker.last_error is not None and len(breaker.last_error) == 300
    assert not breaker.allow()
    clock.advance(TIMEOUT)
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.record_success()
    assert breaker.allow() and breaker.allow()


def test_no_callback_is_fine(clock: Clock) -> None:
    breaker = CircuitBreaker("quiet", failure_threshold=1, clock=clock)
    breaker.record_failure(RuntimeError("x"))
    assert state(breaker) is BreakerState.OPEN


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="failure_threshold must be >= 1"):
        CircuitBreaker("bad", failure_threshold=0)


async def test_a_cancelled_probe_does_not_wedge_the_breaker(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    await fail_times(breaker, Calls(), THRESHOLD)
    clock.advance(TIMEOUT)

    async def hangs() -> str:
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await breaker.call(hangs)
    # The cancelled probe counts as a failed one: open again for a full timeout...
    assert state(breaker) is BreakerState.OPEN
    assert breaker.last_error == "cancelled"
    with pytest.raises(CircuitOpenError):
        await breaker.call(Calls())
    clock.advance(TIMEOUT)
    assert await breaker.call(Calls()) == "ok"  # ...then a new probe is let through
