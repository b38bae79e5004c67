"""The stage specs (alpha_panda/stages.py) against the apps the factory builds: every
agent subscribes to exactly its spec's inputs and every table declared is in the spec, so
the replay tool, /health and the docs, which read the specs, describe the running stage."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from alpha_panda.factory import create_app
from alpha_panda.health import evaluate_health
from alpha_panda.settings import Stage, load_settings
from alpha_panda.stages import STAGES
from alpha_panda.topics import ALL_TOPICS_BY_NAME, Tables, changelog_topic
from tables.specs import ALL_TABLES


def test_every_stage_has_a_spec() -> None:
    assert set(STAGES) == set(Stage)
    assert all(spec.stage is stage for stage, spec in STAGES.items())


@pytest.mark.parametrize("stage", list(Stage), ids=lambda s: s.value)
def test_the_built_app_matches_its_spec(stage: Stage, tmp_path: Path) -> None:
    spec = STAGES[stage]
    app = create_app(load_settings(data_dir=tmp_path, redis={"enabled": False}), stage)
    assert app.conf.id == spec.consumer_group
    subscribed = {agent.name: agent.channel.topics for agent in app.agents.values()}
    assert subscribed == {a.name: tuple(t.name for t in a.inputs) for a in spec.agents}
    # Live orders are kept only with Zerodha configured (not in this test's settings).
    declared = {t.name for t in spec.tables} - {Tables.LIVE_ORDERS}
    assert set(app.tables.keys()) == declared
    for table in spec.tables:
        if table.name in declared:
            assert app.tables[table.name].partitions == table.partitions
            assert app.tables[table.name].changelog_topic.get_topic_name() == changelog_topic(
                spec.consumer_group, table.name
            )


@pytest.mark.parametrize("stage", list(Stage), ids=lambda s: s.value)
async def test_health_checks_what_the_spec_declares(stage: Stage, tmp_path: Path) -> None:
    spec = STAGES[stage]
    app = create_app(load_settings(data_dir=tmp_path, redis={"enabled": False}), stage)
    healthy, body = await evaluate_health(app.alpha_panda)
    assert body["stage"] == stage.value
    # Only a stage that consumes has a partition assignment to report (and a group to join).
    assert ("assignment" in body["checks"]) == bool(spec.inputs)
    assert app.producer_only == (not spec.inputs)
    # "tables" waits for the recovery of the changelogs of the tables the spec declares.
    recovered = {t.changelog_topic.get_topic_name() for t in app.tables.recovery.tables.values()}
    assert recovered == {
        changelog_topic(spec.consumer_group, t.name)
        for t in spec.tables
        if t.name != Tables.LIVE_ORDERS  # kept only with Zerodha configured
    }
    assert not healthy and body["checks"]["tables"] == {"ok": False, "detail": "recovering"}


def test_inputs_are_each_consumed_topic_once_in_agent_order() -> None:
    spec = STAGES[Stage.TRADING_ENGINE]
    flat = [t.name for a in spec.agents for t in a.inputs]
    assert [t.name for t in spec.inputs] == list(dict.fromkeys(flat))
    assert STAGES[Stage.MARKET_FEED].inputs == ()


def test_every_topic_and_table_of_a_spec_is_registered() -> None:
    for spec in STAGES.values():
        for topic in (*spec.inputs, *spec.outputs):
            assert ALL_TOPICS_BY_NAME[topic.name] is topic
        for table in spec.tables:
            assert table in ALL_TABLES


def test_each_input_is_some_stage_output_or_the_feed() -> None:
    produced = {t.name for spec in STAGES.values() for t in spec.outputs}
    for spec in STAGES.values():
        for topic in spec.inputs:
            assert topic.name in produced, (spec.stage, topic.name)


def test_run_agent_refuses_handlers_that_do_not_match_the_spec(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, redis={"enabled": False}), Stage.MARKET_FEED)
    ctx = app.alpha_panda
    spec = STAGES[Stage.TRADING_ENGINE].agent("engine-execute")

    async def handler(envelope: object, event: object) -> None:
        return None

    with pytest.raises(RuntimeError, match=r"missing \['alpha-panda.trading-engine"):
        ctx.run_agent(spec, {"market.ticks": handler})
    with pytest.raises(RuntimeError, match=r"not consumed \['orders.filled.paper'\]"):
        ctx.run_agent(
            spec, {t.name: handler for t in spec.inputs} | {"orders.filled.paper": handler}
        )
    assert "engine-execute" not in app.agents


def test_an_unknown_agent_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="risk-manager has no agent 'risk-execute'"):
        STAGES[Stage.RISK_MANAGER].agent("risk-execute")


def _stage_table_script() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "scripts" / "stage_table.py"
    spec = importlib.util.spec_from_file_location("stage_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_doc_shows_the_specs() -> None:
    script = _stage_table_script()
    doc = script.DOC.read_text()
    assert script.current(doc) == script.render(), (
        "docs/ARCHITECTURE.md's stage table differs from alpha_panda/stages.py: run `make docs`"
    )
    for spec in STAGES.values():  # the table is the specs', not an empty one that matches
        assert f"| {spec.stage.value} | `{spec.consumer_group}` |" in script.render()
