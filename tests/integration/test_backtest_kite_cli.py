"""`alpha-panda backtest --kite-historical` against the local Kite server run as its own
process (`alpha-panda zerodha fake`), the access token given on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ALPHA_PANDA = str(Path(sys.executable).with_name("alpha-panda"))
CONFIG = """
[[strategies]]
strategy_id = "mr"
kind = "mean_reversion"
instruments = [[408065, "INFY"], [2953217, "TCS"]]
parameters = { window = 8, entry_z = "1.2", exit_z = "0.2", quantity = 5 }
"""


@pytest.fixture
def kite_server() -> Iterator[tuple[str, str]]:
    """(root URL, access token) of a local Kite server in its own process."""
    proc = subprocess.Popen(
        [ALPHA_PANDA, "zerodha", "fake", "--port", "0", "--issue-token", "--tick-interval", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        found: dict[str, str] = {}
        for line in proc.stdout:  # it prints its addresses once it is listening
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("root_url", "access_token"):
                found[parts[0]] = parts[1]
            if len(found) == 2:
                break
        assert len(found) == 2, "the local Kite server did not start"
        yield found["root_url"], found["access_token"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def backtest(
    root_url: str, token: str, out: Path, config: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
    return subprocess.run(
        [
            ALPHA_PANDA,
            "backtest",
            "--kite-historical",
            "minute",
            "--from",
            "2026-11-27T09:15:00+05:30",
            "--to",
            "2026-11-27T10:14:00+05:30",
            "--kite-url",
            root_url,
            "--kite-api-key",
            "fake_api_key",
            "--kite-access-token-stdin",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        input=token + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backtest_over_kite_historical_candles(
    kite_server: tuple[str, str], tmp_path: Path
) -> None:
    root_url, token = kite_server
    config = tmp_path / "strategies.toml"
    config.write_text(CONFIG)
    done = backtest(root_url, token, tmp_path / "out", config)
    assert done.returncode == 0, done.stderr
    assert "480 ticks" in done.stdout  # 60 one-minute candles x 2 instruments x 4 ticks
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ticks"] == 480 and summary["fills"] > 0
    assert token not in done.stdout + done.stderr

    refused = backtest(root_url, "0" * 32, tmp_path / "refused", config)
    assert refused.returncode == 1
    assert "Kite historical data" in refused.stderr and "TokenException" in refused.stderr
    assert "0" * 32 not in refused.stderr
