"""The NSE calendar pinned on known dates, and every session boundary to the minute."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, date, datetime, time, timedelta

import pytest

from alpha_panda.commands.calendar import calendar_command
from alpha_panda.market_calendar import (
    IST,
    CalendarError,
    NseCalendar,
    SessionKind,
    load_packaged_overrides,
    parse_overrides,
)

CAL = NseCalendar.default()
MONDAY = date(2026, 3, 2)  # an ordinary weekday
SATURDAY = date(2026, 3, 7)
HOLI = date(2026, 3, 3)  # listed by the library
MUHURAT_2025 = date(2025, 10, 21)  # a library holiday the override turns into a session
ELECTION_2024 = date(2024, 5, 20)  # a weekday closure the library lacks


def ist(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=IST)


def test_a_weekday_has_the_three_standard_sessions() -> None:
    day = CAL.day(MONDAY)
    assert day.is_trading_day and day.note == "regular"
    assert [(s.kind, s.start.time(), s.end.time()) for s in day.sessions] == [
        (SessionKind.PRE_OPEN, time(9, 0), time(9, 8)),
        (SessionKind.REGULAR, time(9, 15), time(15, 30)),
        (SessionKind.CLOSING, time(15, 40), time(16, 0)),
    ]


def test_a_weekend_is_closed() -> None:
    day = CAL.day(SATURDAY)
    assert not day.is_trading_day and day.sessions == () and day.note == "weekend"
    assert CAL.session_at(ist(SATURDAY, 10, 0)) is None


def test_a_listed_holiday_is_closed() -> None:
    day = CAL.day(HOLI)
    assert not day.is_trading_day
    assert day.note == "holiday: Holi"
    assert CAL.session_at(ist(HOLI, 11, 0)) is None


def test_the_override_file_turns_a_library_holiday_into_muhurat_trading() -> None:
    # The library says Diwali Lakshmi Puja closes the exchange; the override file adds
    # the evening session.
    day = CAL.day(MUHURAT_2025)
    assert day.is_trading_day and day.note == "override: Diwali Muhurat trading"
    assert CAL.session_at(ist(MUHURAT_2025, 13, 44)) is None
    assert CAL.session_at(ist(MUHURAT_2025, 13, 45)).kind is SessionKind.REGULAR  # type: ignore[union-attr]
    assert CAL.session_at(ist(MUHURAT_2025, 10, 0)) is None
    # The square-off keeps its 10-minute lead before the special session's close.
    assert CAL.square_off_at(MUHURAT_2025, timedelta(minutes=10)) == ist(MUHURAT_2025, 14, 35)


def test_the_override_file_closes_a_weekday_the_library_leaves_open() -> None:
    assert CAL.day(ELECTION_2024).note.startswith("override: closed")
    assert CAL.session_at(ist(ELECTION_2024, 10, 0)) is None
    # The day before was a normal Friday.
    assert CAL.session_at(ist(date(2024, 5, 17), 10, 0)).kind is SessionKind.REGULAR  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("hh", "mm", "expected"),
    [
        (8, 59, None),
        (9, 0, SessionKind.PRE_OPEN),
        (9, 7, SessionKind.PRE_OPEN),
        (9, 8, None),
        (9, 14, None),
        (9, 15, SessionKind.REGULAR),
        (15, 29, SessionKind.REGULAR),
        (15, 30, None),
        (15, 39, None),
        (15, 40, SessionKind.CLOSING),
        (15, 59, SessionKind.CLOSING),
        (16, 0, None),
    ],
)
def test_each_session_boundary_to_the_minute(hh: int, mm: int, expected: SessionKind) -> None:
    session = CAL.session_at(ist(MONDAY, hh, mm))
    assert (session.kind if session else None) is expected


def test_the_last_second_before_the_close_is_still_regular() -> None:
    assert CAL.session_at(ist(MONDAY, 15, 29, 59)).kind is SessionKind.REGULAR  # type: ignore[union-attr]


def test_utc_timestamps_are_judged_in_ist() -> None:
    # 03:45Z is 09:15 IST; 03:44:59Z is still before the open.
    assert CAL.session_at(datetime(2026, 3, 2, 3, 45, tzinfo=UTC)).kind is SessionKind.REGULAR  # type: ignore[union-attr]
    assert CAL.session_at(datetime(2026, 3, 2, 3, 44, 59, tzinfo=UTC)) is None
    # 18:30Z on the 2nd is midnight IST on the 3rd (Holi): closed all day.
    assert CAL.day_of(datetime(2026, 3, 2, 18, 30, tzinfo=UTC)).day == HOLI


def test_next_session_start_skips_holidays_and_weekends() -> None:
    # After Monday's close the next session is Wednesday's pre-open (Tuesday is Holi).
    assert CAL.next_session_start(ist(MONDAY, 16, 0)) == ist(date(2026, 3, 4), 9, 0)
    # Friday evening -> Monday's pre-open.
    assert CAL.next_session_start(ist(date(2026, 3, 6), 17, 0)) == ist(date(2026, 3, 9), 9, 0)
    # Inside the pre-open, the next one is the regular open.
    assert CAL.next_session_start(ist(MONDAY, 9, 1)) == ist(MONDAY, 9, 15)


def test_square_off_is_the_lead_before_the_close_and_none_on_a_closed_day() -> None:
    assert CAL.square_off_at(MONDAY, timedelta(minutes=10)) == ist(MONDAY, 15, 20)
    assert CAL.square_off_at(HOLI, timedelta(minutes=10)) is None


def test_injected_overrides_win_over_the_library() -> None:
    overrides = parse_overrides(
        tomllib.loads(
            'day = [{ date = 2026-03-02, reason = "exchange outage", closed = true }, '
            '{ date = 2026-03-03, reason = "special", sessions = '
            '[{ kind = "regular", start = 10:00:00, end = 11:00:00 }] }]'
        )
    )
    cal = NseCalendar({HOLI: "Holi"}, overrides)
    assert not cal.day(MONDAY).is_trading_day
    assert cal.session_at(ist(HOLI, 10, 30)).kind is SessionKind.REGULAR  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("day = [{ date = 2026-03-02, closed = true }]", "'reason' is required"),
        ('day = [{ date = "2026-03-02", reason = "x", closed = true }]', "TOML date"),
        ('day = [{ date = 2026-03-02, reason = "x" }]', "closed = true or a list"),
        ('day = [{ date = 2026-03-02, reason = "x", closed = true, oops = 1 }]', "oops"),
        (
            'day = [{ date = 2026-03-02, reason = "x", sessions = '
            '[{ kind = "lunch", start = 10:00:00, end = 11:00:00 }] }]',
            "session kind 'lunch'",
        ),
        (
            'day = [{ date = 2026-03-02, reason = "x", sessions = '
            '[{ kind = "regular", start = 11:00:00, end = 10:00:00 }] }]',
            "ends before it starts",
        ),
        (
            'day = [{ date = 2026-03-02, reason = "x", sessions = ['
            '{ kind = "regular", start = 10:00:00, end = 11:00:00 },'
            '{ kind = "closing", start = 10:30:00, end = 11:30:00 }] }]',
            "overlap",
        ),
    ],
)
def test_a_bad_override_names_the_entry_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        parse_overrides(tomllib.loads(text), "test.toml")


def test_the_packaged_override_file_parses() -> None:
    overrides = load_packaged_overrides()
    assert MUHURAT_2025 in overrides and ELECTION_2024 in overrides


def test_calendar_cli_prints_the_days_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    class Args:
        date = "2026-03-02"
        json = False

    assert calendar_command(Args()) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "2026-03-02 Monday: trading day (regular)",
        "  pre_open  09:00-09:08 IST",
        "  regular   09:15-15:30 IST",
        "  closing   15:40-16:00 IST",
        "  MIS square-off 15:20 IST",
    ]


def test_calendar_cli_refuses_a_bad_date(capsys: pytest.CaptureFixture[str]) -> None:
    class Args:
        date = "2026-13-01"
        json = False

    assert calendar_command(Args()) == 2  # type: ignore[arg-type]
    assert "expected YYYY-MM-DD" in capsys.readouterr().err


def test_calendar_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    class Args:
        date = "2025-10-21"
        json = True

    assert calendar_command(Args()) == 0  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out) == {
        "date": "2025-10-21",
        "trading_day": True,
        "note": "override: Diwali Muhurat trading",
        "sessions": [
            {"kind": "pre_open", "start": "13:30", "end": "13:38"},
            {"kind": "regular", "start": "13:45", "end": "14:45"},
        ],
        "mis_square_off": "14:35",
        "timezone": "Asia/Kolkata",
    }


def test_years_beyond_the_preloaded_range_come_from_the_library_on_demand() -> None:
    # 2035 is outside the years loaded at start (2020-2030); Christmas is still closed.
    assert CAL.day(date(2035, 12, 25)).note == "holiday: Christmas Day"
    assert CAL.day(date(2035, 12, 24)).is_trading_day  # a Monday
