"""Typed Kite Connect errors, mapped from Kite's error JSON.

Kite answers a failed call with `{"status":"error","message":...,"error_type":...}` and an
HTTP status: TokenException 403 (log in again), InputException 400, OrderException /
MarginException (an order refused), NetworkException 503, DataException 502,
GeneralException 500, and 429 on rate limits. We map on `error_type` first and fall back to
the status for bodies without one (a proxy's HTML page, a gateway timeout). A message never
carries a token: the caller passes the secrets it holds and they are masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class KiteError(Exception):
    """Any Kite failure. `status` is the HTTP status, None when no response arrived."""

    def __init__(self, message: str, error_type: str, status: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status

    def __str__(self) -> str:
        status = "no response" if self.status is None else f"HTTP {self.status}"
        return f"{self.error_type} ({status}): {self.message}"

    @property
    def retryable(self) -> bool:
        """Worth retrying later: rate limits and Kite/network trouble, not a refused input."""
        return False


class TokenException(KiteError):
    """The access token is missing, expired (about 06:00 IST) or revoked: log in again."""


class InputException(KiteError):
    """A bad request: missing or invalid parameters."""


class OrderException(KiteError):
    """The order was refused (or fetching it failed)."""


class MarginException(KiteError):
    """Not enough funds for the order."""


class PermissionException(KiteError):
    """The app or user may not do this (e.g. an unregistered static IP under the 2026 rules)."""


class NetworkException(KiteError):
    """Kite could not reach the exchange/OMS, or we could not reach Kite."""

    @property
    def retryable(self) -> bool:
        return True


class DataException(KiteError):
    """Kite's internal systems answered with something it could not read (502)."""

    @property
    def retryable(self) -> bool:
        return True


class GeneralException(KiteError):
    """Anything else (500 and unknown error types)."""

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


class RateLimited(KiteError):
    """HTTP 429: too many requests (10 orders/s, 400/min, 5,000/day; 10 other calls/s)."""

    @property
    def retryable(self) -> bool:
        return True


_BY_TYPE: dict[str, type[KiteError]] = {
    "TokenException": TokenException,
    "InputException": InputException,
    "UserException": InputException,
    "OrderException": OrderException,
    "MarginException": MarginException,
    "HoldingException": OrderException,
    "PermissionException": PermissionException,
    "NetworkException": NetworkException,
    "DataException": DataException,
    "GeneralException": GeneralException,
}

_BY_STATUS: dict[int, type[KiteError]] = {
    400: InputException,
    403: TokenException,
    429: RateLimited,
    502: DataException,
    503: NetworkException,
    504: NetworkException,
}


def mask(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def error_from_response(status: int, body: Any, *, secrets: Iterable[str | None] = ()) -> KiteError:
    """The typed error for an HTTP error answer; `body` is the decoded JSON (or None/text)."""
    message = f"HTTP {status}"
    error_type = ""
    if isinstance(body, dict):
        message = str(body.get("message") or message)
        error_type = str(body.get("error_type") or "")
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:200]
    message = mask(message, secrets)
    if status == 429:
        cls: type[KiteError] = RateLimited
    else:
        cls = _BY_TYPE.get(error_type) or _BY_STATUS.get(status, GeneralException)
    return cls(message, error_type or cls.__name__, status)
