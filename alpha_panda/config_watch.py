"""Keeps a stage's view of the configuration database fresh without a query per message.

A background task re-reads the whole runtime configuration every
``ALPHA_PANDA_DATABASE_CONFIG_REFRESH_S`` seconds and calls the stage back when it changed.
When the database is unreachable the stage keeps its last good configuration and
``/health`` names the database as failing.

On its first successful load it records which database the pipeline uses
(alpha_panda/pipeline_record.py), so a CLI run with another configuration refuses to use
a new, empty database instead of writing where nothing reads. ``after_apply`` (the risk
manager's halt acknowledgement) runs after every successful load, once the stage holds
that configuration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from alpha_panda import db
from alpha_panda.pipeline_record import write_record
from alpha_panda.runtime import StageContext

AfterApply = Callable[[db.RuntimeConfig, db.SessionFactory], Awaitable[None]]

log = structlog.get_logger(__name__)


class ConfigWatcher:
    def __init__(
        self,
        ctx: StageContext,
        on_change: Callable[[db.RuntimeConfig], None],
        *,
        after_apply: AfterApply | None = None,
    ) -> None:
        self._ctx = ctx
        self._on_change = on_change
        self._after_apply = after_apply
        self.current: db.RuntimeConfig | None = None
        self.ready = asyncio.Event()
        self.loads = 0
        self._last_error: str | None = None
        self._last_ok: float | None = None

    def install(self) -> None:
        ctx = self._ctx
        ctx.health_checks["database"] = self.health
        ctx.app.task(self._run)

    async def health(self) -> tuple[bool, str]:
        if self._last_error is not None:
            return False, f"config refresh failing: {self._last_error}"
        if self.current is None:
            return False, "configuration not loaded yet"
        enabled = len(self.current.enabled_strategies)
        return True, f"config load #{self.loads}: {enabled} strategies enabled"

    async def _run(self) -> None:
        settings = self._ctx.settings
        engine = db.create_engine(settings.database.url)
        sessions = db.session_factory(engine)
        try:
            while not self._ctx.app.should_stop:
                await self.refresh(sessions)
                await asyncio.sleep(settings.database.config_refresh_s)
        finally:
            await engine.dispose()

    async def refresh(self, sessions: db.SessionFactory) -> None:
        try:
            config = await db.load_runtime_config(sessions)
        except Exception as exc:  # keep the last good config; report, retry next round
            self._last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("config_refresh_failed", error=self._last_error, stage=self._ctx.source)
            return
        self._last_error = None
        self._last_ok = time.time()
        if config != self.current:
            self._on_change(config)
            self.current = config
            self.loads += 1
            log.info(
                "config_loaded",
                stage=self._ctx.source,
                strategies=len(config.strategies),
                enabled=len(config.enabled_strategies),
                halt_all=config.halt_all,
                halted=sorted(config.halted_strategies),
            )
        if not self.ready.is_set():
            try:
                write_record(self._ctx.settings, self._ctx.source)
            except OSError as exc:
                log.warning("pipeline_record_failed", error=str(exc), stage=self._ctx.source)
        if self._after_apply is not None:
            try:
                await self._after_apply(config, sessions)
            except Exception as exc:  # retried after the next load
                log.warning(
                    "config_after_apply_failed",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    stage=self._ctx.source,
                )
        self.ready.set()
