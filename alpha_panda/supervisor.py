"""Supervision of the pipeline's processes: restart what dies, give up on what crash-loops.

`alpha-panda run` used to be a fuse: one stage exiting stopped every stage and the
embedded broker with it. Here every child process (each stage worker, the embedded
broker) is a :class:`Child` with its own :class:`RestartTracker`:

- an unexpected exit is followed by a restart after a capped exponential backoff
  (``initial_backoff_s`` doubling up to ``max_backoff_s``); a run that lasted
  ``stable_after_s`` resets the backoff, so a stage that dies once a day restarts fast;
- ``crash_loop_exits`` exits within ``crash_loop_window_s`` mark the child *down*: it is
  not restarted again, the summary shows it as down with its last exit status and log,
  and the other children keep running. Restarting forever would hide the fault and
  fill the log; stopping everything would stop the healthy stages too.

The policy (:class:`RestartTracker`) is pure: it is given the time, never reads a
clock, so its tests control time. :class:`Supervisor` applies it to processes, with the
clock injected as well.

A child never outlives its supervisor: :func:`die_with_parent` (a ``preexec_fn``) asks
Linux to send SIGTERM to the child when the supervisor dies, even by SIGKILL; the stage
workers also watch their parent pid (:mod:`alpha_panda.parent_watch`) for platforms
without ``prctl``. Nothing trades unattended.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

Clock = Callable[[], float]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Process(Protocol):
    """The part of :class:`subprocess.Popen` the supervisor uses (fakes in unit tests)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 15.0
    multiplier: float = 2.0
    crash_loop_exits: int = 5
    crash_loop_window_s: float = 60.0
    stable_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("backoff: need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1 or self.crash_loop_exits < 1 or self.crash_loop_window_s <= 0:
            raise ValueError("multiplier >= 1, crash_loop_exits >= 1, crash_loop_window_s > 0")


@dataclass(frozen=True)
class Restart:
    """Start the child again at ``at`` (seconds on the supervisor's clock)."""

    at: float
    delay_s: float


@dataclass(frozen=True)
class GiveUp:
    """The child crash-loops: ``exits`` exits within the policy's window."""

    exits: int
    window_s: float


@dataclass
class RestartTracker:
    """The restart decision of one child. Pure: every method is given the time."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    restarts: int = 0
    _exits: deque[float] = field(default_factory=deque)
    _consecutive: int = 0

    def on_exit(self, now: float, started_at: float) -> Restart | GiveUp:
        """The child exited unexpectedly at ``now`` after starting at ``started_at``."""
        policy = self.policy
        if now - started_at >= policy.stable_after_s:
            self._consecutive = 0
        self._exits.append(now)
        while self._exits and now - self._exits[0] > policy.crash_loop_window_s:
            self._exits.popleft()
        if len(self._exits) >= policy.crash_loop_exits:
            return GiveUp(exits=len(self._exits), window_s=policy.crash_loop_window_s)
        delay = min(
            policy.max_backoff_s,
            policy.initial_backoff_s * policy.multiplier**self._consecutive,
        )
        self._consecutive += 1
        return Restart(at=now + delay, delay_s=delay)

    def on_restarted(self) -> None:
        self.restarts += 1

    def reset(self) -> None:
        """Forget past exits (an operator restarted the child on purpose)."""
        self._exits.clear()
        self._consecutive = 0


class ChildStatus(StrEnum):
    RUNNING = "running"
    BACKING_OFF = "restarting"
    DOWN = "down"
    STOPPED = "stopped"


Launcher = Callable[[], Process]


@dataclass
class Child:
    name: str
    launch: Launcher
    log_path: Path | None
    tracker: RestartTracker
    proc: Process | None = None
    status: ChildStatus = ChildStatus.STOPPED
    started_at: float = 0.0
    restart_at: float = 0.0
    last_exit: int | None = None
    # A restart waits (uncounted) while this says no: a stage is not restarted into a
    # broker that does not answer, where it would only crash-loop itself down.
    gate: Callable[[], bool] | None = None

    def describe(self) -> str:
        """One summary cell: ``running``, ``running (2 restarts)``, ``DOWN (exit 1; log ...)``."""
        restarts = self.tracker.restarts
        suffix = f" ({restarts} restart{'s' if restarts != 1 else ''})" if restarts else ""
        if self.status is ChildStatus.DOWN:
            return f"DOWN (exit {self.last_exit}; log {self.log_path}){suffix}"
        if self.status is ChildStatus.BACKING_OFF:
            return f"restarting (exit {self.last_exit}){suffix}"
        return f"{self.status.value}{suffix}"


@dataclass(frozen=True)
class ChildEvent:
    """Something the supervisor did, for the operator's terminal and log."""

    child: str
    what: str  # "exited", "restarted", "down"
    detail: str


class Supervisor:
    """Starts children, restarts them per :class:`RestartPolicy`, stops them in order."""

    def __init__(self, policy: RestartPolicy | None = None, clock: Clock | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self._clock: Clock = clock or time.monotonic
        self.children: dict[str, Child] = {}

    def add(
        self,
        name: str,
        launch: Launcher,
        log_path: Path | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> Child:
        child = Child(name, launch, log_path, RestartTracker(self.policy), gate=gate)
        self.children[name] = child
        return child

    def start(self, name: str) -> Child:
        child = self.children[name]
        child.proc = child.launch()
        child.status = ChildStatus.RUNNING
        child.started_at = self._clock()
        return child

    def poll(self) -> list[ChildEvent]:
        """Notice exits, decide, and start every child whose backoff has run out."""
        events: list[ChildEvent] = []
        now = self._clock()
        for child in self.children.values():
            if child.status is ChildStatus.RUNNING and child.proc is not None:
                code = child.proc.poll()
                if code is None:
                    continue
                self._exited(child, code, f"exited with {code}", now, events)
            if child.status is ChildStatus.BACKING_OFF and now >= child.restart_at:
                if child.gate is not None and not child.gate():
                    continue
                try:
                    self.start(child.name)
                except Exception as exc:  # e.g. the broker refused: count it as an exit
                    child.proc = None
                    child.started_at = now
                    self._exited(child, None, f"could not start ({exc})", now, events)
                    continue
                child.tracker.on_restarted()
                pid = child.proc.pid if child.proc is not None else "?"
                events.append(ChildEvent(child.name, "restarted", f"pid {pid}"))
        return events

    def _exited(
        self, child: Child, code: int | None, what: str, now: float, events: list[ChildEvent]
    ) -> None:
        child.last_exit = code
        decision = child.tracker.on_exit(now, child.started_at)
        if isinstance(decision, GiveUp):
            child.status = ChildStatus.DOWN
            events.append(
                ChildEvent(
                    child.name,
                    "down",
                    f"{what}, {decision.exits} exits within {decision.window_s:.0f}s: "
                    f"not restarting; see {child.log_path}",
                )
            )
            return
        child.status = ChildStatus.BACKING_OFF
        child.restart_at = decision.at
        events.append(
            ChildEvent(
                child.name,
                "exited",
                f"{what}; restarting in {decision.delay_s:.1f}s (see {child.log_path})",
            )
        )

    def running(self, name: str) -> bool:
        child = self.children[name]
        return (
            child.status is ChildStatus.RUNNING
            and child.proc is not None
            and child.proc.poll() is None
        )

    def restart_now(self, name: str, timeout_s: float) -> Child:
        """Stop and start a child on purpose (not counted as a crash, counted as a restart)."""
        self.stop([name], timeout_s)
        child = self.start(name)
        child.tracker.reset()
        child.tracker.on_restarted()
        return child

    def stop(self, names: Iterable[str], timeout_s: float) -> dict[str, int | None]:
        """SIGTERM ``names`` in the order given, wait up to ``timeout_s`` in all, then SIGKILL."""
        chosen = [self.children[n] for n in names]
        for child in chosen:
            if child.status is not ChildStatus.DOWN:
                child.status = ChildStatus.STOPPED
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for child in chosen:
            if child.proc is None:
                codes[child.name] = child.last_exit
                continue
            try:
                codes[child.name] = child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{child.name} did not stop in {timeout_s:.0f}s; killing it", flush=True)
                child.proc.kill()
                codes[child.name] = child.proc.wait()
            child.last_exit = codes[child.name]
        return codes


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends the child SIGTERM when this process dies.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a no-op, and the stage workers'
    parent-pid watch is what stops them. libc is resolved here, in the parent: the
    function runs between fork and exec, where loading libraries is not safe.
    """
    if not sys.platform.startswith("linux"):
        return lambda: None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
