"""`alpha-panda db|strategies|users|halt|resume` end to end against PostgreSQL.

The CLI reads the database URL from the environment through ``get_settings()``, which is
cached per process; every run clears that cache so the test's URL is the one used.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.cli import main
from alpha_panda.db import HALT_ALL
from alpha_panda.pipeline_record import write_record
from alpha_panda.settings import get_settings, load_settings
from models.db import SCHEMA_VERSION

pytestmark = pytest.mark.integration
T_ACK = datetime(2026, 1, 5, 9, 15, tzinfo=UTC)


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def bare_cli(
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Iterator[Cli]:
    """Run the CLI against a fresh database that has no schema yet."""
    monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", pg_url)
    # Its own data directory: no pipeline record of a real deployment on this machine.
    monkeypatch.setenv("ALPHA_PANDA_DATA_DIR", str(tmp_path / "data"))

    def run(*argv: str, stdin: str | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        get_settings.cache_clear()
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    yield run
    # Later tests must not inherit settings built from this test's environment.
    get_settings.cache_clear()


@pytest.fixture
def cli(bare_cli: Cli) -> Cli:
    assert bare_cli("db", "upgrade").code == 0
    return bare_cli


def test_db_upgrade_reports_then_is_up_to_date(bare_cli: Cli) -> None:
    first = bare_cli("db", "upgrade")
    second = bare_cli("db", "upgrade")

    assert first.code == 0
    assert "created table strategy_configurations" in first.out
    assert f"recorded schema version {SCHEMA_VERSION}" in first.out
    assert second.code == 0
    assert "schema up to date" in second.out
    assert "created table" not in second.out


def test_commands_before_upgrade_point_at_db_upgrade(bare_cli: Cli) -> None:
    result = bare_cli("strategies", "list")

    assert result.code == 1
    assert "alpha-panda db upgrade" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_add_then_list(cli: Cli) -> None:
    added = cli(
        "strategies", "add", "mom-1", "--kind", "momentum",
        "--instrument", "256265:NIFTY 50", "--instrument", "738561:RELIANCE",
        "--param", "lookback=7", "--risk", "max_order_quantity=50", "--mode", "paper",
    )  # fmt: skip
    listed = cli("strategies", "list", "--json")
    table = cli("strategies", "list")

    assert added.code == 0, added.err
    assert "added mom-1" in added.out
    assert listed.code == 0
    [record] = json.loads(listed.out)
    assert record["strategy_id"] == "mom-1"
    assert record["instruments"] == [
        {"token": 256265, "symbol": "NIFTY 50"},
        {"token": 738561, "symbol": "RELIANCE"},
    ]
    # lookback as given; the rest from StrategyFactory.default_params("momentum").
    assert record["parameters"] == {"lookback": 7, "threshold_pct": "0.5", "quantity": 10}
    assert record["risk_limits"] == {"max_order_quantity": 50}
    assert record["enabled"] is True
    assert record["execution_mode"] == "paper"
    assert record["halted"] is False
    assert "mom-1" in table.out and "lookback=7" in table.out


def test_add_disabled_live(cli: Cli) -> None:
    assert cli(
        "strategies", "add", "mr-1", "--kind", "mean_reversion", "--instrument", "2953217:TCS",
        "--mode", "live", "--disabled",
    ).code == 0  # fmt: skip

    [record] = json.loads(cli("strategies", "list", "--json").out)
    assert record["enabled"] is False
    assert record["execution_mode"] == "live"


def test_unknown_kind_exits_2_naming_the_kind(cli: Cli) -> None:
    result = cli("strategies", "add", "x", "--kind", "turtle", "--instrument", "1:ABC")

    assert result.code == 2
    assert "'turtle'" in result.err
    assert "momentum" in result.err  # says what would have been accepted
    assert json.loads(cli("strategies", "list", "--json").out) == []


def test_bad_parameter_exits_2_naming_the_parameter(cli: Cli) -> None:
    result = cli(
        "strategies", "add", "x", "--kind", "momentum", "--instrument", "1:ABC",
        "--param", "lookback=-3",
    )  # fmt: skip

    assert result.code == 2
    assert "lookback" in result.err
    assert "greater than" in result.err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--param", "lookbak=3"], "lookbak"),
        (["--param", "lookback"], "--param"),
        (["--risk", "max_bananas=1"], "max_bananas"),
        (["--risk", "max_daily_loss=0"], "max_daily_loss"),
        (["--instrument", "NIFTY"], "--instrument"),
    ],
)
def test_other_bad_input_exits_2(cli: Cli, extra: list[str], named: str) -> None:
    result = cli("strategies", "add", "x", "--kind", "momentum", "--instrument", "1:ABC", *extra)

    assert result.code == 2
    assert named in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_duplicate_id_exits_2(cli: Cli) -> None:
    argv = ("strategies", "add", "x", "--kind", "momentum", "--instrument", "1:ABC")
    assert cli(*argv).code == 0

    result = cli(*argv)
    assert result.code == 2
    assert "already exists" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        ("strategies", "enable", "ghost"),
        ("strategies", "disable", "ghost"),
        ("strategies", "show", "ghost"),
        ("strategies", "set-param", "ghost", "quantity=1"),
        ("halt", "--strategy", "ghost"),
        ("resume", "--strategy", "ghost"),
        ("users", "disable", "ghost"),
        ("users", "enable", "ghost"),
    ],
)
def test_unknown_id_exits_1(cli: Cli, argv: tuple[str, ...]) -> None:
    result = cli(*argv)

    assert result.code == 1
    assert "'ghost' not found" in result.err


def test_enable_disable_and_set_param(cli: Cli) -> None:
    cli("strategies", "add", "x", "--kind", "momentum", "--instrument", "1:ABC")

    assert cli("strategies", "disable", "x").out.strip() == "strategy x disabled"
    assert json.loads(cli("strategies", "show", "x", "--json").out)["enabled"] is False
    assert cli("strategies", "enable", "x").code == 0
    assert json.loads(cli("strategies", "show", "x", "--json").out)["enabled"] is True

    changed = cli("strategies", "set-param", "x", "threshold_pct=0.2", "quantity=3")
    assert changed.code == 0, changed.err
    params = json.loads(cli("strategies", "show", "x", "--json").out)["parameters"]
    assert params == {"lookback": 5, "threshold_pct": "0.2", "quantity": 3}

    refused = cli("strategies", "set-param", "x", "quantity=0")
    assert refused.code == 2
    assert "quantity" in refused.err
    params = json.loads(cli("strategies", "show", "x", "--json").out)["parameters"]
    assert params["quantity"] == 3


def test_seed_demo_only_once(cli: Cli) -> None:
    first = cli("strategies", "seed-demo")
    second = cli("strategies", "seed-demo")

    assert first.code == 0
    assert "created demo strategy momentum-nifty" in first.out
    assert "created demo strategy meanrev-it" in first.out
    assert second.code == 0
    assert "nothing seeded" in second.out
    ids = [r["strategy_id"] for r in json.loads(cli("strategies", "list", "--json").out)]
    assert ids == ["meanrev-it", "momentum-nifty"]


def test_halt_and_resume(cli: Cli) -> None:
    cli("strategies", "seed-demo")

    halted = cli("halt", "--strategy", "meanrev-it", "--reason", "odd fills")
    assert halted.code == 0
    assert "halted strategy meanrev-it: odd fills" in halted.out
    again = cli("halt", "--strategy", "meanrev-it")
    assert again.code == 0 and "already halted" in again.out and "odd fills" in again.out
    records = {r["strategy_id"]: r for r in json.loads(cli("strategies", "list", "--json").out)}
    assert records["meanrev-it"]["halted"] and not records["momentum-nifty"]["halted"]

    assert cli("halt", "--all", "--reason", "exchange outage").code == 0
    listed = cli("halt", "--list").out
    assert "all trading" in listed and "exchange outage" in listed
    records = {r["strategy_id"]: r for r in json.loads(cli("strategies", "list", "--json").out)}
    assert all(r["halted"] for r in records.values())

    resumed = cli("resume", "--strategy", "meanrev-it")
    assert resumed.code == 0
    assert "resumed strategy meanrev-it" in resumed.out
    assert "all trading is still halted" in resumed.out
    assert cli("resume", "--all").out.splitlines()[-1] == "resumed all trading"
    assert cli("resume", "--all").out.splitlines()[-1] == "all trading was not halted"
    assert cli("halt", "--list").out.splitlines()[-1] == "no halts in force"


def test_halt_and_resume_say_which_database_and_status_shows_the_acknowledgement(
    cli: Cli, pg_url: str
) -> None:
    masked = pg_url  # no password in the test URL, so masking changes nothing
    halted = cli("halt", "--all", "--reason", "exchange outage")
    assert halted.out.splitlines()[0] == f"database: {masked}"

    status = cli("status")
    assert status.code == 0
    lines = status.out.splitlines()
    assert lines[0] == f"database: {masked}"
    assert lines[1].startswith("pipeline: no record in ")
    assert "HALTED" in lines
    assert (
        "exchange outage; NOT YET APPLIED by a risk manager; NOT YET APPLIED by a trading engine"
        in status.out
    )

    # What the risk manager does once its kill switch holds the halt.
    async def acknowledge() -> list[str]:
        engine = db.create_engine(pg_url)
        try:
            sessions = db.session_factory(engine)
            config = await db.load_runtime_config(sessions)
            return await db.acknowledge_halts(sessions, config.unapplied_halts, T_ACK)
        finally:
            await engine.dispose()

    assert asyncio.run(acknowledge()) == [HALT_ALL]
    assert asyncio.run(acknowledge()) == []  # once only
    status = cli("status", "--json")
    body = json.loads(status.out)
    assert body["halted"] is True
    assert body["halts"][0]["applied_at"] == "2026-01-05T09:15:00Z"
    assert "applied by the risk manager 2026-01-05 09:15:00Z" in cli("status").out
    assert body["halts"][0]["engine_applied_at"] is None

    # What the trading engine does once it refuses to execute for the halt.
    async def engine_acknowledges() -> list[str]:
        engine = db.create_engine(pg_url)
        try:
            sessions = db.session_factory(engine)
            config = await db.load_runtime_config(sessions)
            return await db.acknowledge_halts(
                sessions, config.engine_unapplied_halts, T_ACK, engine=True
            )
        finally:
            await engine.dispose()

    assert asyncio.run(engine_acknowledges()) == [HALT_ALL]
    assert asyncio.run(engine_acknowledges()) == []
    assert (
        "applied by the risk manager 2026-01-05 09:15:00Z; "
        "applied by the trading engine 2026-01-05 09:15:00Z"
    ) in cli("status").out
    waited = cli("halt", "--all", "--wait", "1")  # already applied: returns at once
    assert waited.code == 0 and "applied by the risk manager" in waited.out

    resumed = cli("resume", "--all")
    assert resumed.out.splitlines() == [f"database: {masked}", "resumed all trading"]
    assert cli("status").out.splitlines()[-1] == "no halts in force"


def test_halt_wait_fails_when_no_risk_manager_applies_it(cli: Cli) -> None:
    waited = cli("halt", "--all", "--wait", "0.5")
    assert waited.code == 1
    assert "no risk manager applied the halt within 0.5 s" in waited.err
    assert "no pipeline record" in waited.err


def test_a_new_empty_database_is_refused_while_the_pipeline_uses_another(
    bare_cli: Cli, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pipeline (a stage's first config load) recorded the database it uses.
    settings = load_settings(data_dir=tmp_path / "data", database={"url": pg_url})
    write_record(settings, "risk-manager")
    other = tmp_path / "elsewhere" / "alpha_panda.db"
    monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", f"sqlite+aiosqlite:///{other}")

    for argv in [("halt", "--all"), ("db", "upgrade"), ("status",), ("resume", "--all")]:
        refused = bare_cli(*argv)
        assert refused.code == 1, argv
        assert f"refusing to use a new, empty database at sqlite+aiosqlite:///{other}" in (
            refused.err
        ), argv
        assert f"the pipeline uses {pg_url} (recorded by risk-manager" in refused.err, argv
    assert not other.exists()  # nothing was created
    assert not other.parent.exists()

    forced = bare_cli("db", "upgrade", "--force")
    assert forced.code == 0 and other.is_file()
    # It has the schema now: commands use it (it is the operator's explicit choice).
    assert bare_cli("halt", "--list").code == 0


def test_a_missing_sqlite_database_is_not_created_by_a_store_command(
    bare_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data" / "alpha_panda.db"
    monkeypatch.delenv("ALPHA_PANDA_DATABASE_URL")  # the default: inside the data dir
    refused = bare_cli("halt", "--all")
    assert refused.code == 1
    assert f"no configuration database at sqlite+aiosqlite:///{target}" in refused.err
    assert not target.exists()

    created = bare_cli("db", "upgrade")  # no pipeline record: creating is fine
    assert created.code == 0 and target.is_file()
    assert bare_cli("halt", "--all").code == 0


def test_halt_needs_a_scope(cli: Cli) -> None:
    # argparse refuses it before any handler runs, with its usual exit status 2.
    with pytest.raises(SystemExit) as caught:
        cli("halt")
    assert caught.value.code == 2


def test_users(cli: Cli) -> None:
    created = cli("users", "create", "alice", "--role", "admin", "--password-stdin",
                  stdin="s3cret-pass\n")  # fmt: skip
    assert created.code == 0, created.err
    assert "created user alice (admin)" in created.out

    duplicate = cli("users", "create", "alice", "--password-stdin", stdin="s3cret-pass\n")
    assert duplicate.code == 2 and "already exists" in duplicate.err

    short = cli("users", "create", "bob", "--password-stdin", stdin="short\n")
    assert short.code == 2 and "at least 8 characters" in short.err

    assert (
        cli("users", "disable", "alice").out.strip()
        == "user alice disabled; their earlier API tokens are revoked"
    )
    [user] = json.loads(cli("users", "list", "--json").out)
    assert user["username"] == "alice" and user["role"] == "admin" and user["disabled"]
    assert "password_hash" not in user
    assert "alice" in cli("users", "list").out

    changed = cli("users", "set-password", "alice", "--password-stdin", stdin="new-pass-123\n")
    assert changed.code == 0 and "tokens are revoked" in changed.out
    [user] = json.loads(cli("users", "list", "--json").out)
    assert user["token_version"] == 2  # disable + password change
    missing = cli("users", "set-password", "ghost", "--password-stdin", stdin="new-pass-123\n")
    assert missing.code == 1


def test_users_create_prompts_twice(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["s3cret-pass", "s3cret-pasS"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    mismatch = cli("users", "create", "carol")
    assert mismatch.code == 2
    assert "do not match" in mismatch.err

    answers = iter(["s3cret-pass", "s3cret-pass"])
    assert cli("users", "create", "carol").code == 0


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        ("mysql://root@localhost/x", 2, "driver 'mysql' is not supported"),
        ("postgresql://postgres@127.0.0.1/x", 2, "driver 'postgresql' is not supported"),
        ("not a url", 2, "ALPHA_PANDA_DATABASE_URL is not a database URL"),
        # Port 9 (discard) on loopback: nothing listens, so the connection is refused.
        ("postgresql+asyncpg://u:hunter2@127.0.0.1:9/x", 1, "cannot reach database"),
    ],
)
def test_bad_database_url(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    code: int,
    message: str,
) -> None:
    monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["strategies", "list"]) == code
    finally:
        get_settings.cache_clear()

    err = capsys.readouterr().err
    assert message in err
    assert "hunter2" not in err
    assert len(err.strip().splitlines()) == 1
