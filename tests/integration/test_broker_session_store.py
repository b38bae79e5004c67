"""The token store and its watcher on PostgreSQL and SQLite: replace, read, expire, notice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alpha_panda.broker_session import (
    TokenWatcher,
    clear_session,
    load_session,
    next_token_expiry,
    store_session,
)
from alpha_panda.db import ConfigValidationError, SessionFactory

pytestmark = pytest.mark.integration

LOGIN = datetime(2026, 3, 2, 3, 15, tzinfo=UTC)  # 08:45 IST


async def test_store_replaces_the_one_row_and_reads_back(sessions: SessionFactory) -> None:
    assert await load_session(sessions) is None
    await store_session(
        sessions, user_id="AB1234", user_name="A", access_token="tok-1", login_time=LOGIN
    )
    later = LOGIN + timedelta(days=1)
    await store_session(
        sessions, user_id="AB1234", user_name="A", access_token="tok-2", login_time=later
    )
    record = await load_session(sessions)
    assert record is not None
    assert record.access_token.get_secret_value() == "tok-2"
    assert record.login_time == later
    assert record.expires_at == next_token_expiry(later) == datetime(2026, 3, 4, 0, 30, tzinfo=UTC)
    assert await clear_session(sessions) is True
    assert await load_session(sessions) is None
    assert await clear_session(sessions) is False


async def test_an_empty_token_is_refused(sessions: SessionFactory) -> None:
    with pytest.raises(ConfigValidationError, match="access_token"):
        await store_session(sessions, user_id="X", user_name="", access_token="", login_time=LOGIN)


async def test_the_watcher_notices_a_new_token_and_stops_handing_out_an_expired_one(
    sessions: SessionFactory,
) -> None:
    now = [LOGIN]
    watcher = TokenWatcher(lambda: sessions, poll_s=0.01, now=lambda: now[0])
    assert await watcher.refresh() is False
    assert watcher.access_token() is None
    assert "alpha-panda zerodha login" in watcher.describe()

    await store_session(
        sessions, user_id="AB1234", user_name="", access_token="t1", login_time=LOGIN
    )
    assert await watcher.refresh() is True
    assert watcher.changed.is_set()
    assert watcher.access_token() == "t1"
    assert "t1" not in watcher.describe() and "AB1234" in watcher.describe()
    watcher.changed.clear()
    assert await watcher.refresh() is False  # nothing new
    assert not watcher.changed.is_set()

    assert not watcher.expired()
    now[0] = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)  # 06:00 IST next day
    assert watcher.access_token() is None
    assert watcher.expired()
    assert "expired" in watcher.describe()

    await store_session(
        sessions, user_id="AB1234", user_name="", access_token="t2", login_time=now[0]
    )
    assert await watcher.refresh() is True
    assert watcher.access_token() == "t2"


async def test_the_watcher_keeps_the_last_token_when_the_database_fails(
    sessions: SessionFactory,
) -> None:
    await store_session(
        sessions, user_id="AB1234", user_name="", access_token="t1", login_time=LOGIN
    )
    broken = [False]

    def factory() -> SessionFactory:
        if broken[0]:
            raise ConnectionError("database down")
        return sessions

    watcher = TokenWatcher(factory, poll_s=0.01, now=lambda: LOGIN)
    await watcher.refresh()
    broken[0] = True
    assert await watcher.refresh() is False
    assert watcher.access_token() == "t1"
    assert watcher.last_error is not None and "database down" in watcher.last_error
