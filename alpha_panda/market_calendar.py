"""The NSE trading calendar: which sessions a day has, and which session a moment is in.

Pure: every question is asked with a timestamp (event time, from a tick or a signal), never
the clock, so a replay or a backtest gets the same answers as the live run did.

Sources, in order of precedence:

1. The override file shipped in the package (``alpha_panda/data/nse_calendar.toml``):
   dates the library lacks or gets wrong, such as the Diwali Muhurat session or an
   unscheduled closure. An override replaces the whole day.
2. Exchange holidays from the ``holidays`` package (``financial_holidays("XNSE")``),
   pure Python with one small dependency (python-dateutil). pandas-market-calendars also
   has an NSE calendar, but it pulls pandas and numpy (tens of megabytes) into every
   stage for a table of dates, and its NSE list is hand-maintained in the same way; the
   domain modules here stay light and unit-testable without either.
3. Weekends are closed; any other day has the standard sessions below.

All times are Asia/Kolkata (IST, no daylight saving). A session is half-open,
``start <= t < end``: 09:15:00 is in the regular session, 15:30:00 is not.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")

# The default override file, inside the package so an installed wheel carries it.
OVERRIDE_RESOURCE = "data/nse_calendar.toml"


class SessionKind(StrEnum):
    PRE_OPEN = "pre_open"  # order entry 09:00-09:08; matching happens after it
    REGULAR = "regular"  # continuous trading
    CLOSING = "closing"  # post-close session: orders at the closing price only


@dataclass(frozen=True)
class SessionTimes:
    kind: SessionKind
    start: time
    end: time


STANDARD_SESSIONS: tuple[SessionTimes, ...] = (
    SessionTimes(SessionKind.PRE_OPEN, time(9, 0), time(9, 8)),
    SessionTimes(SessionKind.REGULAR, time(9, 15), time(15, 30)),
    SessionTimes(SessionKind.CLOSING, time(15, 40), time(16, 0)),
)


class CalendarError(ValueError):
    """The override file (or an override given in code) is malformed; names the entry."""


@dataclass(frozen=True)
class Session:
    kind: SessionKind
    start: datetime  # aware, IST
    end: datetime  # aware, IST; exclusive

    def contains(self, ts: datetime) -> bool:
        return self.start <= ts < self.end


@dataclass(frozen=True)
class TradingDay:
    day: date
    sessions: tuple[Session, ...]
    # Why the day looks like this: "regular", "weekend", "holiday: Holi", "override: ...".
    note: str

    @property
    def is_trading_day(self) -> bool:
        return any(s.kind is SessionKind.REGULAR for s in self.sessions)

    def session(self, kind: SessionKind) -> Session | None:
        return next((s for s in self.sessions if s.kind is kind), None)

    @property
    def regular(self) -> Session | None:
        return self.session(SessionKind.REGULAR)


@dataclass(frozen=True)
class DayOverride:
    """A day whose sessions differ from the library's answer; no sessions = closed."""

    sessions: tuple[SessionTimes, ...]
    reason: str


_DAY_CACHE_SIZE = 366


def _at(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=IST)


class NseCalendar:
    """Answers from a fixed holiday table and override table; no I/O after construction."""

    def __init__(
        self, holidays: Mapping[date, str], overrides: Mapping[date, DayOverride] | None = None
    ) -> None:
        # Not copied: the library's table fills in a year when a date of it is first asked
        # about, so any year works, not only the ones loaded up front.
        self._holidays = holidays
        self._overrides = dict(overrides or {})
        # Built days, memoised: risk asks once per signal and the host once per tick of
        # an open MIS position, nearly always about the same day (14 us -> ~1 us a call).
        self._days: dict[date, TradingDay] = {}

    @classmethod
    def default(cls) -> NseCalendar:
        """The library's XNSE holidays plus the packaged override file (built once)."""
        return _default_calendar()

    def day(self, day: date) -> TradingDay:
        built = self._days.get(day)
        if built is None:
            if len(self._days) >= _DAY_CACHE_SIZE:
                self._days.clear()
            built = self._days[day] = self._build_day(day)
        return built

    def _build_day(self, day: date) -> TradingDay:
        override = self._overrides.get(day)
        if override is not None:
            return self._build(day, override.sessions, f"override: {override.reason}")
        if day.weekday() >= 5:
            return TradingDay(day, (), "weekend")
        name = self._holidays.get(day)
        if name is not None:
            return TradingDay(day, (), f"holiday: {name}")
        return self._build(day, STANDARD_SESSIONS, "regular")

    @staticmethod
    def _build(day: date, times: tuple[SessionTimes, ...], note: str) -> TradingDay:
        sessions = tuple(Session(t.kind, _at(day, t.start), _at(day, t.end)) for t in times)
        return TradingDay(day, sessions, note)

    def day_of(self, ts: datetime) -> TradingDay:
        return self.day(ts.astimezone(IST).date())

    def session_at(self, ts: datetime) -> Session | None:
        """The session ``ts`` falls in, or None when the exchange is closed."""
        ts = ts.astimezone(IST)
        return next((s for s in self.day(ts.date()).sessions if s.contains(ts)), None)

    def next_session_start(self, ts: datetime, horizon_days: int = 30) -> datetime | None:
        """Start of the next session after ``ts`` (not the one ``ts`` is in), or None
        if none begins within ``horizon_days``."""
        local = ts.astimezone(IST)
        for offset in range(horizon_days + 1):
            for session in self.day(local.date() + timedelta(days=offset)).sessions:
                if session.start > local:
                    return session.start
        return None

    def square_off_at(self, day: date, lead: timedelta) -> datetime | None:
        """When intraday positions are closed on ``day``: ``lead`` before the regular
        session's end (15:20 for the standard 15:30 close and a 10-minute lead), or None
        on a day without a regular session. A special session (Muhurat) keeps the lead."""
        regular = self.day(day).regular
        if regular is None:
            return None
        return max(regular.start, regular.end - lead)


