"""The login helpers: the login URL, what a person may paste, the signed callback state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from alpha_panda.kite_login import (
    STATE_TTL,
    LoginInputError,
    issue_state,
    login_url,
    parse_request_token,
    require_credentials,
    verify_state,
)
from alpha_panda.settings import AuthSettings, Settings, ZerodhaSettings, load_settings

NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def settings(key: str = "kitekey1", secret: str = "s3cr3t-value") -> Settings:
    return load_settings(
        zerodha=ZerodhaSettings(api_key=SecretStr(key), api_secret=SecretStr(secret)),
        auth=AuthSettings(jwt_secret=SecretStr("state-test-secret-" + "y" * 40)),
    )


def test_login_url_carries_the_key_and_the_state_for_the_redirect() -> None:
    url = login_url(settings(), state="abc.def")
    parts = urlsplit(url)
    assert (
        f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://kite.zerodha.com/connect/login"
    )
    query = parse_qs(parts.query)
    assert query["v"] == ["3"] and query["api_key"] == ["kitekey1"]
    # Kite hands redirect_params back as query parameters of the redirect.
    assert parse_qs(query["redirect_params"][0]) == {"state": ["abc.def"]}
    assert "s3cr3t-value" not in url
    assert "redirect_params" not in login_url(settings())


@pytest.mark.parametrize(
    ("pasted", "token"),
    [
        ("  AbC123xyz \n", "AbC123xyz"),
        (
            "https://example.com/cb?action=login&type=login&status=success&request_token=T0k3n",
            "T0k3n",
        ),
        ("http://127.0.0.1:8080/api/v1/zerodha/callback?request_token=zz9&state=x", "zz9"),
        ("request_token=Q1&status=success", "Q1"),
    ],
)
def test_a_token_or_a_redirect_url_may_be_pasted(pasted: str, token: str) -> None:
    assert parse_request_token(pasted) == token


@pytest.mark.parametrize(
    ("pasted", "message"),
    [
        ("", "nothing pasted"),
        ("https://example.com/cb?status=success", "no request_token"),
        ("https://example.com/cb?status=cancelled&request_token=x", "cancelled"),
        ("abc def", "letters and digits"),
        ("x" * 200, "letters and digits"),
        ("https://example.com/cb?request_token=a&request_token=b", "no request_token"),
    ],
)
def test_what_cannot_be_a_request_token_is_refused(pasted: str, message: str) -> None:
    with pytest.raises(LoginInputError, match=message):
        parse_request_token(pasted)


def test_credentials_are_named_when_missing() -> None:
    with pytest.raises(LoginInputError, match="ALPHA_PANDA_ZERODHA_API_KEY"):
        require_credentials(settings(key=""), secret=False)
    with pytest.raises(LoginInputError, match="ALPHA_PANDA_ZERODHA_API_SECRET"):
        require_credentials(settings(secret=""), secret=True)
    assert require_credentials(settings(secret=""), secret=False) == ("kitekey1", "")


def test_the_state_names_who_started_the_login_and_expires() -> None:
    s = settings()
    state = issue_state(s, "alice", NOW)
    assert verify_state(s, state, NOW + timedelta(minutes=1)) == "alice"
    with pytest.raises(LoginInputError, match="expired"):
        verify_state(s, state, NOW + STATE_TTL)


def test_a_forged_or_foreign_state_is_refused() -> None:
    other = load_settings(auth=AuthSettings(jwt_secret=SecretStr("another-secret-" + "z" * 40)))
    with pytest.raises(LoginInputError, match="not valid"):
        verify_state(settings(), issue_state(other, "mallory", NOW), NOW)
    with pytest.raises(LoginInputError, match="not valid"):
        verify_state(settings(), "not-a-jwt", NOW)
    # An API bearer token is signed with the same secret but is not a login state.
    from web.auth import issue_token

    bearer = issue_token(settings(), "alice", "admin", NOW).access_token
    with pytest.raises(LoginInputError, match="not valid"):
        verify_state(settings(), bearer, NOW)
