"""`alpha-panda zerodha fake` as a user runs it: a process serving on loopback, SIGTERM stops it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from alpha_panda.cli import main

pytestmark = pytest.mark.integration


def test_fake_server_process_serves_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alpha_panda.cli",
            "zerodha",
            "fake",
            "--port",
            "0",
            "--issue-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 2:
                lines[parts[0]] = parts[1]
            if "access_token" in lines:
                break
        root = lines["root_url"]
        assert root.startswith("http://127.0.0.1:") and lines["ws_url"].endswith("/ws")
        request = urllib.request.Request(
            f"{root}/orders",
            headers={
                "X-Kite-Version": "3",
                "Authorization": f"token fake_api_key:{lines['access_token']}",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.loads(resp.read()) == {"status": "success", "data": []}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_fake_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zerodha", "fake", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err
