"""The restart policy and the supervisor's bookkeeping, with a fake clock and processes."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from alpha_panda.parent_watch import orphaned
from alpha_panda.supervisor import (
    ChildStatus,
    GiveUp,
    Restart,
    RestartPolicy,
    RestartTracker,
    Supervisor,
)

POLICY = RestartPolicy(
    initial_backoff_s=0.5,
    max_backoff_s=4.0,
    multiplier=2.0,
    crash_loop_exits=5,
    crash_loop_window_s=60.0,
    stable_after_s=30.0,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeProcess:
    _next_pid = 100

    def __init__(self) -> None:
        FakeProcess._next_pid += 1
        self.pid = FakeProcess._next_pid
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGTERM:
            self.returncode = 0

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired("fake", timeout or 0)
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


def test_backoff_doubles_and_is_capped() -> None:
    tracker = RestartTracker(POLICY)
    delays = []
    now = 0.0
    for _ in range(4):
        decision = tracker.on_exit(now, started_at=now - 1)
        assert isinstance(decision, Restart)
        delays.append(decision.delay_s)
        assert decision.at == now + decision.delay_s
        now += 20.0  # 4 exits spread over 60 s+: no crash loop
    assert delays == [0.5, 1.0, 2.0, 4.0]
    decision = tracker.on_exit(now, started_at=now - 1)
    assert isinstance(decision, Restart) and decision.delay_s == 4.0  # capped


def test_crash_loop_within_window_gives_up() -> None:
    tracker = RestartTracker(POLICY)
    decisions = [tracker.on_exit(float(t), started_at=float(t) - 0.1) for t in range(5)]
    assert all(isinstance(d, Restart) for d in decisions[:4])
    assert decisions[4] == GiveUp(exits=5, window_s=60.0)


def test_exits_spread_beyond_window_never_give_up() -> None:
    tracker = RestartTracker(POLICY)
    for i in range(20):
        decision = tracker.on_exit(i * 16.0, started_at=i * 16.0 - 1)
        assert isinstance(decision, Restart), i


def test_a_stable_run_resets_the_backoff() -> None:
    tracker = RestartTracker(POLICY)
    tracker.on_exit(0.0, started_at=-1.0)
    tracker.on_exit(1.0, started_at=0.5)
    third = tracker.on_exit(2.0, started_at=1.5)
    assert isinstance(third, Restart) and third.delay_s == 2.0
    after_stable = tracker.on_exit(100.0, started_at=60.0)
    assert isinstance(after_stable, Restart) and after_stable.delay_s == 0.5


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(initial_backoff_s=5, max_backoff_s=1)
    with pytest.raises(ValueError):
        RestartPolicy(crash_loop_exits=0)


def _supervisor() -> tuple[Supervisor, FakeClock, list[FakeProcess]]:
    clock = FakeClock()
    supervisor = Supervisor(POLICY, clock)
    launched: list[FakeProcess] = []

    def launch() -> FakeProcess:
        launched.append(FakeProcess())
        return launched[-1]

    supervisor.add("risk-manager", launch, Path("var/logs/risk-manager.log"))
    return supervisor, clock, launched


def test_supervisor_restarts_after_backoff_and_counts_restarts() -> None:
    supervisor, clock, launched = _supervisor()
    supervisor.start("risk-manager")
    launched[0].returncode = -9
    events = supervisor.poll()
    assert [(e.child, e.what) for e in events] == [("risk-manager", "exited")]
    child = supervisor.children["risk-manager"]
    assert child.status is ChildStatus.BACKING_OFF and child.last_exit == -9
    assert supervisor.poll() == []  # backoff not over
    clock.now += 0.5
    events = supervisor.poll()
    assert [(e.child, e.what) for e in events] == [("risk-manager", "restarted")]
    assert len(launched) == 2 and child.proc is launched[1]
    assert child.status is ChildStatus.RUNNING and child.tracker.restarts == 1
    assert child.describe() == "running (1 restart)"


def test_supervisor_marks_a_crash_looping_child_down_and_leaves_it() -> None:
    supervisor, clock, launched = _supervisor()
    supervisor.start("risk-manager")
    for _ in range(4):
        launched[-1].returncode = 1
        supervisor.poll()
        clock.now += POLICY.max_backoff_s
        supervisor.poll()
    launched[-1].returncode = 1
    events = supervisor.poll()
    assert [(e.child, e.what) for e in events] == [("risk-manager", "down")]
    child = supervisor.children["risk-manager"]
    assert child.status is ChildStatus.DOWN
    assert child.describe() == "DOWN (exit 1; log var/logs/risk-manager.log) (4 restarts)"
    clock.now += 3600
    assert supervisor.poll() == [] and len(launched) == 5  # never started again


def test_stop_terminates_and_is_not_counted_as_a_crash() -> None:
    supervisor, _clock, launched = _supervisor()
    supervisor.start("risk-manager")
    codes = supervisor.stop(["risk-manager"], timeout_s=1)
    assert codes == {"risk-manager": 0}
    assert launched[0].signals == [signal.SIGTERM]
    assert supervisor.children["risk-manager"].status is ChildStatus.STOPPED
    assert supervisor.poll() == []  # a stopped child is not restarted


def test_restart_now_counts_a_restart_but_not_a_crash() -> None:
    supervisor, _clock, launched = _supervisor()
    supervisor.start("risk-manager")
    child = supervisor.restart_now("risk-manager", timeout_s=1)
    assert len(launched) == 2 and child.proc is launched[1]
    assert child.tracker.restarts == 1 and child.status is ChildStatus.RUNNING


def test_a_stop_that_times_out_kills() -> None:
    supervisor, _clock, launched = _supervisor()
    supervisor.start("risk-manager")
    launched[0].send_signal = lambda sig: None  # type: ignore[method-assign]  # ignores SIGTERM
    codes = supervisor.stop(["risk-manager"], timeout_s=0.01)
    assert codes == {"risk-manager": -9}


def test_orphan_detection() -> None:
    assert orphaned(4242, 1)
    assert not orphaned(4242, 4242)


def test_a_launch_that_raises_counts_as_an_exit_and_is_retried() -> None:
    clock = FakeClock()
    supervisor = Supervisor(POLICY, clock)
    attempts: list[int] = []

    def launch() -> FakeProcess:
        attempts.append(1)
        if len(attempts) == 2:
            raise RuntimeError("broker refused")
        return FakeProcess()

    supervisor.add("broker", launch, None)
    supervisor.start("broker")
    child = supervisor.children["broker"]
    assert child.proc is not None
    child.proc.returncode = -9  # type: ignore[misc]  # the fake's field is writable
    supervisor.poll()
    clock.now += 0.5
    events = supervisor.poll()
    assert [(e.what, "broker refused" in e.detail) for e in events] == [("exited", True)]
    assert child.status is ChildStatus.BACKING_OFF
    clock.now += 1.0
    assert [e.what for e in supervisor.poll()] == ["restarted"]
    assert len(attempts) == 3 and child.status is ChildStatus.RUNNING


def test_a_closed_gate_holds_the_restart_without_counting_it() -> None:
    clock = FakeClock()
    supervisor = Supervisor(POLICY, clock)
    launched: list[FakeProcess] = []
    broker_up = {"value": False}

    def launch() -> FakeProcess:
        launched.append(FakeProcess())
        return launched[-1]

    supervisor.add("strategy-runner", launch, None, gate=lambda: broker_up["value"])
    supervisor.start("strategy-runner")
    launched[0].returncode = 1
    supervisor.poll()
    for _ in range(10):  # the broker stays away for a long time
        clock.now += 60
        assert supervisor.poll() == []
    child = supervisor.children["strategy-runner"]
    assert child.status is ChildStatus.BACKING_OFF and len(launched) == 1
    broker_up["value"] = True
    assert [e.what for e in supervisor.poll()] == ["restarted"]
    assert child.status is ChildStatus.RUNNING and child.tracker.restarts == 1
