"""The configuration store against real databases.

Every test runs on PostgreSQL (the production backend, via ``pg_url``) and on a SQLite
file in tmp_path (the embedded default), because the same models and queries serve both.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from alpha_panda.db import (
    HALT_ALL,
    AlreadyExistsError,
    ConfigValidationError,
    InstrumentRef,
    NotFoundError,
    SchemaTooNewError,
    SessionFactory,
    add_halt,
    add_strategy,
    create_engine,
    create_user,
    get_strategy,
    get_user_by_username,
    list_halts,
    list_strategies,
    list_users,
    load_runtime_config,
    remove_halt,
    seed_demo_strategies,
    session_factory,
    set_enabled,
    set_param,
    set_password,
    set_user_disabled,
    upgrade,
)
from alpha_panda.passwords import verify_password
from alpha_panda.settings import RiskSettings
from models.db import SCHEMA_VERSION, SchemaVersion, StrategyConfiguration
from models.events import ExecutionMode
from strategies.factory import StrategyFactory
from tables.risk_state import RiskLimits

pytestmark = pytest.mark.integration

NIFTY = InstrumentRef(token=256265, symbol="NIFTY 50")
RELIANCE = InstrumentRef(token=738561, symbol="RELIANCE")
ALL_TABLES = {
    "schema_version",
    "strategy_configurations",
    "trading_halts",
    "users",
    "broker_sessions",
}


async def _add_momentum(sessions: SessionFactory, strategy_id: str = "mom-1", **kw: Any) -> Any:
    return await add_strategy(
        sessions, strategy_id, "momentum", [NIFTY, RELIANCE], {"lookback": 7}, **kw
    )


# -- schema ----------------------------------------------------------------------------


async def test_upgrade_creates_schema_once(engine: AsyncEngine) -> None:
    first = await upgrade(engine)
    second = await upgrade(engine)

    assert sorted(first) == sorted(
        [f"created table {t}" for t in ALL_TABLES] + [f"recorded schema version {SCHEMA_VERSION}"]
    )
    assert second == []
    async with engine.connect() as conn:
        versions = (await conn.execute(select(SchemaVersion.version))).scalars().all()
    assert versions == [SCHEMA_VERSION]


async def test_upgrade_adds_the_token_version_to_a_version_1_database(
    engine: AsyncEngine,
) -> None:
    await upgrade(engine)
    # Turn it back into what release 1 created: no users.token_version, version 1 recorded.
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE users"))
        await conn.execute(text("DELETE FROM schema_version"))
        await conn.execute(
            text("INSERT INTO schema_version (version, applied_at) VALUES (1, CURRENT_TIMESTAMP)")
        )
        await conn.execute(
            text(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(64) UNIQUE, "
                "password_hash VARCHAR(128), role VARCHAR(16), disabled BOOLEAN, "
                "created_at TIMESTAMP WITH TIME ZONE, updated_at TIMESTAMP WITH TIME ZONE)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO users (id, username, password_hash, role, disabled, created_at, "
                "updated_at) VALUES (1, 'alice', 'x', 'trader', false, CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"
            )
        )

    assert await upgrade(engine) == [
        "added column users.token_version",
        f"recorded schema version {SCHEMA_VERSION}",
    ]
    assert await upgrade(engine) == []
    user = await get_user_by_username(session_factory(engine), "alice")
    assert user is not None and user.token_version == 0
    bumped = await set_user_disabled(session_factory(engine), "alice", True)
    assert bumped.token_version == 1


async def test_upgrade_refuses_a_newer_schema(engine: AsyncEngine) -> None:
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO schema_version (version, applied_at) "
                f"VALUES ({SCHEMA_VERSION + 1}, CURRENT_TIMESTAMP)"
            )
        )

    with pytest.raises(SchemaTooNewError, match=f"version {SCHEMA_VERSION + 1}"):
        await upgrade(engine)


async def test_upgrade_recreates_a_missing_table_only(engine: AsyncEngine) -> None:
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE trading_halts"))

    assert await upgrade(engine) == ["created table trading_halts"]


def test_sqlite_engine_creates_the_database_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "config.db"

    async def go() -> list[str]:
        engine = create_engine(f"sqlite+aiosqlite:///{target}")
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(go())
    assert target.is_file()


# -- strategies ------------------------------------------------------------------------


async def test_add_fills_defaults_and_stores_decimals_as_strings(
    sessions: SessionFactory,
) -> None:
    record = await _add_momentum(sessions)

    defaults = StrategyFactory.default_params("momentum")
    assert record.parameters == {**defaults, "lookback": 7}
    assert record.instruments == (NIFTY, RELIANCE)
    assert record.enabled is True
    assert record.execution_mode is ExecutionMode.PAPER
    assert record.risk_limits == {}
    assert record.updated_at.tzinfo is UTC
    async with sessions() as session:
        raw = await session.scalar(select(StrategyConfiguration.parameters))
    assert raw is not None
    assert isinstance(raw["threshold_pct"], str)
    assert await get_strategy(sessions, "mom-1") == record
    assert await list_strategies(sessions) == [record]


async def test_add_accepts_mapping_and_tuple_instruments_and_options(
    sessions: SessionFactory,
) -> None:
    record = await add_strategy(
        sessions,
        "mr.1",
        "mean_reversion",
        [{"token": 2953217, "symbol": "TCS"}, (408065, "INFY")],
        {"entry_z": "1.5"},
        enabled=False,
        execution_mode="live",
        risk_limits={"max_order_quantity": "50", "max_daily_loss": 2500.5},
    )

    assert [i.symbol for i in record.instruments] == ["TCS", "INFY"]
    assert record.enabled is False
    assert record.execution_mode is ExecutionMode.LIVE
    assert record.parameters["entry_z"] == "1.5"
    assert record.risk_limits == {"max_order_quantity": 50, "max_daily_loss": "2500.5"}


async def test_duplicate_strategy_id_is_refused(sessions: SessionFactory) -> None:
    await _add_momentum(sessions)
    with pytest.raises(AlreadyExistsError, match="mom-1"):
        await _add_momentum(sessions)


@pytest.mark.parametrize(
    ("strategy_id", "kind", "instruments", "params", "kw", "field"),
    [
        ("bad id", "momentum", [NIFTY], {}, {}, "strategy_id"),
        ("x" * 65, "momentum", [NIFTY], {}, {}, "strategy_id"),
        ("ok", "nosuch", [NIFTY], {}, {}, "kind"),
        ("ok", "momentum", [], {}, {}, "instruments"),
        ("ok", "momentum", [NIFTY, NIFTY], {}, {}, "instruments"),
        ("ok", "momentum", [(0, "ZERO")], {}, {}, "instruments"),
        ("ok", "momentum", [NIFTY], {"lookback": 0}, {}, "parameters.lookback"),
        ("ok", "momentum", [NIFTY], {"window": 3}, {}, "parameters.window"),
        ("ok", "momentum", [NIFTY], {}, {"execution_mode": "yolo"}, "execution_mode"),
        ("ok", "momentum", [NIFTY], {}, {"risk_limits": {"max_bananas": 1}}, "risk_limits."),
        ("ok", "momentum", [NIFTY], {}, {"risk_limits": {"max_daily_loss": "-5"}}, "risk_limits."),
        ("ok", "momentum", [NIFTY], {}, {"risk_limits": {"allow_short": "maybe"}}, "risk_limits."),
    ],
)
async def test_invalid_strategy_is_refused_naming_the_field(
    sessions: SessionFactory,
    strategy_id: str,
    kind: str,
    instruments: list[Any],
    params: dict[str, Any],
    kw: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        await add_strategy(sessions, strategy_id, kind, instruments, params, **kw)

    assert caught.value.field.startswith(field)
    assert str(caught.value).startswith(caught.value.field + ": ")
    assert await list_strategies(sessions) == []


async def test_unknown_kind_error_names_the_kind(sessions: SessionFactory) -> None:
    with pytest.raises(
        ConfigValidationError, match=r"'nosuch'.*known: (breakout, )?mean_reversion, momentum"
    ):
        await add_strategy(sessions, "x", "nosuch", [NIFTY])


async def test_enable_and_disable(sessions: SessionFactory) -> None:
    await _add_momentum(sessions)

    assert (await set_enabled(sessions, "mom-1", False)).enabled is False
    assert (await get_strategy(sessions, "mom-1")).enabled is False
    assert (await set_enabled(sessions, "mom-1", True)).enabled is True

    with pytest.raises(NotFoundError, match="'nope'"):
        await set_enabled(sessions, "nope", True)
    with pytest.raises(NotFoundError):
        await get_strategy(sessions, "nope")


async def test_set_param_merges_and_revalidates(sessions: SessionFactory) -> None:
    before = await _add_momentum(sessions)

    after = await set_param(sessions, "mom-1", {"threshold_pct": "0.25", "quantity": "3"})

    assert after.parameters == {**before.parameters, "threshold_pct": "0.25", "quantity": 3}
    assert after.updated_at > before.updated_at
    assert await get_strategy(sessions, "mom-1") == after


@pytest.mark.parametrize(
    ("updates", "field"),
    [
        ({"lookback": "0"}, "parameters.lookback"),
        ({"quantity": "lots"}, "parameters.quantity"),
        ({"entry_z": "1"}, "parameters.entry_z"),  # a mean-reversion name on momentum
        ({}, "parameters"),
    ],
)
async def test_set_param_rejects_and_leaves_the_stored_value(
    sessions: SessionFactory, updates: dict[str, Any], field: str
) -> None:
    before = await _add_momentum(sessions)

    with pytest.raises(ConfigValidationError) as caught:
        await set_param(sessions, "mom-1", updates)

    assert caught.value.field == field
    assert await get_strategy(sessions, "mom-1") == before


async def test_set_param_unknown_strategy(sessions: SessionFactory) -> None:
    with pytest.raises(NotFoundError):
        await set_param(sessions, "nope", {"quantity": 1})


async def test_risk_overrides_are_stored_in_a_form_the_risk_manager_accepts(
    sessions: SessionFactory,
) -> None:
    record = await _add_momentum(
        sessions,
        risk_limits={
            "max_order_quantity": "25",
            "max_order_notional": "100000.50",
            "max_position_quantity": 100,
            "max_gross_exposure": "750000",
            "max_daily_loss": "1000",
            "max_orders_per_minute": "6",
            "allowed_instruments": "738561, 256265",
            "allow_short": "true",
        },
    )

    assert record.risk_limits["allowed_instruments"] == [256265, 738561]
    limits = RiskLimits.from_settings(RiskSettings()).with_overrides(record.risk_limits)
    assert limits.max_order_quantity == 25
    assert str(limits.max_order_notional) == "100000.50"
    assert limits.allowed_instruments == frozenset({256265, 738561})
    assert limits.allow_short is True


async def test_empty_allowed_instruments_means_every_instrument(sessions: SessionFactory) -> None:
    record = await _add_momentum(sessions, risk_limits={"allowed_instruments": ""})

    assert record.risk_limits == {"allowed_instruments": None}
    limits = RiskLimits.from_settings(RiskSettings(allowed_instruments="1")).with_overrides(
        record.risk_limits
    )
    assert limits.allowed_instruments is None


# -- runtime config --------------------------------------------------------------------


async def test_runtime_config_reflects_changes(sessions: SessionFactory) -> None:
    empty = await load_runtime_config(sessions)
    assert empty.strategies == ()
    assert not empty.halt_all
    assert empty.halted_strategies == frozenset()

    await _add_momentum(sessions)
    await add_strategy(sessions, "mr-1", "mean_reversion", [RELIANCE])
    config = await load_runtime_config(sessions)
    assert [s.strategy_id for s in config.strategies] == ["mom-1", "mr-1"]
    assert [s.strategy_id for s in config.enabled_strategies] == ["mom-1", "mr-1"]

    await set_enabled(sessions, "mr-1", False)
    await set_param(sessions, "mom-1", {"lookback": 12})
    await add_halt(sessions, "mom-1", "investigating fills", "ops")
    config = await load_runtime_config(sessions)
    assert [s.strategy_id for s in config.enabled_strategies] == ["mom-1"]
    momentum = next(s for s in config.strategies if s.strategy_id == "mom-1")
    assert momentum.parameters["lookback"] == 12
    assert config.halted_strategies == frozenset({"mom-1"}) and not config.halt_all
    assert config.halt_reasons == {"mom-1": "investigating fills"}

    await add_halt(sessions, HALT_ALL, "exchange outage", "ops")
    config = await load_runtime_config(sessions)
    assert config.halt_all
    assert config.halt_reasons == {"mom-1": "investigating fills", HALT_ALL: "exchange outage"}

    await remove_halt(sessions, HALT_ALL)
    await remove_halt(sessions, "mom-1")
    config = await load_runtime_config(sessions)
    assert not config.halt_all
    assert config.halted_strategies == frozenset()
    assert config.halt_reasons == {}


async def test_runtime_config_is_two_selects(engine: AsyncEngine, sessions: SessionFactory) -> None:
    await _add_momentum(sessions)
    await add_halt(sessions, HALT_ALL, "x", "ops")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await load_runtime_config(sessions)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, statements


# -- halts -----------------------------------------------------------------------------


async def test_halt_is_idempotent_and_keeps_the_first_reason(sessions: SessionFactory) -> None:
    await _add_momentum(sessions)

    first, created = await add_halt(sessions, "mom-1", "bad fills", "alice")
    again, created_again = await add_halt(sessions, "mom-1", "other reason", "bob")

    assert created and not created_again
    assert again == first
    assert first.created_by == "alice"
    assert first.created_at.tzinfo is UTC
    assert await list_halts(sessions) == [first]


async def test_halting_an_unknown_strategy_is_an_error(sessions: SessionFactory) -> None:
    with pytest.raises(NotFoundError, match="'ghost'"):
        await add_halt(sessions, "ghost", "x", "ops")
    assert await list_halts(sessions) == []


async def test_remove_halt(sessions: SessionFactory) -> None:
    await _add_momentum(sessions)
    await add_halt(sessions, HALT_ALL, "all", "ops")

    assert await remove_halt(sessions, HALT_ALL) is True
    assert await remove_halt(sessions, HALT_ALL) is False
    assert await remove_halt(sessions, "mom-1") is False
    with pytest.raises(NotFoundError):
        await remove_halt(sessions, "ghost")


# -- seeding ---------------------------------------------------------------------------


async def test_seed_only_when_empty(sessions: SessionFactory) -> None:
    assert await seed_demo_strategies(sessions) == ["momentum-nifty", "meanrev-it"]
    assert await seed_demo_strategies(sessions) == []

    records = {r.strategy_id: r for r in await list_strategies(sessions)}
    assert set(records) == {"momentum-nifty", "meanrev-it"}
    momentum = records["momentum-nifty"]
    assert momentum.kind == "momentum"
    assert [i.token for i in momentum.instruments] == [256265, 738561]
    assert momentum.parameters == {"lookback": 10, "threshold_pct": "0.05", "quantity": 10}
    meanrev = records["meanrev-it"]
    assert [i.symbol for i in meanrev.instruments] == ["TCS", "INFY"]
    assert meanrev.parameters == {"window": 20, "entry_z": "1.5", "exit_z": "0.2", "quantity": 5}
    for record in records.values():
        assert record.enabled and record.execution_mode is ExecutionMode.PAPER
        StrategyFactory.validate_params(record.kind, record.parameters, record.strategy_id)


async def test_seed_does_nothing_when_any_strategy_exists(sessions: SessionFactory) -> None:
    await _add_momentum(sessions)

    assert await seed_demo_strategies(sessions) == []
    assert [r.strategy_id for r in await list_strategies(sessions)] == ["mom-1"]


# -- users -----------------------------------------------------------------------------


async def test_users_lifecycle(sessions: SessionFactory) -> None:
    created = await create_user(sessions, "alice", "s3cret-pass", role="admin")

    assert created.role == "admin" and not created.disabled
    assert created.created_at.tzinfo is UTC
    assert "password_hash" not in created.model_dump()
    assert "s3cret" not in repr(created) and "$2b$" not in repr(created)

    found = await get_user_by_username(sessions, "alice")
    assert found is not None
    assert verify_password("s3cret-pass", found.password_hash)
    assert await get_user_by_username(sessions, "Alice") is None
    assert await get_user_by_username(sessions, "nobody") is None

    assert created.token_version == 0
    changed = await set_password(sessions, "alice", "another-pass")
    assert changed.token_version == 1  # tokens issued before the change are revoked
    found = await get_user_by_username(sessions, "alice")
    assert found is not None
    assert found.token_version == 1
    assert verify_password("another-pass", found.password_hash)
    assert not verify_password("s3cret-pass", found.password_hash)

    disabled = await set_user_disabled(sessions, "alice", True)
    assert disabled.disabled and disabled.token_version == 2
    assert [(u.username, u.disabled) for u in await list_users(sessions)] == [("alice", True)]
    enabled = await set_user_disabled(sessions, "alice", False)
    # Re-enabling does not revive the tokens held before the account was disabled.
    assert not enabled.disabled and enabled.token_version == 3


async def test_username_is_unique(sessions: SessionFactory) -> None:
    await create_user(sessions, "alice", "s3cret-pass")

    with pytest.raises(AlreadyExistsError, match="'alice'"):
        await create_user(sessions, "alice", "other-pass-1", role="admin")
    assert len(await list_users(sessions)) == 1


@pytest.mark.parametrize(
    ("username", "password", "role", "field"),
    [
        ("al", "s3cret-pass", "trader", "username"),
        ("a" * 65, "s3cret-pass", "trader", "username"),
        ("al ice", "s3cret-pass", "trader", "username"),
        ("alice", "short", "trader", "password"),
        ("alice", "x" * 73, "trader", "password"),
        ("alice", "s3cret-pass", "root", "role"),
    ],
)
async def test_invalid_user_is_refused(
    sessions: SessionFactory, username: str, password: str, role: str, field: str
) -> None:
    with pytest.raises(ConfigValidationError) as caught:
        await create_user(sessions, username, password, role=role)
    assert caught.value.field == field
    assert await list_users(sessions) == []


async def test_user_updates_on_unknown_user(sessions: SessionFactory) -> None:
    with pytest.raises(NotFoundError):
        await set_password(sessions, "nobody", "s3cret-pass")
    with pytest.raises(NotFoundError):
        await set_user_disabled(sessions, "nobody", True)


# -- the embedded default, end to end --------------------------------------------------


async def test_full_flow_on_the_sqlite_default(tmp_path: Path) -> None:
    """The flow an operator runs on a fresh laptop, on the embedded SQLite default."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/var/alpha_panda.db")
    try:
        assert await upgrade(engine)
        assert await upgrade(engine) == []
        sessions = session_factory(engine)
        assert await seed_demo_strategies(sessions) == ["momentum-nifty", "meanrev-it"]
        await set_param(sessions, "momentum-nifty", {"threshold_pct": "0.1"})
        await set_enabled(sessions, "meanrev-it", False)
        await add_halt(sessions, "momentum-nifty", "checking", "ops")
        await create_user(sessions, "operator", "s3cret-pass", role="admin")

        config = await load_runtime_config(sessions)
        assert [s.strategy_id for s in config.enabled_strategies] == ["momentum-nifty"]
        momentum = next(s for s in config.strategies if s.strategy_id == "momentum-nifty")
        assert momentum.parameters["threshold_pct"] == "0.1"
        assert config.halted_strategies == frozenset({"momentum-nifty"}) and not config.halt_all
        assert all(s.updated_at.tzinfo is UTC for s in config.strategies)
    finally:
        await engine.dispose()
    assert (tmp_path / "var" / "alpha_panda.db").is_file()
