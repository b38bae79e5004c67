"""`alpha-panda run` as a supervisor: what dies comes back, and nothing outlives it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker, free_port
from alpha_panda.settings import Stage, load_settings
from tests.integration.harness import Deployment, StageProcess, metric, wait_for

pytestmark = pytest.mark.integration

ALPHA_PANDA = str(Path(sys.executable).with_name("alpha-panda"))


class Run:
    """One `alpha-panda run` subprocess with its own embedded broker and data directory."""

    def __init__(self, tmp_path: Path, stages: list[Stage]) -> None:
        self.deployment = Deployment(
            bootstrap=f"127.0.0.1:{free_port()}",
            data_dir=tmp_path / "var",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'config.db'}",
        )
        env = self.deployment.env(Stage.MARKET_FEED)
        del env["ALPHA_PANDA_STAGE"]
        env["ALPHA_PANDA_REDIS_ENABLED"] = "false"
        env["ALPHA_PANDA_FEED_TICKS_PER_SECOND"] = "50"
        self.out_path = tmp_path / "run.out"
        self.stages = stages
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [ALPHA_PANDA, "run", "--stages", ",".join(s.value for s in stages)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stage(self, stage: Stage) -> StageProcess:
        return StageProcess(self.deployment, stage)

    def health_pid(self, stage: Stage, *, not_pid: int | None = None, timeout: float = 90) -> int:
        """The pid of the stage's worker once its /health says ready (and is not `not_pid`)."""
        probe = self.stage(stage)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                status, body = probe.get("/health")
                last = body
                if status == 200 and isinstance(body, dict) and body["pid"] != not_pid:
                    return int(body["pid"])
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{stage.value} not ready in {timeout}s: {last}\n{self.output()}")

    def broker_pid(self) -> int:
        match = re.search(r"embedded broker on \S+ \(pid (\d+)", self.output())
        assert match, self.output()
        return int(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


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
