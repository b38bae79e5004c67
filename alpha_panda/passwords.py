"""bcrypt password hashing for operator and trader accounts."""

from __future__ import annotations

import bcrypt

MIN_PASSWORD_LENGTH = 8
# bcrypt only looks at the first 72 bytes; longer passwords would silently share a hash
# with their prefix, so they are refused rather than truncated.
MAX_PASSWORD_BYTES = 72
DEFAULT_ROUNDS = 12


def check_password_rules(plain: str) -> None:
    """Raise ValueError naming the rule when ``plain`` cannot be used as a password."""
    if len(plain) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(plain.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password: must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")


def hash_password(plain: str, *, rounds: int = DEFAULT_ROUNDS) -> str:
    """A bcrypt hash of ``plain`` (salt included); ValueError when the rules are broken."""
    check_password_rules(plain)
    return bcrypt.hashpw(plain.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def verify_password(plain: str, hashed: str) -> bool:
    """Whether ``plain`` matches ``hashed``.

    Never raises for bad input: a login attempt with an over-long password or a corrupt
    stored hash is simply a failed login.
    """
    try:
        return bcrypt.checkpw(plain.encode("utf-8"), hashed.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
