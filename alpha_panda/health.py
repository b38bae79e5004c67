"""`/health` and `/metrics` on every stage worker.

Part of the stage runtime, not of web/: it reports the worker's own state (broker,
assignment, tables, the stage's own checks), and the factory installs it on every stage
without importing the web layer (web/ imports the runtime, not the reverse).

What differs by stage comes from its spec (alpha_panda/stages.py): a stage whose spec
consumes nothing has no assignment to report, and the tables whose recovery "tables"
waits for are the ones its class declared from the spec (tests/unit/test_stages.py).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web as aiohttp_web

from alpha_panda.stages import STAGES

if TYPE_CHECKING:
    from alpha_panda.runtime import StageContext


async def evaluate_health(context: StageContext) -> tuple[bool, dict[str, Any]]:
    """Liveness is answering at all; readiness is every check passing."""
    app = context.app
    checks: dict[str, dict[str, Any]] = {}
    consumes = bool(STAGES[context.stage].inputs)
    consumer = app.consumer if app.started and consumes else None
    try:
        assignment = consumer.assignment() if consumer is not None else set()
    except Exception:  # the consumer may not exist yet during startup
        assignment = set()
    broker_ok = bool(app.started) and not app.should_stop
    broker_detail = "worker running" if app.started else "worker not started"
    if broker_ok and context.broker_probe is not None:
        # Faust keeps "started" while the broker is gone; the cached probe does not.
        broker_ok, broker_detail = context.broker_probe.status()
    checks["broker"] = {"ok": broker_ok, "detail": broker_detail}
    if consumes:
        checks["assignment"] = {
            "ok": len(assignment) > 0,
            "detail": f"{len(assignment)} partitions assigned",
        }
    recovering = bool(app.tables.recovery.in_recovery) if app.started else True
    checks["tables"] = {
        "ok": not recovering and not app.rebalancing,
        "detail": "recovering" if recovering else ("rebalancing" if app.rebalancing else "ready"),
    }
    for name, check in context.health_checks.items():
        try:
            ok, detail = await check()
        except Exception as exc:  # a failing probe is a "down" answer, not a 500
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        checks[name] = {"ok": ok, "detail": detail}
    healthy = all(c["ok"] for c in checks.values())
    return healthy, {
        "status": "ok" if healthy else "unavailable",
        "stage": context.source,
        "pid": os.getpid(),
        "failing": sorted(n for n, c in checks.items() if not c["ok"]),
        "checks": checks,
    }


def register_health_views(context: StageContext) -> None:
    app = context.app

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        healthy, body = await evaluate_health(context)
        return aiohttp_web.Response(
            status=200 if healthy else 503,
            text=json.dumps(body),
            content_type="application/json",
        )

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return aiohttp_web.Response(
            body=context.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )
