"""The configuration store: engine, schema upgrade, read models and repository functions.

Operators change configuration through the CLI (or the web API); the pipeline stages
never query per message. Each stage calls :func:`load_runtime_config` from a background
timer every ``database.config_refresh_s`` seconds and swaps in the immutable
:class:`RuntimeConfig` it returns.

Every write is validated here, not in the callers, so the CLI and the web API cannot
disagree about what a valid strategy is: parameters go through
:class:`strategies.factory.StrategyFactory`, risk overrides through
:func:`validate_risk_overrides`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.schema import CreateColumn

from alpha_panda.passwords import check_password_rules, hash_password
from models.config import (
    HALT_ALL,
    HaltRecord,
    InstrumentRef,
    ReadModel,
    RuntimeConfig,
    StrategyConfigRecord,
)
from models.db import (
    EXECUTION_MODES,
    SCHEMA_VERSION,
    USER_ROLES,
    USERNAME_MAX_LENGTH,
    USERNAME_MIN_LENGTH,
    Base,
    SchemaVersion,
    StrategyConfiguration,
    TradingHalt,
    User,
    utcnow,
)
from models.events import STRATEGY_ID_MAX_LENGTH, STRATEGY_ID_PATTERN, ExecutionMode
from strategies.factory import StrategyConfigError, StrategyFactory
from tables.risk_state import RiskConfigError, RiskLimits, stored_overrides

SessionFactory = async_sessionmaker[AsyncSession]

__all__ = [
    "HALT_ALL",
    "RISK_OVERRIDE_KEYS",
    "AlreadyExistsError",
    "ConfigStoreError",
    "ConfigValidationError",
    "HaltRecord",
    "InstrumentRef",
    "NotFoundError",
    "RuntimeConfig",
    "SchemaTooNewError",
    "SessionFactory",
    "StrategyConfigRecord",
    "UserRecord",
    "acknowledge_halts",
    "add_halt",
    "add_strategy",
    "create_engine",
    "create_user",
    "get_halt",
    "get_strategy",
    "get_user_by_username",
    "has_schema",
    "list_halts",
    "list_strategies",
    "list_users",
    "load_runtime_config",
    "remove_halt",
    "seed_demo_strategies",
    "session_factory",
    "set_enabled",
    "set_param",
    "set_password",
    "set_user_disabled",
    "upgrade",
    "validate_risk_overrides",
]


# -- errors ----------------------------------------------------------------------------


class ConfigStoreError(Exception):
    """Base of the errors the repository functions raise on purpose."""


class NotFoundError(ConfigStoreError, LookupError):
    """The named strategy, user or halt does not exist."""


class AlreadyExistsError(ConfigStoreError):
    """A unique name (strategy_id, username) is already taken."""


class ConfigValidationError(ConfigStoreError, ValueError):
    """A value was refused; ``field`` names it, ``message`` states the rule."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SchemaTooNewError(ConfigStoreError):
    """The database was upgraded by a newer release than this code."""


# -- engine ----------------------------------------------------------------------------


_SUPPORTED_DRIVERS = {("sqlite", "aiosqlite"), ("postgresql", "asyncpg")}
_URL_FORMS = "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; for a SQLite file, its directory is created first.

    Raises :class:`ConfigValidationError` (field ``database.url``) for a URL that is not
    one of the two supported async drivers, before anything tries to connect.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not echoed: an unparseable URL may still contain a password.
        raise ConfigValidationError(
            "database.url", f"ALPHA_PANDA_DATABASE_URL is not a database URL ({_URL_FORMS})"
        ) from None
    if (parsed.get_backend_name(), parsed.get_driver_name()) not in _SUPPORTED_DRIVERS:
        raise ConfigValidationError(
            "database.url",
            f"ALPHA_PANDA_DATABASE_URL driver {parsed.drivername!r} is not supported "
            f"({_URL_FORMS})",
        )
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The CLI writes while stages poll; waiting for the lock beats "database is locked".
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(
        url,
        # Stages hold the engine for days; a connection killed by a PostgreSQL restart
        # or a firewall idle timeout must not surface as a failed refresh.
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_size=5,
        max_overflow=5,
        pool_timeout=10,
    )


def session_factory(engine: AsyncEngine) -> SessionFactory:
    # Read models are built from the ORM rows after commit; expiring them would force a
    # lazy reload, which async sessions cannot do implicitly.
    return async_sessionmaker(engine, expire_on_commit=False)


def describe_url(url: str) -> str:
    """``url`` with any password masked, safe for logs and CLI output."""
    return make_url(url).render_as_string(hide_password=True)


# -- schema ----------------------------------------------------------------------------


def _missing_tables(conn: Connection) -> list[str]:
    existing = set(inspect(conn).get_table_names())
    return [t.name for t in Base.metadata.sorted_tables if t.name not in existing]


def _add_missing_columns(conn: Connection) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` for each model column an existing table lacks.

    Enough for the additive changes made so far (version 2: ``users.token_version``,
    which has a server default so existing rows get a value; version 3:
    ``trading_halts.engine_applied_at``, nullable). Both backends accept the
    statement inside the upgrade transaction.
    """
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    added: list[str] = []
    for table in Base.metadata.sorted_tables:
        if table.name not in existing:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            added.append(f"added column {table.name}.{column.name}")
    return added


async def upgrade(engine: AsyncEngine) -> list[str]:
    """Create whatever part of the schema is missing; returns what it did.

    Idempotent: a second run returns ``[]``. Raises :class:`SchemaTooNewError` when the
    database records a version this code does not know.
    """
    done: list[str] = []
    async with engine.begin() as conn:
        missing = await conn.run_sync(_missing_tables)
        done += await conn.run_sync(_add_missing_columns)
        if missing:
            tables = [Base.metadata.tables[name] for name in missing]
            await conn.run_sync(lambda c: Base.metadata.create_all(c, tables=tables))
            done += [f"created table {name}" for name in missing]
        current = await conn.scalar(select(func.max(SchemaVersion.version)))
        if current is None or current < SCHEMA_VERSION:
            await conn.execute(
                insert(SchemaVersion).values(version=SCHEMA_VERSION, applied_at=utcnow())
            )
            done.append(f"recorded schema version {SCHEMA_VERSION}")
        elif current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"database schema is version {current}, this release knows up to "
                f"{SCHEMA_VERSION}; upgrade alpha-panda"
            )
    return done


# -- read models -----------------------------------------------------------------------

# RuntimeConfig, StrategyConfigRecord, InstrumentRef and HaltRecord live in models/config.py
# (pure: the strategy host and the risk policy read them) and are re-exported from here.


class UserRecord(ReadModel):
    id: int
    username: str
    role: str
    disabled: bool
    created_at: datetime
    updated_at: datetime
    # Issued tokens carry it; a password change, disable or re-enable bumps it.
    token_version: int = 0
    # Needed by the login endpoint; kept out of repr and of any serialised output.
    password_hash: str = Field(repr=False, exclude=True)


def _strategy_record(row: StrategyConfiguration) -> StrategyConfigRecord:
    return StrategyConfigRecord(
        strategy_id=row.strategy_id,
        kind=row.kind,
        instruments=tuple(InstrumentRef.model_validate(i) for i in row.instruments),
        parameters=dict(row.parameters),
        enabled=row.enabled,
        execution_mode=ExecutionMode(row.execution_mode),
        risk_limits=dict(row.risk_limits or {}),
        updated_at=row.updated_at,
    )


def _halt_record(row: TradingHalt) -> HaltRecord:
    return HaltRecord(
        scope=row.scope,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        applied_at=row.applied_at,
        engine_applied_at=row.engine_applied_at,
    )


def _user_record(row: User) -> UserRecord:
    return UserRecord(
        id=row.id,
        username=row.username,
        role=row.role,
        disabled=row.disabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
        token_version=row.token_version,
        password_hash=row.password_hash,
    )


async def load_runtime_config(sessions: SessionFactory) -> RuntimeConfig:
    """The whole runtime configuration in two SELECTs inside one read transaction.

    Meant for a background timer, never per message. Raises on a database error or a
    corrupt row; the caller should keep its last good config and log the failure.
    """
    async with sessions() as session, session.begin():
        strategy_rows = (
            await session.scalars(
                select(StrategyConfiguration).order_by(StrategyConfiguration.strategy_id)
            )
        ).all()
        halt_rows = (await session.scalars(select(TradingHalt))).all()
    return RuntimeConfig(
        strategies=tuple(_strategy_record(r) for r in strategy_rows),
        halt_all=any(h.scope == HALT_ALL for h in halt_rows),
        halted_strategies=frozenset(h.scope for h in halt_rows if h.scope != HALT_ALL),
        halt_reasons={h.scope: h.reason for h in halt_rows},
        halts=tuple(_halt_record(h) for h in sorted(halt_rows, key=lambda h: h.scope)),
    )


async def has_schema(engine: AsyncEngine) -> bool:
    """Whether the database has any of our tables (False for a new, empty database)."""
    async with engine.connect() as conn:
        missing = await conn.run_sync(_missing_tables)
    return len(missing) < len(Base.metadata.sorted_tables)


# -- validation ------------------------------------------------------------------------

_STRATEGY_ID_RE = re.compile(STRATEGY_ID_PATTERN)
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]+$")

# The per-strategy risk overrides: the fields of RiskLimits, which checks them (one home).
RISK_OVERRIDE_KEYS: tuple[str, ...] = tuple(RiskLimits.model_fields)


def _check_strategy_id(strategy_id: str) -> None:
    if not strategy_id or len(strategy_id) > STRATEGY_ID_MAX_LENGTH:
        raise ConfigValidationError(
            "strategy_id", f"must be 1-{STRATEGY_ID_MAX_LENGTH} characters, got {strategy_id!r}"
        )
    if not _STRATEGY_ID_RE.fullmatch(strategy_id):
        raise ConfigValidationError(
            "strategy_id",
            f"{strategy_id!r} may only contain letters, digits, '_', '.' and '-'",
        )


_KIND_MAX_LENGTH = 32  # strategy_configurations.kind is VARCHAR(32)


def _check_kind(kind: str) -> None:
    # Built-in, entry-point plug-in, or a module:Class import path (imported here, so a
    # plug-in that cannot be imported is refused when it is configured).
    if len(kind) > _KIND_MAX_LENGTH:
        raise ConfigValidationError(
            "kind",
            f"at most {_KIND_MAX_LENGTH} characters, got {len(kind)}; publish a plug-in with a "
            "long import path through the alpha_panda.strategies entry point instead",
        )
    try:
        StrategyFactory.strategy_class(kind)
    except StrategyConfigError as exc:
        raise ConfigValidationError("kind", exc.message) from None


def _validated_params(kind: str, params: Mapping[str, Any], strategy_id: str) -> dict[str, Any]:
    try:
        model = StrategyFactory.validate_params(kind, params, strategy_id=strategy_id)
    except StrategyConfigError as exc:
        field = f"parameters.{exc.field}" if exc.field else "parameters"
        raise ConfigValidationError(field, exc.message) from None
    except Exception as exc:
        # A plug-in's own validator may raise anything: refuse, naming it, not a traceback.
        raise ConfigValidationError(
            "parameters", f"kind {kind!r} failed to validate them: {type(exc).__name__}: {exc}"
        ) from None
    # mode="json" turns Decimals into strings, which is how they are stored.
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def _check_instruments(instruments: Iterable[Any]) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    seen: set[int] = set()
    for item in instruments:
        raw = item.model_dump() if isinstance(item, InstrumentRef) else item
        if isinstance(raw, Mapping):
            token, symbol = raw.get("token"), raw.get("symbol")
        else:
            try:
                token, symbol = raw
            except (TypeError, ValueError):
                raise ConfigValidationError(
                    "instruments", f"each instrument needs a token and a symbol, got {raw!r}"
                ) from None
        if isinstance(token, bool) or not isinstance(token, int) or token <= 0:
            raise ConfigValidationError(
                "instruments", f"token must be a positive integer, got {token!r}"
            )
        if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > 64:
            raise ConfigValidationError(
                "instruments", f"symbol for token {token} must be 1-64 characters"
            )
        if token in seen:
            raise ConfigValidationError("instruments", f"token {token} is listed twice")
        seen.add(token)
        refs.append({"token": token, "symbol": symbol.strip()})
    if not refs:
        raise ConfigValidationError("instruments", "at least one instrument is required")
    return refs


def _check_mode(mode: str | ExecutionMode) -> str:
    value = str(mode.value if isinstance(mode, ExecutionMode) else mode)
    if value not in EXECUTION_MODES:
        raise ConfigValidationError(
            "execution_mode", f"must be one of {', '.join(EXECUTION_MODES)}, got {value!r}"
        )
    return value


def validate_risk_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Per-strategy risk overrides in their stored, JSON-safe form.

    Accepts native values (web API JSON) and text (CLI ``--risk name=value``). The rules are
    :class:`tables.risk_state.RiskLimits`' own (:func:`tables.risk_state.stored_overrides`);
    the risk manager applies them again against its defaults when it loads them.
    """
    try:
        return stored_overrides(overrides)
    except RiskConfigError as exc:
        raise ConfigValidationError(f"risk_limits.{exc.field}", exc.message) from None


def _check_username(username: str) -> None:
    if not USERNAME_MIN_LENGTH <= len(username) <= USERNAME_MAX_LENGTH:
        raise ConfigValidationError(
            "username", f"must be {USERNAME_MIN_LENGTH}-{USERNAME_MAX_LENGTH} characters"
        )
    if not _USERNAME_RE.fullmatch(username):
        raise ConfigValidationError(
            "username", "may only contain letters, digits, '_', '.', '@' and '-'"
        )


def _check_role(role: str) -> None:
    if role not in USER_ROLES:
        raise ConfigValidationError("role", f"must be one of {', '.join(USER_ROLES)}, got {role!r}")


def _check_password(password: str) -> None:
    try:
        check_password_rules(password)
    except ValueError as exc:
        raise ConfigValidationError("password", str(exc).removeprefix("password: ")) from None


# -- strategies ------------------------------------------------------------------------


async def _strategy_row(session: AsyncSession, strategy_id: str) -> StrategyConfiguration:
    row = await session.scalar(
        select(StrategyConfiguration).where(StrategyConfiguration.strategy_id == strategy_id)
    )
    if row is None:
        raise NotFoundError(f"strategy {strategy_id!r} not found")
    return row


def _new_strategy_row(
    strategy_id: str,
    kind: str,
    instruments: Iterable[Any],
    parameters: Mapping[str, Any] | None,
    enabled: bool,
    execution_mode: str | ExecutionMode,
    risk_limits: Mapping[str, Any] | None,
) -> StrategyConfiguration:
    _check_strategy_id(strategy_id)
    _check_kind(kind)
    return StrategyConfiguration(
        strategy_id=strategy_id,
        kind=kind,
        instruments=_check_instruments(instruments),
        parameters=_validated_params(
            kind, {**StrategyFactory.default_params(kind), **(parameters or {})}, strategy_id
        ),
        enabled=enabled,
        execution_mode=_check_mode(execution_mode),
        risk_limits=validate_risk_overrides(risk_limits or {}),
    )


def validated_strategy(
    strategy_id: str,
    kind: str,
    instruments: Iterable[InstrumentRef | Mapping[str, Any] | tuple[int, str]],
    parameters: Mapping[str, Any] | None = None,
    *,
    enabled: bool = True,
    execution_mode: str | ExecutionMode = ExecutionMode.PAPER,
    risk_limits: Mapping[str, Any] | None = None,
    updated_at: datetime,
) -> StrategyConfigRecord:
    """A strategy as :func:`add_strategy` would store it, without a database (the
    backtest's configuration files). Raises :class:`ConfigValidationError` likewise."""
    row = _new_strategy_row(
        strategy_id, kind, instruments, parameters, enabled, execution_mode, risk_limits
    )
    row.updated_at = updated_at
    return _strategy_record(row)


async def add_strategy(
    sessions: SessionFactory,
    strategy_id: str,
    kind: str,
    instruments: Iterable[InstrumentRef | Mapping[str, Any] | tuple[int, str]],
    parameters: Mapping[str, Any] | None = None,
    *,
    enabled: bool = True,
    execution_mode: str | ExecutionMode = ExecutionMode.PAPER,
    risk_limits: Mapping[str, Any] | None = None,
) -> StrategyConfigRecord:
    """Create a strategy; parameters not given take ``StrategyFactory.default_params``.

    Raises :class:`ConfigValidationError` naming the bad field, or
    :class:`AlreadyExistsError` when ``strategy_id`` is taken.
    """
    row = _new_strategy_row(
        strategy_id, kind, instruments, parameters, enabled, execution_mode, risk_limits
    )
    try:
        async with sessions() as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise AlreadyExistsError(f"strategy {strategy_id!r} already exists") from None
    return _strategy_record(row)


async def get_strategy(sessions: SessionFactory, strategy_id: str) -> StrategyConfigRecord:
    async with sessions() as session:
        return _strategy_record(await _strategy_row(session, strategy_id))


async def list_strategies(sessions: SessionFactory) -> list[StrategyConfigRecord]:
    async with sessions() as session:
        rows = await session.scalars(
            select(StrategyConfiguration).order_by(StrategyConfiguration.strategy_id)
        )
        return [_strategy_record(r) for r in rows]


async def set_enabled(
    sessions: SessionFactory, strategy_id: str, enabled: bool
) -> StrategyConfigRecord:
    async with sessions() as session, session.begin():
        row = await _strategy_row(session, strategy_id)
        row.enabled = enabled
    return _strategy_record(row)


async def set_param(
    sessions: SessionFactory, strategy_id: str, updates: Mapping[str, Any]
) -> StrategyConfigRecord:
    """Merge ``updates`` into the strategy's parameters and re-validate the result.

    Nothing is written unless the merged parameters pass the factory's validation.
    """
    if not updates:
        raise ConfigValidationError("parameters", "no parameters given to set")
    async with sessions() as session, session.begin():
        row = await _strategy_row(session, strategy_id)
        merged = {**row.parameters, **updates}
        # A fresh dict (never in-place mutation) so the JSON column is seen as changed.
        row.parameters = _validated_params(row.kind, merged, strategy_id)
    return _strategy_record(row)


DEMO_STRATEGIES: tuple[dict[str, Any], ...] = (
    {
        "strategy_id": "momentum-nifty",
        "kind": "momentum",
        "instruments": [(256265, "NIFTY 50"), (738561, "RELIANCE")],
        # Small enough that the mock feed's random walk (20 ticks/s) triggers signals
        # within the first minute of a demo run.
        "parameters": {"lookback": 10, "threshold_pct": "0.05", "quantity": 10},
    },
    {
        "strategy_id": "meanrev-it",
        "kind": "mean_reversion",
        "instruments": [(2953217, "TCS"), (408065, "INFY")],
        "parameters": {"window": 20, "entry_z": "1.5", "exit_z": "0.2", "quantity": 5},
    },
)


async def seed_demo_strategies(sessions: SessionFactory) -> list[str]:
    """Create the demo strategies when no strategy exists; returns the ids created."""
    rows = [
        _new_strategy_row(
            spec["strategy_id"],
            spec["kind"],
            spec["instruments"],
            spec["parameters"],
            True,
            ExecutionMode.PAPER,
            None,
        )
        for spec in DEMO_STRATEGIES
    ]
    try:
        async with sessions() as session, session.begin():
            count = await session.scalar(select(func.count()).select_from(StrategyConfiguration))
            if count:
                return []
            session.add_all(rows)
    except IntegrityError:
        # A concurrent seed (two stages starting together) got there first.
        return []
    return [r.strategy_id for r in rows]


# -- halts -----------------------------------------------------------------------------


async def add_halt(
    sessions: SessionFactory, scope: str, reason: str, by: str
) -> tuple[HaltRecord, bool]:
    """Engage the kill switch for ``scope`` (HALT_ALL or a strategy_id).

    Idempotent so an operator can hit it twice without an error: returns the halt in
    force and whether this call created it (an existing halt keeps its original reason).
    Raises :class:`NotFoundError` for an unknown strategy_id.
    """
    try:
        async with sessions() as session, session.begin():
            existing = await session.scalar(select(TradingHalt).where(TradingHalt.scope == scope))
            if existing is not None:
                return _halt_record(existing), False
            if scope != HALT_ALL:
                await _strategy_row(session, scope)
            row = TradingHalt(scope=scope, reason=reason[:500], created_by=by[:128])
            session.add(row)
    except IntegrityError:
        # Lost a race with another operator halting the same scope: theirs stands.
        async with sessions() as session:
            existing = await session.scalar(select(TradingHalt).where(TradingHalt.scope == scope))
            if existing is None:
                raise
            return _halt_record(existing), False
    return _halt_record(row), True


async def remove_halt(sessions: SessionFactory, scope: str) -> bool:
    """Lift the halt on ``scope``; False when it was not halted.

    Raises :class:`NotFoundError` when ``scope`` is neither halted nor a known strategy,
    which is almost always a typo in the id.
    """
    async with sessions() as session, session.begin():
        row = await session.scalar(select(TradingHalt).where(TradingHalt.scope == scope))
        if row is None:
            if scope != HALT_ALL:
                await _strategy_row(session, scope)
            return False
        await session.delete(row)
    return True


async def acknowledge_halts(
    sessions: SessionFactory, halts: Iterable[HaltRecord], at: datetime, *, engine: bool = False
) -> list[str]:
    """Record that a risk manager's kill switch (``engine``: the trading engine's) now
    holds ``halts``; returns the scopes.

    Only the very rows that were loaded (scope and created_at) and not yet acknowledged
    are marked: a halt lifted and re-created since the load is a new row and waits for
    the next load, so an acknowledgement never covers a halt that was not applied.
    """
    column = TradingHalt.engine_applied_at if engine else TradingHalt.applied_at
    done: list[str] = []
    async with sessions() as session, session.begin():
        for halt in halts:
            if (halt.engine_applied_at if engine else halt.applied_at) is not None:
                continue
            result = await session.execute(
                update(TradingHalt)
                .where(
                    TradingHalt.scope == halt.scope,
                    TradingHalt.created_at == halt.created_at,
                    column.is_(None),
                )
                .values({column: at})
            )
            if getattr(result, "rowcount", 0):
                done.append(halt.scope)
    return done


async def get_halt(sessions: SessionFactory, scope: str) -> HaltRecord | None:
    async with sessions() as session:
        row = await session.scalar(select(TradingHalt).where(TradingHalt.scope == scope))
        return None if row is None else _halt_record(row)


async def list_halts(sessions: SessionFactory) -> list[HaltRecord]:
    async with sessions() as session:
        rows = await session.scalars(select(TradingHalt).order_by(TradingHalt.scope))
        return [_halt_record(r) for r in rows]


# -- users -----------------------------------------------------------------------------


async def _user_row(session: AsyncSession, username: str) -> User:
    row = await session.scalar(select(User).where(User.username == username))
    if row is None:
        raise NotFoundError(f"user {username!r} not found")
    return row


async def create_user(
    sessions: SessionFactory, username: str, password: str, role: str = "trader"
) -> UserRecord:
    """Create an enabled user; raises ConfigValidationError or AlreadyExistsError."""
    _check_username(username)
    _check_role(role)
    _check_password(password)
    # bcrypt is deliberately slow; keep it off the event loop.
    hashed = await asyncio.to_thread(hash_password, password)
    row = User(username=username, password_hash=hashed, role=role, disabled=False, token_version=0)
    try:
        async with sessions() as session, session.begin():
            session.add(row)
    except IntegrityError:
        raise AlreadyExistsError(f"user {username!r} already exists") from None
    return _user_record(row)


async def get_user_by_username(sessions: SessionFactory, username: str) -> UserRecord | None:
    """The user, or None: the login path treats "no such user" as a failed login."""
    async with sessions() as session:
        row = await session.scalar(select(User).where(User.username == username))
        return None if row is None else _user_record(row)


async def list_users(sessions: SessionFactory) -> list[UserRecord]:
    async with sessions() as session:
        rows = await session.scalars(select(User).order_by(User.username))
        return [_user_record(r) for r in rows]


async def set_password(sessions: SessionFactory, username: str, password: str) -> UserRecord:
    """Set the password and revoke every token issued before (token version bump)."""
    _check_password(password)
    hashed = await asyncio.to_thread(hash_password, password)
    async with sessions() as session, session.begin():
        row = await _user_row(session, username)
        row.password_hash = hashed
        row.token_version = User.token_version + 1
    return await _reread_user(sessions, username)


async def set_user_disabled(sessions: SessionFactory, username: str, disabled: bool) -> UserRecord:
    """Disable or re-enable; either way tokens issued before are revoked.

    Revoking on re-enable too means a token stolen before the account was disabled does
    not come back to life with the account.
    """
    async with sessions() as session, session.begin():
        row = await _user_row(session, username)
        row.disabled = disabled
        # In SQL, so two concurrent changes both count.
        row.token_version = User.token_version + 1
    return await _reread_user(sessions, username)


async def _reread_user(sessions: SessionFactory, username: str) -> UserRecord:
    async with sessions() as session:
        return _user_record(await _user_row(session, username))
