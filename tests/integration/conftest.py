"""Fixtures of the configuration store's tests: each runs on PostgreSQL (the production
backend, via ``pg_url``) and on a SQLite file in tmp_path (the embedded default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_panda.db import SessionFactory, create_engine, session_factory, upgrade


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path}/store/alpha_panda.db"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sessions(engine: AsyncEngine) -> SessionFactory:
    await upgrade(engine)
    return session_factory(engine)