def parse_overrides(
    document: Mapping[str, Any], source: str = "overrides"
) -> dict[date, DayOverride]:
    """Read the ``[[day]]`` entries of an override document (see the packaged file)."""
    days = document.get("day", [])
    if not isinstance(days, list):
        raise CalendarError(f"{source}: 'day' must be an array of tables ([[day]])")
    out: dict[date, DayOverride] = {}
    for index, entry in enumerate(days):
        where = f"{source}: day #{index + 1}"
        if not isinstance(entry, Mapping):
            raise CalendarError(f"{where}: must be a table")
        unknown = set(entry) - {"date", "reason", "closed", "sessions"}
        if unknown:
            raise CalendarError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        when = entry.get("date")
        if not isinstance(when, date) or isinstance(when, datetime):
            raise CalendarError(f"{where}: 'date' must be a TOML date such as 2026-11-08")
        where = f"{source}: {when}"
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise CalendarError(f"{where}: 'reason' is required")
        closed = entry.get("closed", False)
        raw_sessions = entry.get("sessions")
        if closed is True:
            if raw_sessions:
                raise CalendarError(f"{where}: a closed day has no sessions")
            sessions: tuple[SessionTimes, ...] = ()
        elif closed is False and isinstance(raw_sessions, list) and raw_sessions:
            sessions = tuple(_parse_session(s, where) for s in raw_sessions)
        else:
            raise CalendarError(f"{where}: give either closed = true or a list of sessions")
        ordered = sorted(sessions, key=lambda s: s.start)
        for before, after in itertools.pairwise(ordered):
            if after.start < before.end:
                raise CalendarError(f"{where}: sessions overlap")
        if when in out:
            raise CalendarError(f"{where}: listed twice")
        out[when] = DayOverride(tuple(ordered), reason.strip())
    return out


def _parse_session(raw: Any, where: str) -> SessionTimes:
    if not isinstance(raw, Mapping) or set(raw) != {"kind", "start", "end"}:
        raise CalendarError(f"{where}: each session needs exactly kind, start and end")
    try:
        kind = SessionKind(raw["kind"])
    except ValueError:
        known = ", ".join(k.value for k in SessionKind)
        raise CalendarError(f"{where}: session kind {raw['kind']!r} (known: {known})") from None
    start, end = raw["start"], raw["end"]
    if not isinstance(start, time) or not isinstance(end, time):
        raise CalendarError(f"{where}: start and end must be TOML times such as 18:00:00")
    if not start < end:
        raise CalendarError(f"{where}: session {kind.value} ends before it starts")
    return SessionTimes(kind, start, end)


def load_packaged_overrides() -> dict[date, DayOverride]:
    text = resources.files("alpha_panda").joinpath(OVERRIDE_RESOURCE).read_text("utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalendarError(f"{OVERRIDE_RESOURCE}: {exc}") from None
    return parse_overrides(document, OVERRIDE_RESOURCE)


def library_holidays(first_year: int = 2020, last_year: int = 2030) -> Mapping[date, str]:
    """The library's XNSE table, with the given years loaded; other years load on demand."""
    import holidays  # imported here: only the default calendar needs it

    table: Mapping[date, str] = holidays.financial_holidays(
        "XNSE", years=range(first_year, last_year + 1)
    )
    return table


@lru_cache(maxsize=1)
def _default_calendar() -> NseCalendar:
    return NseCalendar(library_holidays(), load_packaged_overrides())
