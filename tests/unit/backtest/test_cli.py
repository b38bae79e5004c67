"""`alpha-panda backtest` from a configuration file: outputs, errors, sweeps."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.backtest.config import load_file
from alpha_panda.backtest.engine import BacktestConfigError, BacktestSetup
from alpha_panda.backtest.runner import RandomWalkSource, grid, parse_param, sweep
from alpha_panda.backtest.sources import OnBadInput
from alpha_panda.cli import main
from alpha_panda.settings import load_settings

INSTRUMENTS = "256265:NIFTY 50:22000,738561:RELIANCE:2900"
CONFIG = """
[[strategies]]
strategy_id = "mom"
kind = "momentum"
instruments = [[256265, "NIFTY 50"], [738561, "RELIANCE"]]
parameters = { lookback = 5, threshold_pct = "0.2", quantity = 10 }

[[strategies]]
strategy_id = "mr"
kind = "mean_reversion"
instruments = [[738561, "RELIANCE"]]
parameters = { window = 10, entry_z = "1.5", exit_z = "0.2", quantity = 5 }
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies.toml"
    path.write_text(CONFIG)
    return path


def run_cli(*args: str) -> int:
    return main(["backtest", *args])


def test_backtest_writes_summary_csv_json_and_a_self_contained_report(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = run_cli(
        "--config", str(config_file), "--random-walk", "3000", "--instruments", INSTRUMENTS,
        "--seed", "3", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "3000 ticks" in printed
    assert re.search(r"^mom\s+\d+", printed, re.M) and re.search(r"^mr\s+\d+", printed, re.M)

    summary = json.loads((out / "summary.json").read_text())
    fills = list(csv.DictReader((out / "fills.csv").open()))
    assert summary["ticks"] == 3000
    assert summary["fills"] == len(fills) > 0
    fees = sum(Decimal(f["fees"]) for f in fills if f["strategy_id"] == "mom")
    mom = next(s for s in summary["strategies"] if s["strategy_id"] == "mom")
    assert Decimal(mom["fees"]) == fees
    assert Decimal(mom["gross_pnl"]) - Decimal(mom["fees"]) == Decimal(mom["net_pnl"])

    equity = list(csv.DictReader((out / "equity.csv").open()))
    assert {row["strategy_id"] for row in equity} == {"mom", "mr"}
    assert all(Decimal(row["drawdown"]) >= 0 for row in equity)

    html = (out / "report.html").read_text()
    assert html.count("<svg") == 2
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", html)


def test_same_inputs_same_outputs(config_file: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert (
            run_cli(
                "--config",
                str(config_file),
                "--random-walk",
                "1500",
                "--instruments",
                INSTRUMENTS,
                "--out",
                str(tmp_path / name),
                "--no-progress",
            )
            == 0
        )
    for file in ("fills.csv", "equity.csv", "summary.json", "report.html"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_bad_parameter_in_the_file_names_strategy_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace("lookback = 5", "lookback = 0"))
    assert run_cli("--config", str(path), "--random-walk", "10") == 2
    err = capsys.readouterr().err
    assert "strategies[0] (mom)" in err and "parameters.lookback" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strategies = []", "non-empty list 'strategies'"),
        ('[[strategies]]\nstrategy_id = "x"\nkind = "momentum"', "'instruments' is required"),
        (
            '[[strategies]]\nstrategy_id = "x"\nkind = "momentum"\ninstruments = [[1, "A"]]\n'
            "colour = 1",
            "unknown field(s) colour",
        ),
        ("[[strategies]\n", "not valid toml"),
    ],
)
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(BacktestConfigError, match=re.escape(message)):
        load_file(path)


def test_json_config_is_the_same_shape(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "strategies": [
                    {
                        "strategy_id": "m",
                        "kind": "momentum",
                        "instruments": [{"token": 1, "symbol": "A"}],
                        "parameters": {"lookback": 3},
                    }
                ]
            }
        )
    )
    (record,) = load_file(path).strategies
    assert record.parameters["lookback"] == 3
    assert record.parameters["threshold_pct"] == "0.5"  # the kind's default


