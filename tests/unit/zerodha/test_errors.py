from __future__ import annotations

import pytest

from alpha_panda.zerodha.errors import (
    DataException,
    GeneralException,
    InputException,
    KiteError,
    MarginException,
    NetworkException,
    OrderException,
    PermissionException,
    RateLimited,
    TokenException,
    error_from_response,
)


def body(error_type: str, message: str = "m") -> dict[str, str]:
    return {"status": "error", "message": message, "error_type": error_type}


@pytest.mark.parametrize(
    ("status", "payload", "cls"),
    [
        (403, body("TokenException"), TokenException),
        (400, body("InputException"), InputException),
        (400, body("OrderException"), OrderException),
        (400, body("MarginException"), MarginException),
        (403, body("PermissionException"), PermissionException),
        (503, body("NetworkException"), NetworkException),
        (502, body("DataException"), DataException),
        (500, body("GeneralException"), GeneralException),
        # 429 is a rate limit whatever type Kite writes into it.
        (429, body("NetworkException"), RateLimited),
        # No error_type (a proxy page, an empty body): the status decides.
        (403, "<html>forbidden</html>", TokenException),
        (502, None, DataException),
        (504, "", NetworkException),
        (418, body(""), GeneralException),
        (400, body("SomethingNew"), InputException),
    ],
)
def test_mapping(status: int, payload: object, cls: type[KiteError]) -> None:
    error = error_from_response(status, payload)
    assert type(error) is cls
    assert error.status == status


def test_message_and_type_are_kept() -> None:
    error = error_from_response(400, body("MarginException", "Insufficient funds"))
    assert error.message == "Insufficient funds"
    assert error.error_type == "MarginException"
    assert str(error) == "MarginException (HTTP 400): Insufficient funds"


def test_secrets_are_masked_in_messages() -> None:
    error = error_from_response(
        403, body("TokenException", "bad token abc123secret"), secrets=["abc123secret", None]
    )
    assert "abc123secret" not in str(error) and "***" in error.message


def test_retryable() -> None:
    assert error_from_response(429, None).retryable
    assert error_from_response(503, None).retryable
    assert error_from_response(500, body("GeneralException")).retryable
    assert not error_from_response(400, body("InputException")).retryable
    assert not error_from_response(403, body("TokenException")).retryable
    assert not error_from_response(400, body("OrderException")).retryable
