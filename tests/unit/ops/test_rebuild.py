"""The pure half of `rebuild portfolios`: the fold over fills and the comparison."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from alpha_panda.ops.rebuild import (
    LoggedFill,
    Status,
    UnreadablePortfolio,
    all_equal,
    compare_all,
    diff_portfolios,
    latest_values,
    parse_stored,
    recompute,
    table_key,
)
from models.events import Side
from tables.portfolio import Portfolio
from tests.factories import INFY, RELIANCE, T0, fill

D = Decimal
START = D("1000000")


FILLS = [
    fill("f1", Side.BUY, 10, "2900", fees="1.50"),
    fill("g1", Side.BUY, 5, "1500", strategy_id="meanrev", token=INFY, fees="0.75"),
    fill("f2", Side.SELL, 4, "2950", fees="1.25", ts=T0 + timedelta(minutes=1)),
    fill("f1", Side.BUY, 10, "2900", fees="1.50"),  # redelivered duplicate
]


def test_recompute_folds_each_strategy_and_ignores_duplicates() -> None:
    result = recompute(FILLS, START)
    assert (result.applied, result.duplicates) == (3, 1)
    assert sorted(result.portfolios) == ["meanrev", "momo"]
    momo = result.portfolios["momo"]
    # 1000000 - 10 x 2900 - 1.50 + 4 x 2950 - 1.25
    assert momo.cash == D("982797.25")
    assert momo.realized_pnl == D("200")  # (2950 - 2900) x 4
    assert momo.fees_paid == D("2.75")
    assert momo.trade_count == 2
    assert momo.positions[RELIANCE].quantity == 6
    assert result.portfolios["meanrev"].cash == START - D("7500") - D("0.75")


def test_recompute_matches_applying_fills_one_by_one() -> None:
    expected = Portfolio.new("momo", START)
    for f in FILLS[:3]:
        if f.strategy_id == "momo":
            applied = expected.apply_fill(f)
            assert applied is not None
            expected = applied
    assert recompute(FILLS, START).portfolios["momo"] == expected


def test_recompute_books_like_the_portfolio_manager() -> None:
    src = "orders.filled.paper:1"
    logged = [
        LoggedFill(FILLS[0], src, 0),
        LoggedFill(FILLS[2], src, 1),
        LoggedFill(FILLS[0], src, 0),  # redelivered: at or below the last applied offset
        LoggedFill(FILLS[3], src, 5),  # the engine produced f1 again: same fill id, later
    ]
    result = recompute(logged, START)
    assert (result.applied, result.duplicates) == (2, 2)
    momo = result.portfolios["momo"]
    assert momo == recompute(FILLS, START).portfolios["momo"].after_source(src, 5)
    assert momo.source_offsets == {src: 5}


def test_recompute_of_nothing_is_empty() -> None:
    result = recompute([], START)
    assert (result.portfolios, result.applied, result.duplicates) == ({}, 0, 0)


def test_equal_portfolios_have_no_diff_even_through_json() -> None:
    p = recompute(FILLS, START).portfolios["momo"]
    stored = json.dumps(p.to_json_dict()).encode()
    assert diff_portfolios(p, stored) == []
    assert diff_portfolios(p.to_json_dict(), p.to_json_dict()) == []


def test_decimals_compare_by_value_not_by_spelling() -> None:
    p = recompute(FILLS, START).portfolios["momo"]
    data = p.to_json_dict()
    data["cash"] = str(p.cash) + "000"  # "982797.25000"
    assert diff_portfolios(p, data) == []


def test_diff_names_each_differing_field() -> None:
    p = recompute(FILLS, START).portfolios["momo"]
    data = p.to_json_dict()
    data["cash"] = "1.00"
    data["trade_count"] = 7
    data["fees_paid"] = "0"
    diffs = {d.field: (d.rebuilt, d.stored) for d in diff_portfolios(p, data)}
    assert diffs == {
        "cash": ("982797.25", "1.00"),
        "trade_count": ("2", "7"),
        "fees_paid": ("2.75", "0"),
    }


def test_ignores_bookkeeping_fields() -> None:
    p = recompute(FILLS, START).portfolios["momo"]
    data = p.to_json_dict()
    data["recent_fill_ids"] = []
    data["last_fill_ts"] = None
    assert diff_portfolios(p, data) == []


def test_position_diffs_per_field_and_missing_positions() -> None:
    p = recompute(FILLS, START).portfolios["momo"]
    data = p.to_json_dict()
    data["positions"][str(RELIANCE)]["quantity"] = 9
    data["positions"][str(INFY)] = {
        "symbol": "INFY",
        "quantity": 1,
        "avg_price": "1500",
        "realized_pnl": "0",
    }
    lines = [d.line("table") for d in diff_portfolios(p, data)]
    assert lines == [
        f"positions[{INFY}]: rebuilt <absent>, table 1 @ 1500",
        f"positions[{RELIANCE}].quantity: rebuilt 6, table 9",
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"strategy_id": "momo"}', "not a portfolio"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_unreadable_stored_values_are_named(raw: bytes, reason: str) -> None:
    with pytest.raises(UnreadablePortfolio, match=reason):
        parse_stored(raw)


def test_compare_all_classifies_every_strategy() -> None:
    rebuilt = recompute(FILLS, START).portfolios
    momo_wrong = rebuilt["momo"].to_json_dict() | {"cash": "5"}
    stored = {
        "momo": json.dumps(momo_wrong).encode(),
        "meanrev": json.dumps(rebuilt["meanrev"].to_json_dict()).encode(),
        "ghost": json.dumps(Portfolio.new("ghost", START).to_json_dict()).encode(),
    }
    result = {c.strategy_id: c.status for c in compare_all(rebuilt, stored)}
    assert result == {"ghost": Status.EXTRA, "meanrev": Status.EQUAL, "momo": Status.DIFFERS}

    result = {c.strategy_id: c.status for c in compare_all(rebuilt, {"momo": b"garbage"})}
    assert result == {"meanrev": Status.MISSING, "momo": Status.UNREADABLE}


def test_all_equal() -> None:
    rebuilt = recompute(FILLS, START).portfolios
    same = {k: v.to_json_dict() for k, v in rebuilt.items()}
    assert all_equal(compare_all(rebuilt, same))
    assert not all_equal(compare_all(rebuilt, {}))
    assert all_equal(compare_all({}, {}))


def test_comparison_lines_read_as_a_report() -> None:
    rebuilt = recompute(FILLS, START).portfolios
    stored = {"momo": rebuilt["momo"].to_json_dict() | {"cash": "5"}}
    by_id = {c.strategy_id: c for c in compare_all(rebuilt, stored)}
    assert by_id["momo"].lines("table") == [
        "momo: differs",
        "  cash: rebuilt 982797.25, table 5",
    ]
    assert by_id["meanrev"].lines("mirror") == [
        "meanrev: missing (fills rebuild it; the mirror has no value)"
    ]


def test_latest_values_keeps_the_last_value_and_honours_tombstones() -> None:
    records = [
        (b'"momo"', b"1"),
        (b'"meanrev"', b"a"),
        (b"momo", b"2"),  # the same key, written without JSON quoting
        (b'"meanrev"', None),
        (None, b"keyless"),
    ]
    assert latest_values(records) == {"momo": b"2"}


@pytest.mark.parametrize(
    ("raw", "key", "as_json"),
    [
        (b'"momo"', "momo", True),  # how Faust writes str keys
        (b"momo", "momo", False),
        (b"42", "42", False),  # JSON, but not a string: taken as text
        (b'"caf\\u00e9"', "caf\u00e9", True),
    ],
)
def test_table_keys(raw: bytes, key: str, as_json: bool) -> None:
    assert table_key(raw) == (key, as_json)
