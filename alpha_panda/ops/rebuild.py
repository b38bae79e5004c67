"""The pure half of ``alpha-panda rebuild portfolios``: recompute portfolios from fills,
and compare a stored portfolio (table or mirror) with the recomputation. No I/O here; the
command reads the log and Redis and hands the bytes in.

The fills topics are the truth. A portfolio is a fold of its strategy's fills in log
order (every fill of a strategy is in one partition, see topics.py), so replaying them
through the same :meth:`Portfolio.apply_fill` the portfolio manager uses must give the
same state; duplicates (at-least-once redelivery) are ignored by apply_fill itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from models.events import OrderFill
from tables.portfolio import Portfolio, Position
from tables.specs import PORTFOLIOS

# What the report compares (the rest, e.g. recent_fill_ids and source_offsets, is
# bookkeeping the rebuild reproduces but an operator does not act on).
COMPARED_FIELDS = ("cash", "realized_pnl", "fees_paid", "trade_count", "positions")
POSITION_FIELDS = ("symbol", "quantity", "avg_price", "realized_pnl")


@dataclass(frozen=True)
class LoggedFill:
    """A fill and where it sits in the log (``source`` is ``"topic:partition"``)."""

    fill: OrderFill
    source: str
    offset: int


@dataclass
class Recomputed:
    portfolios: dict[str, Portfolio] = field(default_factory=dict)
    applied: int = 0
    duplicates: int = 0


def recompute(fills: Iterable[OrderFill | LoggedFill], starting_cash: Decimal) -> Recomputed:
    """Fold ``fills`` (in log order) into one portfolio per strategy, exactly as the
    portfolio manager books them: a record at or below the last offset applied from its
    partition is a redelivery, a repeated fill id is a duplicate, and a logged fill's
    offset is recorded (``source_offsets``) whether or not it changed the books."""
    out = Recomputed()
    for item in fills:
        logged = item if isinstance(item, LoggedFill) else None
        fill = item.fill if isinstance(item, LoggedFill) else item
        current = out.portfolios.get(fill.strategy_id) or Portfolio.new(
            fill.strategy_id, starting_cash
        )
        if logged is not None and current.already_applied(logged.source, logged.offset):
            out.duplicates += 1
            continue
        updated = current.apply_fill(fill)
        if updated is None:
            out.duplicates += 1
            updated = current
        else:
            out.applied += 1
        if logged is not None:
            updated = updated.after_source(logged.source, logged.offset)
        out.portfolios[fill.strategy_id] = updated
    return out


class UnreadablePortfolio(ValueError):
    """Stored bytes that are not a portfolio (corrupt mirror value, foreign changelog)."""


def parse_stored(raw: bytes | str | Mapping[str, Any]) -> Portfolio:
    """A stored portfolio from its JSON (``PORTFOLIOS.encode``, tables/specs.py) or the dict."""
    try:
        data = raw if isinstance(raw, Mapping) else json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadablePortfolio(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise UnreadablePortfolio(f"JSON {type(data).__name__}, not an object")
    try:
        return PORTFOLIOS.decode(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise UnreadablePortfolio(f"not a portfolio: {loc}: {first['msg']}") from None


@dataclass(frozen=True)
class FieldDiff:
    field: str
    rebuilt: str
    stored: str

    def line(self, stored_label: str) -> str:
        return f"{self.field}: rebuilt {self.rebuilt}, {stored_label} {self.stored}"


def _show(value: object) -> str:
    return "<absent>" if value is None else str(value)


def _position_diffs(
    rebuilt: Mapping[int, Position], stored: Mapping[int, Position]
) -> list[FieldDiff]:
    diffs: list[FieldDiff] = []
    for token in sorted(set(rebuilt) | set(stored)):
        mine, theirs = rebuilt.get(token), stored.get(token)
        if mine is None or theirs is None:
            diffs.append(
                FieldDiff(
                    f"positions[{token}]",
                    _show(mine and f"{mine.quantity} @ {mine.avg_price}"),
                    _show(theirs and f"{theirs.quantity} @ {theirs.avg_price}"),
                )
            )
            continue
        for name in POSITION_FIELDS:
            a, b = getattr(mine, name), getattr(theirs, name)
            if a != b:  # Decimal equality: "1.50" equals "1.5"
                diffs.append(FieldDiff(f"positions[{token}].{name}", _show(a), _show(b)))
    return diffs


StoredValue = bytes | str | Mapping[str, Any]


def diff_portfolios(
    rebuilt: Portfolio | StoredValue, stored: Portfolio | StoredValue
) -> list[FieldDiff]:
    """Differences in :data:`COMPARED_FIELDS`, numerically (Decimal), position by position.

    Either side may be JSON bytes/text or a dict of the ``PORTFOLIOS.encode``
    shape; an unreadable one raises :class:`UnreadablePortfolio`.
    """
    mine = rebuilt if isinstance(rebuilt, Portfolio) else parse_stored(rebuilt)
    theirs = stored if isinstance(stored, Portfolio) else parse_stored(stored)
    diffs: list[FieldDiff] = []
    for name in COMPARED_FIELDS:
        if name == "positions":
            diffs += _position_diffs(mine.positions, theirs.positions)
            continue
        a, b = getattr(mine, name), getattr(theirs, name)
        if a != b:
            diffs.append(FieldDiff(name, _show(a), _show(b)))
    return diffs


class Status(StrEnum):
    EQUAL = "equal"
    DIFFERS = "differs"
    MISSING = "missing"  # rebuilt from fills, absent from the store
    EXTRA = "extra"  # in the store, but the log has no fills for it
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Comparison:
    strategy_id: str
    status: Status
    diffs: tuple[FieldDiff, ...] = ()
    detail: str = ""

    def lines(self, stored_label: str) -> list[str]:
        head = f"{self.strategy_id}: {self.status.value}"
        if self.status is Status.MISSING:
            head += f" (fills rebuild it; the {stored_label} has no value)"
        elif self.status is Status.EXTRA:
            head += f" (the {stored_label} has it; the log has no fills for it)"
        elif self.detail:
            head += f" ({self.detail})"
        return [head] + [f"  {d.line(stored_label)}" for d in self.diffs]


def compare_all(
    rebuilt: Mapping[str, Portfolio], stored: Mapping[str, StoredValue]
) -> list[Comparison]:
    """One comparison per strategy in either side, sorted by strategy id."""
    out: list[Comparison] = []
    for strategy_id in sorted(set(rebuilt) | set(stored)):
        if strategy_id not in stored:
            out.append(Comparison(strategy_id, Status.MISSING))
            continue
        if strategy_id not in rebuilt:
            out.append(Comparison(strategy_id, Status.EXTRA))
            continue
        try:
            diffs = diff_portfolios(rebuilt[strategy_id], stored[strategy_id])
        except UnreadablePortfolio as exc:
            out.append(Comparison(strategy_id, Status.UNREADABLE, detail=str(exc)))
            continue
        status = Status.DIFFERS if diffs else Status.EQUAL
        out.append(Comparison(strategy_id, status, tuple(diffs)))
    return out


def all_equal(comparisons: Iterable[Comparison]) -> bool:
    return all(c.status is Status.EQUAL for c in comparisons)


def table_key(raw: bytes) -> tuple[str, bool]:
    """A table key from a changelog record key, and whether it was JSON-encoded.

    Faust serialises ``str`` table keys as JSON (``"momo"`` with the quotes); plain UTF-8
    (``momo``) is accepted too, for changelogs written by other tools.
    """
    try:
        decoded = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace"), False
    if isinstance(decoded, str):
        return decoded, True
    return raw.decode("utf-8", "replace"), False


def latest_values(
    records: Iterable[tuple[bytes | None, bytes | None]],
) -> dict[str, bytes]:
    """Compact a changelog: the last value per key (records in log order); a tombstone
    (None value) deletes the key."""
    latest: dict[str, bytes] = {}
    for key, value in records:
        if key is None:
            continue
        name, _ = table_key(key)
        if value is None:
            latest.pop(name, None)
        else:
            latest[name] = value
    return latest
