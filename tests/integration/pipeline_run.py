"""`alpha-panda run` as a subprocess for integration tests (what `make run` starts)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from alpha_panda.broker import free_port
from alpha_panda.settings import Stage
from tests.integration.harness import Deployment, StageProcess

ALPHA_PANDA = str(Path(sys.executable).with_name("alpha-panda"))


class Run:
    """One `alpha-panda run` subprocess with its own embedded broker and data directory."""

    def __init__(
        self,
        tmp_path: Path,
        stages: list[Stage],
        *,
        deployment: Deployment | None = None,
        env: dict[str, str] | None = None,
        name: str = "run",
    ) -> None:
        # Passing the previous run's deployment starts again on the same data directory.
        self.deployment = deployment or Deployment(
            bootstrap=f"127.0.0.1:{free_port()}",
            data_dir=tmp_path / "var",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'config.db'}",
            extra_env={
                "ALPHA_PANDA_REDIS_ENABLED": "false",
                "ALPHA_PANDA_FEED_TICKS_PER_SECOND": "50",
            },
        )
        run_env = self.deployment.env(Stage.MARKET_FEED)
        del run_env["ALPHA_PANDA_STAGE"]
        run_env.update(env or {})
        self.out_path = tmp_path / f"{name}.out"
        self.stages = stages
        with self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [ALPHA_PANDA, "run", "--stages", ",".join(s.value for s in stages)],
                env=run_env,
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
