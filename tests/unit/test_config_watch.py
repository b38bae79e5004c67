"""The config watcher against a real SQLite configuration store, without Faust."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alpha_panda import db
from alpha_panda.config_watch import ConfigWatcher


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[db.SessionFactory]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'config.db'}")
    await db.upgrade(engine)
    yield db.session_factory(engine)
    await engine.dispose()


def watcher_with_log() -> tuple[ConfigWatcher, list[db.RuntimeConfig]]:
    seen: list[db.RuntimeConfig] = []
    ctx: Any = SimpleNamespace(source="test-stage", health_checks={})
    return ConfigWatcher(ctx, seen.append), seen


async def add_demo(sessions: db.SessionFactory, strategy_id: str = "mom-1") -> None:
    await db.add_strategy(
        sessions,
        strategy_id,
        "momentum",
        [(738561, "RELIANCE")],
        {"lookback": 5, "threshold_pct": "0.2", "quantity": 10},
    )


async def test_health_says_not_loaded_until_the_first_refresh(
    sessions: db.SessionFactory,
) -> None:
    watcher, seen = watcher_with_log()
    assert await watcher.health() == (False, "configuration not loaded yet")
    assert not watcher.ready.is_set()
    await add_demo(sessions)
    await watcher.refresh(sessions)
    ok, detail = await watcher.health()
    assert ok and detail == "config load #1: 1 strategies enabled"
    assert watcher.ready.is_set()
    assert [s.strategy_id for s in seen[0].strategies] == ["mom-1"]


async def test_the_stage_is_called_back_only_when_the_configuration_changed(
    sessions: db.SessionFactory,
) -> None:
    watcher, seen = watcher_with_log()
    await add_demo(sessions)
    await watcher.refresh(sessions)
    await watcher.refresh(sessions)
    assert len(seen) == 1 and watcher.loads == 1
    await db.add_halt(sessions, db.HALT_ALL, "exchange outage", "ops")
    await watcher.refresh(sessions)
    assert len(seen) == 2 and seen[-1].halt_all
    await db.set_enabled(sessions, "mom-1", False)
    await watcher.refresh(sessions)
    assert len(seen) == 3 and seen[-1].enabled_strategies == ()


async def test_an_unreachable_store_keeps_the_last_good_configuration(
    sessions: db.SessionFactory, tmp_path: Path
) -> None:
    watcher, seen = watcher_with_log()
    await add_demo(sessions)
    await watcher.refresh(sessions)
    good = watcher.current

    broken = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    try:
        await watcher.refresh(db.session_factory(broken))
    finally:
        await broken.dispose()
    ok, detail = await watcher.health()
    assert not ok and detail.startswith("config refresh failing: ")
    assert watcher.current is good and len(seen) == 1

    await watcher.refresh(sessions)  # the store is back: healthy again, nothing re-applied
    assert (await watcher.health())[0] and len(seen) == 1
