"""The terminal equity line."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

from alpha_panda.mirror import MirrorKeys
from alpha_panda.settings import RedisSettings, load_settings
from web.summary import MAX_PORTFOLIOS, equity_summary, format_summary, grouped, read_mirror

from .test_api import MOM_FILLS, RELIANCE, book, price_entry


def test_grouping_and_signs() -> None:
    assert grouped(Decimal("1000123.456")) == "1,000,123.46"
    assert grouped(Decimal("-0.001")) == "0.00"
    assert grouped(Decimal("999")) == "999.00"


def test_one_line_with_equity_and_net_pnl_per_strategy() -> None:
    loser = book([], "aaa-flat")
    line = format_summary([book(MOM_FILLS), loser], {RELIANCE: Decimal("2901.35")})
    assert line == "aaa-flat equity 1,000,000.00 (+0.00)  mom equity 1,000,055.40 (+55.40)"

    down = format_summary([book(MOM_FILLS)], {RELIANCE: Decimal("2800")})
    # 973,943.25 + 9 * 2800 = 999,143.25
    assert down == "mom equity 999,143.25 (-856.75)"


def test_long_lists_are_cut() -> None:
    many = [book([], f"s{i:02d}") for i in range(MAX_PORTFOLIOS + 3)]
    line = format_summary(many, {})
    assert line.count(" equity ") == MAX_PORTFOLIOS
    assert line.endswith("(+3 more)")


class SyncFakeRedis:
    def __init__(self, keys: MirrorKeys) -> None:
        self.keys = keys
        mom = book(MOM_FILLS)
        self.strings = {keys.portfolio("mom"): json.dumps(mom.to_json_dict())}
        self.prices = {str(RELIANCE): json.dumps(price_entry("2901.35"))}

    def smembers(self, key: str) -> set[str]:
        assert key == self.keys.portfolios
        return {"mom", "gone"}

    def mget(self, keys: list[str]) -> list[str | None]:
        return [self.strings.get(k) for k in keys]

    def hmget(self, key: str, fields: list[str]) -> list[str | None]:
        assert key == self.keys.prices
        return [self.prices.get(f) for f in fields]


def test_reads_the_mirror_layout() -> None:
    keys = MirrorKeys("ap")
    portfolios, prices = read_mirror(SyncFakeRedis(keys), keys)
    assert [p.strategy_id for p in portfolios] == ["mom"]
    assert prices == {RELIANCE: Decimal("2901.35")}


def test_any_problem_gives_an_empty_string_quickly(tmp_path: Path) -> None:
    dead = load_settings(data_dir=tmp_path, redis=RedisSettings(url="redis://127.0.0.1:1/0"))
    started = time.monotonic()
    assert equity_summary(dead) == ""
    assert time.monotonic() - started < 2
    disabled = load_settings(data_dir=tmp_path, redis=RedisSettings(enabled=False))
    assert equity_summary(disabled) == ""
    garbage = load_settings(data_dir=tmp_path, redis=RedisSettings(url="not a url"))
    assert equity_summary(garbage) == ""
