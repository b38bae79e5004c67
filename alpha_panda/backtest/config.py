"""A backtest's strategies: from the configuration database or a small TOML/JSON file.

A file lists strategies as the config store holds them and is validated by the same code
(:func:`alpha_panda.db.validated_strategy`: strategy id, kind, instruments, parameters
through the strategy's own parameter model, risk overrides), so an error names the
strategy and the field::

    [[strategies]]
    strategy_id = "mom"
    kind = "momentum"
    instruments = [[256265, "NIFTY 50"], [738561, "RELIANCE"]]
    parameters = { lookback = 5, threshold_pct = "0.5", quantity = 10 }
    risk_limits = { max_order_quantity = 100 }   # optional

JSON has the same shape. Parameters left out take the strategy's defaults, as in
``alpha-panda strategies add``. Halts of the live system never apply to a backtest.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from alpha_panda import db
from alpha_panda.backtest.engine import BacktestConfigError
from alpha_panda.settings import Settings
from models.events import ExecutionMode

_FILE_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # a file has no update time
_KEYS = {
    "strategy_id",
    "kind",
    "instruments",
    "parameters",
    "enabled",
    "execution_mode",
    "risk_limits",
}


def runtime_config(strategies: Sequence[db.StrategyConfigRecord]) -> db.RuntimeConfig:
    return db.RuntimeConfig(
        strategies=tuple(strategies), halt_all=False, halted_strategies=frozenset(), halt_reasons={}
    )


def load_file(path: Path) -> db.RuntimeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BacktestConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise BacktestConfigError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from None
    entries = data.get("strategies") if isinstance(data, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise BacktestConfigError(f"{path}: needs a non-empty list 'strategies'")
    records: list[db.StrategyConfigRecord] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}: strategies[{index}]"
        if not isinstance(entry, Mapping):
            raise BacktestConfigError(f"{where}: must be a table/object")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise BacktestConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_KEYS))})"
            )
        for required in ("strategy_id", "kind", "instruments"):
            if required not in entry:
                raise BacktestConfigError(f"{where}: field {required!r} is required")
        sid = str(entry["strategy_id"])
        if sid in seen:
            raise BacktestConfigError(f"{where}: strategy_id {sid!r} is listed twice")
        seen.add(sid)
        try:
            records.append(
                db.validated_strategy(
                    sid,
                    str(entry["kind"]),
                    entry["instruments"],
                    entry.get("parameters") or {},
                    enabled=bool(entry.get("enabled", True)),
                    execution_mode=str(entry.get("execution_mode", "paper")),
                    risk_limits=entry.get("risk_limits") or {},
                    updated_at=_FILE_TIME,
                )
            )
        except db.ConfigValidationError as exc:
            raise BacktestConfigError(f"{where} ({sid}): {exc}") from None
    return runtime_config(records)


def _refuse_missing_sqlite_file(url: str) -> None:
    """Connecting to a SQLite path that does not exist would create an empty database;
    say what is missing instead."""
    parsed = make_url(url)
    path = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and path not in ("", ":memory:")
        and not path.startswith("file:")
        and not Path(path).expanduser().exists()
    ):
        raise BacktestConfigError(
            f"no configuration database at {db.describe_url(url)}: create strategies with "
            "`alpha-panda strategies add` (or seed-demo), or give --config FILE"
        )


async def load_database(settings: Settings) -> db.RuntimeConfig:
    url = settings.database.url
    where = db.describe_url(url)
    _refuse_missing_sqlite_file(url)
    engine = db.create_engine(url)
    try:
        config = await db.load_runtime_config(db.session_factory(engine))
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())
        raise BacktestConfigError(
            f"cannot read strategies from {where}: {reason} "
            "(`alpha-panda db upgrade` creates the schema; or give --config FILE)"
        ) from None
    finally:
        await engine.dispose()
    return runtime_config(config.strategies)


def select(config: db.RuntimeConfig, strategy_ids: Sequence[str]) -> db.RuntimeConfig:
    """Only ``strategy_ids`` (enabled for the run even if disabled live); all enabled if
    none is named. Every strategy is paper traded: one configured for live trading is
    backtested on paper (a backtest never sends an order to Kite)."""
    if not strategy_ids:
        chosen = list(config.enabled_strategies)
    else:
        by_id = {s.strategy_id: s for s in config.strategies}
        missing = [sid for sid in strategy_ids if sid not in by_id]
        if missing:
            known = ", ".join(sorted(by_id)) or "none"
            raise BacktestConfigError(f"unknown strategy {', '.join(missing)} (known: {known})")
        chosen = [by_id[sid].model_copy(update={"enabled": True}) for sid in strategy_ids]
    if not chosen:
        raise BacktestConfigError("no enabled strategy to backtest")
    return runtime_config(
        [s.model_copy(update={"execution_mode": ExecutionMode.PAPER}) for s in chosen]
    )
