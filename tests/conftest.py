"""Shared fixtures: the embedded broker, PostgreSQL and Redis on loopback.

PostgreSQL and Redis tests use the servers at 127.0.0.1:5432 and :6379. When ``CI=true``
their absence fails the run; elsewhere those tests skip with the reason.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from alpha_panda.broker import EmbeddedBroker

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_DSN = os.environ.get(
    "ALPHA_PANDA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("ALPHA_PANDA_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


@contextmanager
def running_broker() -> Iterator[EmbeddedBroker]:
    """An embedded Tansu broker on a free loopback port, stopped on the way out."""
    embedded = EmbeddedBroker.on_free_port()
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded broker for the whole session."""
    with running_broker() as embedded:
        yield embedded


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests on the shared broker never see each other's data."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    _require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    name = f"alpha_panda_test_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 15, flushed before and after the test."""
    _require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    try:
        yield REDIS_TEST_URL
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def fresh_broker(tmp_path: object) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own: stage topics and consumer groups have fixed names."""
    with running_broker() as embedded:
        yield embedded


@pytest.fixture
def second_broker() -> Iterator[EmbeddedBroker]:
    """Another broker of the test's own, beside ``fresh_broker``."""
    with running_broker() as embedded:
        yield embedded
