"""`alpha-panda run` as a supervisor: what dies comes back, and nothing outlives it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from tests.integration.harness import Deployment, StageProcess, metric, wait_for
from tests.integration.pipeline_run import Run, alive, wait_gone

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Run]:
    run = Run(tmp_path, [Stage.TRADING_ENGINE, Stage.MARKET_FEED])
    try:
        yield run
    finally:
        run.stop()


def test_a_killed_stage_comes_back_and_sighup_leaves_nothing_running(pipeline: Run) -> None:
    engine_pid = pipeline.health_pid(Stage.TRADING_ENGINE)
    feed_pid = pipeline.health_pid(Stage.MARKET_FEED)
    broker_pid = pipeline.broker_pid()

    os.kill(engine_pid, signal.SIGKILL)
    new_engine_pid = pipeline.health_pid(Stage.TRADING_ENGINE, not_pid=engine_pid)
    assert new_engine_pid != engine_pid
    # The others were left alone: same feed worker, same broker.
    assert pipeline.health_pid(Stage.MARKET_FEED) == feed_pid
    assert alive(broker_pid)
    assert "trading-engine exited with -9" in pipeline.output()

    pipeline.proc.send_signal(signal.SIGHUP)
    assert pipeline.proc.wait(timeout=60) == 0, pipeline.output()
    assert wait_gone([new_engine_pid, feed_pid, broker_pid], timeout=5) == []
    assert "stopped cleanly" in pipeline.output()


def test_stages_and_broker_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    run = Run(tmp_path, [Stage.RISK_MANAGER])
    try:
        risk_pid = run.health_pid(Stage.RISK_MANAGER)
        broker_pid = run.broker_pid()
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(timeout=10)
        # The kernel (PR_SET_PDEATHSIG) sends each child SIGTERM: they stop by themselves.
        assert wait_gone([risk_pid, broker_pid], timeout=30) == []
    finally:
        run.stop()


def test_health_names_the_broker_within_seconds_of_losing_it(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    stage = StageProcess(deployment, Stage.MARKET_FEED).start()
    try:
        body = stage.wait_ready(require=f"broker {fresh_broker.bootstrap} answers")
        assert body["checks"]["broker"]["ok"]
        fresh_broker.process.kill()
        fresh_broker.process.wait()
        lost_at = time.monotonic()
        seen: dict[str, object] = {}

        def broker_failing() -> bool:
            status, body = stage.get("/health")
            seen.update(status=status, body=body)
            return status == 503 and "broker" in body["failing"]

        wait_for(broker_failing, timeout=10, what="/health to fail on the broker")
        detail = seen["body"]["checks"]["broker"]["detail"]  # type: ignore[index]
        assert f"broker {fresh_broker.bootstrap} unreachable" in detail
        print(f"/health turned 503 {time.monotonic() - lost_at:.1f}s after the broker died")
    finally:
        stage.kill()


def test_a_killed_broker_comes_back_and_every_stage_resumes(tmp_path: Path) -> None:
    run = Run(tmp_path, [Stage.STRATEGY_RUNNER, Stage.MARKET_FEED])
    try:
        runner_pid = run.health_pid(Stage.STRATEGY_RUNNER)
        feed_pid = run.health_pid(Stage.MARKET_FEED)
        broker_pid = run.broker_pid()
        os.kill(broker_pid, signal.SIGKILL)
        new_runner = run.health_pid(Stage.STRATEGY_RUNNER, not_pid=runner_pid)
        new_feed = run.health_pid(Stage.MARKET_FEED, not_pid=feed_pid)
        assert "broker exited with -9" in run.output()
        assert "broker back; stages restarted" in run.output()
        runner = run.stage(Stage.STRATEGY_RUNNER)
        # Ticks flow again through the new broker, into the restarted strategy runner.
        wait_for(
            lambda: metric(runner, "alpha_panda_messages_consumed_total") > 0,
            timeout=30,
            what="ticks consumed after the broker restart",
        )
        assert new_runner != runner_pid and new_feed != feed_pid
        assert "stopping" not in run.output()
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.output()


def test_a_stage_restarts_itself_once_after_a_broker_outage(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Outside `alpha-panda run` (a broker the supervisor does not own): the worker stops
    by itself when the broker is back after an outage longer than the group session, so
    its supervisor starts it afresh; it does not sit at 503 nor crash-loop."""
    settings = load_settings(broker={"url": fresh_broker.bootstrap})
    asyncio.run(ensure_topics(settings))
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )
    stage = StageProcess(deployment, Stage.MARKET_FEED).start()
    again = EmbeddedBroker(port=fresh_broker.port)
    try:
        stage.wait_ready(require=f"broker {fresh_broker.bootstrap} answers")
        fresh_broker.process.kill()
        fresh_broker.process.wait()

        def outage_s() -> float:
            status, body = stage.get("/health")
            detail = body["checks"]["broker"]["detail"] if status == 503 else ""
            match = re.search(r"unreachable for ([\d.]+)s", detail)
            return float(match.group(1)) if match else 0.0

        session = settings.broker.session_timeout_s
        wait_for(lambda: outage_s() > session, timeout=30, what="an outage past the session")
        assert stage.proc is not None and stage.proc.poll() is None  # no exit while it is away
        again.start()
        asyncio.run(ensure_topics(settings))
        stage.proc.wait(timeout=30)
        events = [e["event"] for e in stage.log_events()]
        assert events.count("broker_back_after_outage") == 1
        stage.start().wait_ready()  # what a supervisor does: it converges
    finally:
        stage.kill()
        again.stop()
