from __future__ import annotations

import pytest

from alpha_panda.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_LENGTH,
    hash_password,
    verify_password,
)

# The minimum bcrypt cost keeps the suite fast; the algorithm is the same.
FAST = 4


def test_hash_verifies_and_is_salted() -> None:
    first = hash_password("correct horse", rounds=FAST)
    second = hash_password("correct horse", rounds=FAST)

    assert first.startswith("$2b$04$")
    assert first != second  # a fresh salt per hash
    assert verify_password("correct horse", first)
    assert verify_password("correct horse", second)


def test_default_cost_is_production_strength() -> None:
    assert hash_password("correct horse").startswith("$2b$12$")


def test_wrong_password_does_not_verify() -> None:
    hashed = hash_password("correct horse", rounds=FAST)

    assert not verify_password("correct horsf", hashed)
    assert not verify_password("Correct horse", hashed)
    assert not verify_password("", hashed)


def test_too_short_is_refused_naming_the_rule() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_PASSWORD_LENGTH} characters"):
        hash_password("x" * (MIN_PASSWORD_LENGTH - 1), rounds=FAST)
    assert verify_password("x" * MIN_PASSWORD_LENGTH, hash_password("x" * 8, rounds=FAST))


def test_longer_than_72_bytes_is_refused_not_truncated() -> None:
    assert hash_password("a" * MAX_PASSWORD_BYTES, rounds=FAST)
    with pytest.raises(ValueError, match="at most 72 bytes"):
        hash_password("a" * (MAX_PASSWORD_BYTES + 1), rounds=FAST)


def test_byte_limit_counts_utf8_bytes_not_characters() -> None:
    # 25 characters, 75 bytes: short enough by characters, too long for bcrypt.
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("€" * 25, rounds=FAST)
    hashed = hash_password("€" * 24, rounds=FAST)
    assert verify_password("€" * 24, hashed)


def test_verify_never_raises_on_bad_input() -> None:
    hashed = hash_password("correct horse", rounds=FAST)

    assert not verify_password("a" * 200, hashed)
    assert not verify_password("correct horse", "not a bcrypt hash")
    assert not verify_password("correct horse", "")
