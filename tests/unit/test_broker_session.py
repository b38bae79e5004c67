"""The Kite token's expiry (next 06:00 IST) and what a stored session may show."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from alpha_panda.broker_session import IST, BrokerSessionRecord, next_token_expiry


@pytest.mark.parametrize(
    ("login_ist", "expiry_ist"),
    [
        # A morning login lives until 06:00 the next day.
        (datetime(2026, 3, 2, 8, 45, tzinfo=IST), datetime(2026, 3, 3, 6, 0, tzinfo=IST)),
        # Late at night: still the next calendar day's 06:00.
        (datetime(2026, 3, 2, 23, 59, tzinfo=IST), datetime(2026, 3, 3, 6, 0, tzinfo=IST)),
        # Between midnight and 06:00 IST: the same morning.
        (datetime(2026, 3, 3, 2, 0, tzinfo=IST), datetime(2026, 3, 3, 6, 0, tzinfo=IST)),
        # Exactly 06:00: that expiry has passed, so the next one.
        (datetime(2026, 3, 3, 6, 0, tzinfo=IST), datetime(2026, 3, 4, 6, 0, tzinfo=IST)),
        # Month and year ends roll over.
        (datetime(2026, 12, 31, 9, 15, tzinfo=IST), datetime(2027, 1, 1, 6, 0, tzinfo=IST)),
    ],
)
def test_expiry_is_the_next_0600_ist(login_ist: datetime, expiry_ist: datetime) -> None:
    expiry = next_token_expiry(login_ist.astimezone(UTC))
    assert expiry == expiry_ist
    assert expiry.tzinfo is UTC
    # 06:00 IST is 00:30 UTC.
    assert (expiry.hour, expiry.minute) == (0, 30)


def test_expiry_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone"):
        next_token_expiry(datetime(2026, 3, 2, 9, 0))


def test_a_session_never_shows_its_token() -> None:
    login = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    record = BrokerSessionRecord(
        broker="zerodha",
        user_id="AB1234",
        user_name="A Trader",
        access_token=SecretStr("tok-very-secret"),
        login_time=login,
        expires_at=next_token_expiry(login),
    )
    assert "tok-very-secret" not in repr(record)
    assert "tok-very-secret" not in record.model_dump_json()
    public = record.public(login)
    assert "tok-very-secret" not in str(public)
    assert public["valid"] is True
    assert public["expires_at_ist"] == "2026-03-03T06:00:00+05:30"
    assert record.public(next_token_expiry(login))["valid"] is False
