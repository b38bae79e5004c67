"""The broker token store: Kite's daily access token in the configuration database.

`alpha-panda zerodha login` (or the read API's callback route) exchanges a request token
for an access token and calls :func:`store_session`. The feed and the trader never read
the token per message: a :class:`TokenWatcher` re-reads the row every
``zerodha.token_poll_s`` seconds and hands out the latest one, so a new login reaches
running components without a restart, as strategy changes do (alpha_panda/config_watch.py).

Kite's access token dies at about 06:00 IST the next day; the expiry is stored beside it
and a token past it is no longer handed out. The token never leaves as text: the record
holds it as ``SecretStr``, and nothing here logs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import structlog
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_panda import db
from models.db import BrokerSession

log = structlog.get_logger(__name__)

ZERODHA = "zerodha"
# India keeps no daylight saving time: a fixed offset is exact (and needs no tz database).
IST = timezone(timedelta(hours=5, minutes=30), "IST")
TOKEN_EXPIRY_HOUR_IST = 6


def next_token_expiry(login_time: datetime) -> datetime:
    """The first 06:00 IST strictly after ``login_time``, in UTC.

    Kite expires every access token at about 06:00 IST the next day. A login between
    midnight and 06:00 IST therefore expires the same morning.
    """
    if login_time.tzinfo is None:
        raise ValueError("login_time must be timezone-aware")
    local = login_time.astimezone(IST)
    expiry = local.replace(hour=TOKEN_EXPIRY_HOUR_IST, minute=0, second=0, microsecond=0)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry.astimezone(UTC)


class BrokerSessionRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str
    user_id: str
    user_name: str
    access_token: SecretStr
    login_time: datetime
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        return now < self.expires_at

    def public(self, now: datetime) -> dict[str, object]:
        """What the CLI and the API may show: everything but the token."""
        return {
            "broker": self.broker,
            "user_id": self.user_id,
            "user_name": self.user_name,
            "login_time": self.login_time.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "expires_at_ist": self.expires_at.astimezone(IST).isoformat(),
            "valid": self.valid_at(now),
        }


def _record(row: BrokerSession) -> BrokerSessionRecord:
    return BrokerSessionRecord(
        broker=row.broker,
        user_id=row.user_id,
        user_name=row.user_name,
        access_token=SecretStr(row.access_token),
        login_time=row.login_time,
        expires_at=row.expires_at,
    )


async def store_session(
    sessions: db.SessionFactory,
    *,
    user_id: str,
    user_name: str,
    access_token: str,
    login_time: datetime,
    broker: str = ZERODHA,
) -> BrokerSessionRecord:
    """Replace the broker's stored session; the expiry is the next 06:00 IST."""
    if not access_token:
        raise db.ConfigValidationError("access_token", "must not be empty")
    expires_at = next_token_expiry(login_time)
    async with sessions() as session, session.begin():
        row = await session.get(BrokerSession, broker)
        if row is None:
            row = BrokerSession(broker=broker)
            session.add(row)
        row.user_id = user_id
        row.user_name = user_name
        row.access_token = access_token
        row.login_time = login_time
        row.expires_at = expires_at
    log.info(
        "broker_session_stored",
        broker=broker,
        user_id=user_id,
        expires_at=expires_at.isoformat(),
    )
    return BrokerSessionRecord(
        broker=broker,
        user_id=user_id,
        user_name=user_name,
        access_token=SecretStr(access_token),
        login_time=login_time,
        expires_at=expires_at,
    )


async def load_session(
    sessions: db.SessionFactory, broker: str = ZERODHA
) -> BrokerSessionRecord | None:
    async with sessions() as session:
        row = (
            await session.scalars(select(BrokerSession).where(BrokerSession.broker == broker))
        ).one_or_none()
        return _record(row) if row is not None else None


async def clear_session(sessions: db.SessionFactory, broker: str = ZERODHA) -> bool:
    async with sessions() as session, session.begin():
        row = await session.get(BrokerSession, broker)
        if row is None:
            return False
        await session.delete(row)
    log.info("broker_session_cleared", broker=broker)
    return True


class TokenWatcher:
    """The latest stored access token, re-read in the background.

    ``access_token()`` is what the Kite clients call before every connect and request: it
    returns None when no token is stored or the stored one is past its expiry. The wall
    clock is fine here: this is I/O plumbing, not domain logic.
    """

    def __init__(
        self,
        sessions: Callable[[], db.SessionFactory],
        *,
        poll_s: float,
        broker: str = ZERODHA,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._poll_s = poll_s
        self._broker = broker
        self._now = now
        self.record: BrokerSessionRecord | None = None
        self.last_error: str | None = None
        self.loads = 0
        # Set whenever the stored token changes (a new login); waiters clear it.
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()

    def access_token(self) -> str | None:
        record = self.record
        if record is None or not record.valid_at(self._now()):
            return None
        return record.access_token.get_secret_value()

    def expired(self) -> bool:
        """A token is stored but its expiry (06:00 IST) has passed: log in again."""
        record = self.record
        return record is not None and not record.valid_at(self._now())

    def describe(self) -> str:
        """One line for /health: whose token and until when, never the token."""
        record = self.record
        if record is None:
            return "no access token stored: run `alpha-panda zerodha login`"
        if not record.valid_at(self._now()):
            return f"access token of {record.user_id} expired at {record.expires_at.isoformat()}"
        return f"access token of {record.user_id} valid until {record.expires_at.isoformat()}"

    async def refresh(self) -> bool:
        """Re-read the store; True when the token changed."""
        try:
            record = await load_session(self._sessions(), self._broker)
        except Exception as exc:  # keep the last good token; report, retry next round
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("broker_session_refresh_failed", error=self.last_error)
            return False
        self.last_error = None
        self.ready.set()
        old = self.record
        if (record is None) != (old is None) or (
            record is not None
            and old is not None
            and (
                record.access_token != old.access_token
                or record.expires_at != old.expires_at
                or record.user_id != old.user_id
            )
        ):
            self.record = record
            self.loads += 1
            self.changed.set()
            if record is not None:
                log.info(
                    "broker_session_loaded",
                    broker=self._broker,
                    user_id=record.user_id,
                    expires_at=record.expires_at.isoformat(),
                )
            return True
        return False

    async def run(self, should_stop: Callable[[], bool]) -> None:
        while not should_stop():
            await self.refresh()
            await asyncio.sleep(self._poll_s)


class StageTokenWatcher(TokenWatcher):
    """A :class:`TokenWatcher` that owns its database engine for a stage's lifetime."""

    def __init__(self, database_url: str, *, poll_s: float, broker: str = ZERODHA) -> None:
        self._url = database_url
        self._engine: AsyncEngine | None = None
        self._factory: db.SessionFactory | None = None
        super().__init__(self._session_factory, poll_s=poll_s, broker=broker)

    def _session_factory(self) -> db.SessionFactory:
        if self._factory is None:
            engine = db.create_engine(self._url)
            self._engine = engine
            self._factory = db.session_factory(engine)
        return self._factory

    async def close(self) -> None:
        engine = self._engine
        self._engine, self._factory = None, None
        if engine is not None:
            await engine.dispose()