def test_unknown_strategy_and_bad_sweep_value_are_usage_errors(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("--config", str(config_file), "--random-walk", "10", "--strategy", "zz") == 2
    assert "unknown strategy zz (known: mom, mr)" in capsys.readouterr().err
    assert (
        run_cli("--config", str(config_file), "--random-walk", "10", "--param", "window=1,5") == 2
    )
    assert "parameter 'window'" in capsys.readouterr().err
    assert run_cli("--config", str(config_file), "--random-walk", "10", "--param", "nope=1") == 2
    assert "no strategy in this run has that parameter" in capsys.readouterr().err


def test_sweep_grid_is_ranked_and_deterministic(config_file: Path) -> None:
    settings = load_settings()
    setup = BacktestSetup.from_settings(load_file(config_file), settings)
    source = RandomWalkSource(
        INSTRUMENTS, 9, Decimal("8"), 2000, datetime(2026, 1, 5, 3, 45, tzinfo=UTC),
        timedelta(milliseconds=200),
    )  # fmt: skip
    params = [parse_param("mom.lookback=3,5"), parse_param("threshold_pct=0.2,0.5")]
    assert grid(setup.config, params) == [
        {"mom.lookback": "3", "threshold_pct": "0.2"},
        {"mom.lookback": "3", "threshold_pct": "0.5"},
        {"mom.lookback": "5", "threshold_pct": "0.2"},
        {"mom.lookback": "5", "threshold_pct": "0.5"},
    ]
    serial = sweep(source, setup, OnBadInput.REFUSE, params, jobs=1)
    parallel = sweep(source, setup, OnBadInput.REFUSE, params, jobs=2)
    assert serial == parallel
    assert sorted(r.index for r in serial) == [0, 1, 2, 3]
    pnls = [r.net_pnl for r in serial]
    assert pnls == sorted(pnls, reverse=True)
    # mr has no lookback or threshold: every run trades it the same way.
    assert len({r.summaries[1] for r in serial}) == 1
    assert len({r.summaries[0].net_pnl for r in serial}) > 1


def test_selection_enables_named_strategies_and_paper_trades_live_ones(tmp_path: Path) -> None:
    from alpha_panda.backtest.config import select
    from models.events import ExecutionMode

    path = tmp_path / "c.toml"
    path.write_text(
        CONFIG.replace('kind = "momentum"', 'kind = "momentum"\nexecution_mode = "live"').replace(
            'kind = "mean_reversion"', 'kind = "mean_reversion"\nenabled = false'
        )
    )
    config = load_file(path)
    assert [s.strategy_id for s in select(config, []).strategies] == ["mom"]
    chosen = select(config, ["mr", "mom"]).strategies
    assert [(s.strategy_id, s.enabled, s.execution_mode) for s in chosen] == [
        ("mr", True, ExecutionMode.PAPER),
        ("mom", True, ExecutionMode.PAPER),
    ]


def test_sweep_from_the_command_line_prints_a_ranked_table(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "--config", str(config_file), "--random-walk", "1500", "--instruments", INSTRUMENTS,
        "--param", "mom.lookback=3,5", "--param", "window=10,20", "--jobs", "1",
        "--rank-by", "max_drawdown",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("4 runs, ranked by max_drawdown")
    rows = [line.split() for line in out.splitlines()[3:]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert sorted((r[1], r[2]) for r in rows) == [
        ("3", "10"),
        ("3", "20"),
        ("5", "10"),
        ("5", "20"),
    ]
    drawdowns = [Decimal(r[6]) for r in rows]
    assert drawdowns == sorted(drawdowns)


def test_progress_line_shows_ticks_and_rate_once_past_its_delay() -> None:
    import io

    from alpha_panda.backtest.runner import Progress

    out = io.StringIO()
    progress = Progress(2048, after_s=0.0, out=out)
    progress(1024)
    progress(2048)
    progress.close()
    text = out.getvalue()
    assert "[###############...............]  50.0% 1,024 ticks" in text
    assert "100.0% 2,048 ticks" in text and "ticks/s" in text and text.endswith("\n")
    quiet = io.StringIO()
    late = Progress(None, after_s=3600.0, out=quiet)
    late(10)
    late.close()
    assert quiet.getvalue() == ""


def test_missing_or_empty_configuration_database_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from alpha_panda.settings import get_settings

    missing = tmp_path / "none" / "config.db"
    monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", f"sqlite+aiosqlite:///{missing}")
    get_settings.cache_clear()
    try:
        assert run_cli("--random-walk", "10") == 2
        assert "no configuration database at" in capsys.readouterr().err
        assert not missing.parent.exists()  # nothing created as a side effect
        empty = tmp_path / "empty.db"
        empty.touch()
        monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", f"sqlite+aiosqlite:///{empty}")
        get_settings.cache_clear()
        assert run_cli("--random-walk", "10") == 2
        assert "no such table: strategy_configurations" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
