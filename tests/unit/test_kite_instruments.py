"""The tick sizes of Kite's instruments master: fetched once a master day (from 08:45 IST
to 08:45 IST), kept as sizes."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from alpha_panda.kite_instruments import MasterTickSizes, master_day
from alpha_panda.zerodha.errors import NetworkException
from alpha_panda.zerodha.models import Instrument


def row(token: int, tick_size: str, segment: str = "NSE") -> Instrument:
    return Instrument.model_validate(
        {
            "instrument_token": token,
            "exchange_token": token >> 8,
            "tradingsymbol": f"S{token}",
            "tick_size": tick_size,
            "lot_size": 1,
            "instrument_type": "EQ",
            "segment": segment,
            "exchange": "NSE",
        }
    )


class StubRest:
    """Answers each GET /instruments with the next master, or raises what it is given."""

    def __init__(self, *answers: list[Instrument] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def instruments(self) -> list[Instrument]:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def test_a_master_day_starts_at_0845_ist() -> None:
    assert master_day(datetime(2026, 12, 1, 3, 14, tzinfo=UTC)) == date(2026, 11, 30)  # 08:44
    assert master_day(datetime(2026, 12, 1, 3, 15, tzinfo=UTC)) == date(2026, 12, 1)  # 08:45
    assert master_day(datetime(2026, 11, 30, 18, 31, tzinfo=UTC)) == date(2026, 11, 30)


async def test_the_master_is_fetched_once_a_master_day() -> None:
    day_one = [row(3677697, "0.01"), row(256265, "0.05", "INDICES")]
    day_two = [row(3677697, "0.05")]  # re-graded after a month above ₹250
    rest = StubRest(day_one, day_two)
    clock = Clock(datetime(2026, 11, 30, 3, 30, tzinfo=UTC))  # 09:00 IST
    master = MasterTickSizes(rest, D("0.01"), now=clock)  # type: ignore[arg-type]
    assert master.current.of(3677697) == D("0.01") and master.day is None  # the default

    assert await master.refresh() is True
    assert (master.current.of(3677697), master.current.of(256265)) == (D("0.01"), None)
    for moment in (
        datetime(2026, 11, 30, 18, 31, tzinfo=UTC),  # 00:01 IST the next day
        datetime(2026, 12, 1, 3, 14, tzinfo=UTC),  # 08:44 IST: still yesterday's file
    ):
        clock.moment = moment
        assert await master.refresh() is False
    assert rest.calls == 1

    clock.moment = datetime(2026, 12, 1, 3, 15, tzinfo=UTC)  # 08:45 IST: the new file
    assert await master.refresh() is True
    assert master.current.of(3677697) == D("0.05")
    assert master.current.of(256265) == D("0.01")  # no longer listed: the default
    assert (rest.calls, master.fetches, str(master.day)) == (2, 2, "2026-12-01")


async def test_a_failed_fetch_keeps_the_sizes_and_is_tried_again() -> None:
    rest = StubRest(
        NetworkException("GET /instruments timed out", "NetworkException", None),
        [row(738561, "0.05")],
    )
    master = MasterTickSizes(rest, D("0.01"), now=Clock(datetime(2026, 11, 30, 4, tzinfo=UTC)))  # type: ignore[arg-type]
    before = master.current
    with pytest.raises(NetworkException):
        await master.refresh()
    assert master.current is before and master.day is None
    assert await master.refresh() is True
    assert master.current.of(738561) == D("0.05") and master.current.default == D("0.01")
