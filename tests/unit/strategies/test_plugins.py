"""Strategy plug-ins: entry points and import paths, and broken ones skipped with a reason.

The broken plug-ins are a real (if tiny) installed distribution: a ``*.dist-info`` with
``entry_points.txt`` on ``sys.path``, which is what ``pip install`` leaves behind.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alpha_panda.db import InstrumentRef, RuntimeConfig, StrategyConfigRecord
from alpha_panda.domain.strategy_host import StrategyHost
from models.events import ExecutionMode
from strategies import StrategyConfigError, StrategyFactory

GOOD = """
from typing import ClassVar
from pydantic import field_validator
from models.events import MarketTick
from strategies.base import BaseStrategy, StrategyParams

class AlwaysIn(BaseStrategy[StrategyParams]):
    kind: ClassVar[str] = "always_in"
    params_model: ClassVar[type[StrategyParams]] = StrategyParams

    def _history_size(self) -> int:
        return 1

    def _entry_reason(self, tick: MarketTick) -> str | None:
        return "always"

    def _exit_reason(self, tick: MarketTick) -> str | None:
        return None

class Misnamed(AlwaysIn):
    kind: ClassVar[str] = "not_its_entry_point_name"

class BuggyParams(StrategyParams):
    @field_validator("quantity")
    @classmethod
    def _boom(cls, value: int) -> int:
        raise TypeError("bug in the plug-in's validator")

class Buggy(AlwaysIn):
    kind: ClassVar[str] = "buggy"
    params_model: ClassVar[type[StrategyParams]] = BuggyParams
"""

ENTRY_POINTS = """
[alpha_panda.strategies]
always_in = plugin_good:AlwaysIn
raises_on_import = plugin_raises:Anything
not_a_strategy = plugin_good:MarketTick
misnamed = plugin_good:Misnamed
momentum = plugin_good:AlwaysIn
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "plugin_good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "plugin_raises.py").write_text("raise RuntimeError('missing API key')\n")
    dist = tmp_path / "alpha_panda_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: alpha-panda-test-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    StrategyFactory.reload_plugins()
    yield
    StrategyFactory.reload_plugins()


def test_an_entry_point_plugin_becomes_a_kind(installed: None) -> None:
    assert "always_in" in StrategyFactory.known_kinds()
    assert StrategyFactory.strategy_class("always_in").__name__ == "AlwaysIn"
    # No defaults declared: every parameter must be given, and is validated.
    assert StrategyFactory.default_params("always_in") == {}
    with pytest.raises(StrategyConfigError, match="quantity"):
        StrategyFactory.validate_params("always_in", {}, "x")


def test_broken_entry_points_are_skipped_each_with_its_reason(installed: None) -> None:
    kinds = StrategyFactory.known_kinds()
    for broken in ("raises_on_import", "not_a_strategy", "misnamed"):
        assert broken not in kinds
    assert StrategyFactory.strategy_class("momentum").__name__ == "SimpleMomentumStrategy"
    problems = "\n".join(StrategyFactory.plugin_problems())
    assert "'raises_on_import' (plugin_raises:Anything) skipped: RuntimeError: missing API key" in (
        problems
    )
    assert "'not_a_strategy' (plugin_good:MarketTick) skipped: ValueError:" in problems
    assert "is not a BaseStrategy subclass" in problems
    assert "its class says kind 'not_its_entry_point_name'" in problems
    assert "'momentum' (plugin_good:AlwaysIn) skipped: kind 'momentum' is already taken" in (
        problems
    )


def test_an_import_path_is_a_kind_without_registration(installed: None) -> None:
    cls = StrategyFactory.strategy_class("plugin_good:AlwaysIn")
    assert cls.kind == "always_in"
    with pytest.raises(StrategyConfigError) as error:
        StrategyFactory.strategy_class("plugin_raises:Anything", "s-1")
    assert error.value.field == "kind"
    assert "cannot import 'plugin_raises:Anything': RuntimeError: missing API key" in str(
        error.value
    )
    with pytest.raises(StrategyConfigError, match="no_such_module"):
        StrategyFactory.strategy_class("no_such_module:X")
    with pytest.raises(StrategyConfigError, match="not a BaseStrategy subclass"):
        StrategyFactory.strategy_class("json:dumps")


def record(strategy_id: str, kind: str, parameters: dict[str, object]) -> StrategyConfigRecord:
    return StrategyConfigRecord(
        strategy_id=strategy_id,
        kind=kind,
        instruments=(InstrumentRef(token=738561, symbol="RELIANCE"),),
        parameters=parameters,
        enabled=True,
        execution_mode=ExecutionMode.PAPER,
        risk_limits={},
        updated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_host_skips_broken_plugins_and_runs_the_rest(installed: None) -> None:
    host = StrategyHost()
    problems = host.configure(
        RuntimeConfig(
            strategies=(
                record("good", "always_in", {"quantity": 3}),
                record("by-path", "plugin_good:AlwaysIn", {"quantity": 4}),
                record("raises", "plugin_raises:Anything", {"quantity": 1}),
                record("bad-params", "always_in", {"quantity": 0}),
                record("unknown", "raises_on_import", {"quantity": 1}),
                record("buggy", "plugin_good:Buggy", {"quantity": 1}),
            ),
            halt_all=False,
            halted_strategies=frozenset(),
            halt_reasons={},
        )
    )
    assert sorted(a.strategy_id for a in host.assignments_for(738561)) == ["by-path", "good"]
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "strategy 'buggy': parameters of kind 'plugin_good:Buggy' could not be validated: " in (
        text
    )
    assert "TypeError: bug in the plug-in's validator" in text
    assert "strategy 'raises': parameter 'kind': cannot import" in text
    assert "strategy 'bad-params': parameter 'quantity':" in text
    assert "strategy 'unknown': parameter 'kind': unknown strategy kind" in text
