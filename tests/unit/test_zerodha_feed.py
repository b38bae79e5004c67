"""What the Kite feed subscribes to: the enabled strategies' instruments, at most 3,000."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from alpha_panda.db import InstrumentRef, RuntimeConfig, StrategyConfigRecord
from alpha_panda.settings import FeedSettings, SettingsError, ZerodhaSettings, load_settings
from alpha_panda.zerodha.ticker import MAX_TOKENS_PER_CONNECTION
from alpha_panda.zerodha_feed import wanted_instruments
from models.events import ExecutionMode


def strategy(sid: str, tokens: list[int], *, enabled: bool = True) -> StrategyConfigRecord:
    return StrategyConfigRecord(
        strategy_id=sid,
        kind="momentum",
        instruments=tuple(InstrumentRef(token=t, symbol=f"S{t}") for t in tokens),
        parameters={},
        enabled=enabled,
        execution_mode=ExecutionMode.PAPER,
        risk_limits={},
        updated_at=datetime(2026, 3, 2, tzinfo=UTC),
    )


def config(*strategies: StrategyConfigRecord) -> RuntimeConfig:
    return RuntimeConfig(
        strategies=strategies, halt_all=False, halted_strategies=frozenset(), halt_reasons={}
    )


def test_the_union_of_enabled_strategies_with_their_symbols() -> None:
    wanted = wanted_instruments(
        config(strategy("a", [1, 2]), strategy("b", [2, 3]), strategy("off", [9], enabled=False))
    )
    assert wanted == {1: "S1", 2: "S2", 3: "S3"}
    assert wanted_instruments(config()) == {}


def test_at_most_kites_limit_per_connection_lowest_tokens_kept() -> None:
    tokens = list(range(1, MAX_TOKENS_PER_CONNECTION + 11))
    wanted = wanted_instruments(config(strategy("big", list(reversed(tokens)))))
    assert len(wanted) == MAX_TOKENS_PER_CONNECTION == 3000
    assert set(wanted) == set(tokens[:MAX_TOKENS_PER_CONNECTION])


def test_the_zerodha_feed_without_an_api_key_is_a_configuration_error() -> None:
    with pytest.raises(
        SettingsError, match=r"ALPHA_PANDA_FEED_SOURCE.*ALPHA_PANDA_ZERODHA_API_KEY"
    ):
        load_settings(feed=FeedSettings(source="zerodha"))
    ok = load_settings(
        feed=FeedSettings(source="zerodha"), zerodha=ZerodhaSettings(api_key=SecretStr("k"))
    )
    assert ok.feed.source == "zerodha"
    assert load_settings().feed.source == "mock"  # the default needs nothing
