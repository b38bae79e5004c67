"""A stage worker stops by itself when the process that started it is gone.

`alpha-panda run` starts each worker with ``prctl(PR_SET_PDEATHSIG)`` (see
:mod:`alpha_panda.supervisor`), so on Linux the kernel already sends SIGTERM when the
supervisor dies. This watch is the fallback for platforms without it, and for a
supervisor that died in the instant before ``prctl`` took effect: when the worker's
parent pid changes (it was re-parented to init or a subreaper), the worker sends itself
SIGTERM and shuts down cleanly. An orphaned worker trading unattended is the failure
this prevents; a worker started directly by a service manager keeps its parent (pid 1
or the manager) and is not affected.
"""

from __future__ import annotations

import os
import signal

import faust
import structlog

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 1.0


def orphaned(original_parent: int, current_parent: int) -> bool:
    return original_parent != current_parent


def install_parent_watch(app: faust.App, interval_s: float = CHECK_INTERVAL_S) -> None:
    parent = os.getppid()

    @app.timer(interval_s)  # type: ignore[untyped-decorator]  # faust ships no types
    async def watch_parent() -> None:
        current = os.getppid()
        if orphaned(parent, current):
            log.error("supervisor_gone", parent=parent, now_parent=current, action="stopping")
            os.kill(os.getpid(), signal.SIGTERM)
