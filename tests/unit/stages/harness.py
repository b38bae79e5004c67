"""One stage's Faust app driven through ``agent.test_context()``: no broker, no database.

The stage is built by the real factory (``create_app``) with its in-memory table store,
so its handlers, tables and guards are the production ones. Only the edges are replaced:
- records are delivered straight into the agent's channel at a chosen topic, partition
  and offset (a redelivery is the same offset again);
- what the stage sends (``send``, ``send_acked``, ``forward``, the DLQ) is captured
  instead of produced;
- the configuration database is a fixed :class:`RuntimeConfig`; the Redis mirror is off.
Each :meth:`StageHarness.deliver` returns once the stage has handled that record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from faust.types import AgentT
from faust.types.tuples import Message
from pydantic import BaseModel

from alpha_panda import db
from alpha_panda.factory import create_app
from alpha_panda.runtime import StageContext
from alpha_panda.settings import RedisSettings, Stage, load_settings
from alpha_panda.topics import OutgoingRecord, TopicSpec
from alpha_panda.typed_table import TypedTable
from models.codec import decode
from models.envelope import EventEnvelope

SOURCE = "test"


class StageHarness:
    def __init__(self, ctx: StageContext, agent: AgentT) -> None:
        self.ctx = ctx
        self.agent = agent
        self.sent: list[OutgoingRecord] = []
        self.dead_lettered: list[tuple[Message, str]] = []
        self._handled = 0
        self._config: list[db.RuntimeConfig] = []
        self._progress = asyncio.Condition()

    def sent_to(self, spec: TopicSpec) -> list[EventEnvelope[Any]]:
        """The envelopes sent to ``spec``, decoded as a consumer would."""
        return [
            decode(r.value, topic=spec.name, expect=spec.event_type)
            for r in self.sent
            if r.topic == spec.name
        ]

    async def reconfigure(self, config: db.RuntimeConfig) -> None:
        """The database now holds ``config``; the stage's watcher reads it at once (as at
        its next refresh), e.g. an operator's ``alpha-panda halt``."""
        self._config[0] = config
        database = self.ctx.health_checks["database"]
        await database.__self__.refresh(None)  # type: ignore[attr-defined]

    def table(self, name: str) -> TypedTable[Any]:
        """The stage's typed view of table ``name`` (alpha_panda/typed_table.py)."""
        return self.ctx.tables[name]

    async def deliver(
        self,
        spec: TopicSpec,
        payload: BaseModel | bytes,
        *,
        offset: int,
        partition: int = 0,
        event_id: str | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """One record of ``spec`` at ``offset``; returns once the stage has handled it."""
        if isinstance(payload, BaseModel):
            record = spec.record(
                payload, event_id=event_id or f"evt-{offset}", ts=_ts(payload), source=SOURCE
            )
            value, key = record.value, key if key is not None else record.key
        else:
            value = payload
        message = Message(
            topic=spec.name,
            partition=partition,
            offset=offset,
            timestamp=time.time(),
            timestamp_type=0,
            headers=headers,
            key=key,
            value=value,
            checksum=b"",
            serialized_key_size=0,
            serialized_value_size=0,
            generation_id=self.ctx.app.consumer_generation_id,
        )
        channel = self.agent.stream().channel
        async with self._progress:
            target = self._handled + 1
            await channel.put(await channel.decode(message))
            await asyncio.wait_for(
                self._progress.wait_for(lambda: self._handled >= target), timeout=10
            )

    # Installed on the stage context in place of the producer-facing methods.
    async def _send(self, record: OutgoingRecord) -> None:
        self.sent.append(record)

    async def _send_acked(self, records: list[OutgoingRecord]) -> None:
        self.sent.extend(records)

    async def _dead_letter(
        self, message: Message, *, error_type: str, error: str, attempts: int
    ) -> None:
        self.dead_lettered.append((message, error_type))

    def _install(self) -> None:
        ctx = self.ctx
        original = ctx._handle_with_retries

        async def counted(route: Any, envelope: Any, event: Any) -> None:
            try:
                await original(route, envelope, event)
            finally:
                async with self._progress:
                    self._handled += 1
                    self._progress.notify_all()

        ctx._handle_with_retries = counted  # type: ignore[method-assign]
        ctx.send = self._send  # type: ignore[method-assign]
        ctx.send_acked = self._send_acked  # type: ignore[method-assign]
        ctx.dead_letter = self._dead_letter  # type: ignore[method-assign]


def _ts(payload: BaseModel) -> Any:
    for name in ("exchange_ts", "signal_ts", "validated_ts", "rejected_ts", "filled_ts"):
        if hasattr(payload, name):
            return getattr(payload, name)
    raise TypeError(f"no event time on {type(payload).__name__}")


@asynccontextmanager
async def running_stage(
    stage: Stage,
    agent_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    config: db.RuntimeConfig,
    **settings: Any,
) -> AsyncIterator[StageHarness]:
    """``stage`` built by the factory, its agent ``agent_name`` in a test context, the
    configuration ``config`` loaded (as the config watcher would from the database)."""

    current = [config]

    async def load(_sessions: object) -> db.RuntimeConfig:
        return current[0]

    monkeypatch.setattr(db, "load_runtime_config", load)
    # The Redis mirror is the outside world here: its copy is tested on its own.
    settings.setdefault("redis", RedisSettings(enabled=False))
    app = create_app(load_settings(data_dir=tmp_path, **settings), stage)
    ctx: StageContext = app.alpha_panda  # type: ignore[attr-defined]
    database = ctx.health_checks.get("database")
    agent = next(a for a in app.agents.values() if a.name.endswith(agent_name))
    async with agent.test_context() as wrapped:
        harness = StageHarness(ctx, wrapped)
        harness._config = current
        harness._install()
        if database is not None:  # the stage waits for its first configuration
            watcher = database.__self__  # type: ignore[attr-defined]
            await watcher.refresh(None)
        yield harness
