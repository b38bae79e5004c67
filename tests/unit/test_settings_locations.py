"""Defaults never depend on the working directory; the tick checks read from the env."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from alpha_panda.settings import load_settings


def test_the_default_data_dir_and_database_are_absolute_and_the_same_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALPHA_PANDA_DATA_DIR", raising=False)
    monkeypatch.delenv("ALPHA_PANDA_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    seen = set()
    for cwd in (tmp_path / "a", tmp_path / "b" / "c"):
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        settings = load_settings()
        assert settings.data_dir == tmp_path / "home" / ".alpha-panda"
        seen.add(settings.database.url)
    assert seen == {f"sqlite+aiosqlite:///{tmp_path}/home/.alpha-panda/alpha_panda.db"}


def test_a_relative_data_dir_is_made_absolute_once_and_an_explicit_url_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALPHA_PANDA_DATA_DIR", "deploy")
    settings = load_settings()
    assert settings.data_dir == tmp_path / "deploy"
    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/deploy/alpha_panda.db"

    monkeypatch.setenv("ALPHA_PANDA_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert load_settings().database.url == "postgresql+asyncpg://u@h/db"


def test_price_band_and_tick_size_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALPHA_PANDA_TICKS_PRICE_BAND_PCT", "10")
    monkeypatch.setenv("ALPHA_PANDA_TICKS_TICK_SIZE", "0.05")  # the default is 0.01
    ticks = load_settings().ticks
    assert (ticks.price_band_pct, ticks.tick_size) == (Decimal("10"), Decimal("0.05"))
