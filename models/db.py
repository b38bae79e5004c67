"""Relational tables: operator-managed configuration (users, strategies, the kill switch).

The same models serve PostgreSQL (production) and SQLite (the embedded default), so only
portable types are used: JSON (JSONB on PostgreSQL) and timestamps through
:class:`UtcDateTime`. Decimals never enter JSON as numbers; they are stored as strings so
a threshold of ``0.05`` reads back exactly.

Validation that needs more than a column (strategy parameters, risk overrides) lives in
:mod:`alpha_panda.db`; the CHECK constraints here are the last line of defence against
hand-edited rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Integer,
    String,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.events import STRATEGY_ID_MAX_LENGTH

SCHEMA_VERSION = 3

USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 64
USER_ROLES = ("trader", "admin")
EXECUTION_MODES = ("paper", "live")

JsonType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on every backend.

    SQLite has no timezone-aware type and hands back naive values; without this the same
    query would return aware datetimes on PostgreSQL and naive ones on SQLite.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps stored in the database must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite would otherwise store the offset inconsistently; naive UTC is unambiguous.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    """One row per applied schema version; lets a future upgrade know where it starts."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            f"length(username) BETWEEN {USERNAME_MIN_LENGTH} AND {USERNAME_MAX_LENGTH}",
            name="ck_users_username_length",
        ),
        CheckConstraint("role IN ('trader', 'admin')", name="ck_users_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), default="trader")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    # Schema version 2. Bumped by a password change, disable and re-enable; API tokens
    # carry the version they were issued under and older ones are refused. The server
    # default lets `db upgrade` add the column to a version-1 table that has rows.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class StrategyConfiguration(Base):
    __tablename__ = "strategy_configurations"
    __table_args__ = (
        CheckConstraint("execution_mode IN ('paper', 'live')", name="ck_strategy_execution_mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_ID_MAX_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    # [{"token": 256265, "symbol": "NIFTY 50"}, ...]
    instruments: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    parameters: Mapped[dict[str, Any]] = mapped_column(JsonType)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    execution_mode: Mapped[str] = mapped_column(String(8), default="paper")
    risk_limits: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class TradingHalt(Base):
    """The operator kill switch: a row means "no new orders" for its scope."""

    __tablename__ = "trading_halts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # HALT_ALL ("*") stops all trading; anything else is a strategy_id.
    scope: Mapped[str] = mapped_column(String(STRATEGY_ID_MAX_LENGTH), unique=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Schema version 2. Set by the risk manager once its kill switch holds this halt, so
    # an operator sees that the running pipeline, not just the database, has stopped.
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Schema version 3. Set by the trading engine once it refuses to execute for this
    # halt: the risk manager's acknowledgement alone left approved signals executing.
    engine_applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class BrokerSession(Base):
    """The broker's current access token (Kite's lives until about 06:00 IST next day).

    One row per broker, replaced at each login. The token is a credential: it is read by
    the feed and the trader and never logged, returned by the API or shown by the CLI.
    """

    __tablename__ = "broker_sessions"

    broker: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str] = mapped_column(String(128), default="")
    access_token: Mapped[str] = mapped_column(String(512))
    login_time: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
