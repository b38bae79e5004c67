"""`alpha-panda run`: it stops on SIGTERM wherever the signal finds it, and refuses live
trading against the real Kite with the trading-day rules off.

Its summary reads the database and Redis and tolerates their failures with
``except Exception``; a SIGTERM landing during such a read was once swallowed as one of
those failures, and the pipeline kept trading until it was killed (seen on CI).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from alpha_panda import db
from alpha_panda.commands import run as run_command
from alpha_panda.settings import load_settings


@pytest.fixture
def stop_handler() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, run_command._raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_during_the_summarys_database_read_stops_the_run(
    stop_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def terminated_while_reading(url: str) -> object:
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal handler should have raised before this line")

    monkeypatch.setattr(db, "create_engine", terminated_while_reading)
    with pytest.raises(run_command._Stop):
        run_command._halted_scopes(load_settings())


def test_the_summarys_own_failures_are_still_tolerated(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str) -> object:
        raise OSError("database unreachable")

    monkeypatch.setattr(db, "create_engine", unreachable)
    assert run_command._halted_scopes(load_settings()) == []


def test_live_strategies_with_the_trading_day_off_are_refused_against_the_real_kite() -> None:
    live = ["live-1"]
    off = {"enforce_sessions": False}
    assert run_command._live_without_trading_day(load_settings(market={}), live) is None
    refusal = run_command._live_without_trading_day(load_settings(market=off), live)
    assert refusal is not None
    assert "live-1" in refusal and "Refused against the real Kite" in refusal
    local = load_settings(market=off, zerodha={"root_url": "http://127.0.0.1:5080"})
    warning = run_command._live_without_trading_day(local, live)
    assert warning is not None and "Allowed against http://127.0.0.1:5080" in warning


def test_live_strategies_on_the_embedded_broker_are_announced_as_refused() -> None:
    live = ["live-1"]
    kite = {"api_key": "k"}
    said = run_command._live_refused(load_settings(zerodha=kite), live)
    assert said is not None and "live-1" in said
    assert "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER=true" in said
    accepted = load_settings(zerodha={**kite, "allow_embedded_broker": True})
    assert run_command._live_refused(accepted, live) is None
    assert (
        run_command._live_refused(load_settings(zerodha=kite, broker={"kind": "redpanda"}), live)
        is None
    )
    assert (
        run_command._live_refused(load_settings(), live) is None
    )  # no Kite: nothing live to refuse


def test_paper_only_pipelines_may_run_at_any_hour() -> None:
    off = load_settings(market={"enforce_sessions": False})
    assert run_command._live_without_trading_day(off, []) is None
