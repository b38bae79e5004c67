"""A CLI whose reader closed the pipe (`alpha-panda status | head -0`) exits quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_a_closed_pipe_ends_the_cli_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
    env["ALPHA_PANDA_DATA_DIR"] = str(tmp_path)
    cli = [sys.executable, "-m", "alpha_panda.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)

    proc = subprocess.Popen(
        [*cli, "status"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Closed long before the interpreter has started and imported enough to print.
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports `yes | head`
    assert stderr == ""
