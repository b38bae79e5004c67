"""The daily Kite login: login URL, request token -> access token -> token store.

Kite has no unattended refresh for ordinary apps. Once a day a person opens the login URL,
logs in on Kite's page, and Kite redirects the browser to the app's registered URL with a
single-use ``request_token``. Either the person pastes that token (or the whole redirect
URL) into `alpha-panda zerodha login`, or the redirect URL is the read API's callback
route, which completes the exchange itself. Both end in :func:`complete_login`.

The callback is authenticated by a short-lived signed ``state`` that the API puts into the
login URL (Kite hands ``redirect_params`` back unchanged on the redirect), so only a login
an authenticated admin started can store a token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
import jwt

from alpha_panda import db
from alpha_panda.broker_session import BrokerSessionRecord, store_session
from alpha_panda.settings import Settings
from alpha_panda.zerodha.rest import KiteRestClient

STATE_AUDIENCE = "alpha-panda:zerodha-login"
STATE_TTL = timedelta(minutes=15)
REQUEST_TOKEN_MAX = 128


class LoginInputError(ValueError):
    """What the person pasted, or the settings, cannot complete a login."""


def require_credentials(settings: Settings, *, secret: bool) -> tuple[str, str]:
    zerodha = settings.zerodha
    api_key = zerodha.api_key.get_secret_value()
    api_secret = zerodha.api_secret.get_secret_value()
    if not api_key:
        raise LoginInputError("ALPHA_PANDA_ZERODHA_API_KEY is not set (the Kite Connect app's key)")
    if secret and not api_secret:
        raise LoginInputError("ALPHA_PANDA_ZERODHA_API_SECRET is not set (needed to log in)")
    return api_key, api_secret


def login_url(settings: Settings, state: str | None = None) -> str:
    """Kite's login page for this app; ``state`` comes back on the redirect."""
    api_key, _ = require_credentials(settings, secret=False)
    query = {"v": "3", "api_key": api_key}
    if state is not None:
        query["redirect_params"] = urlencode({"state": state})
    return f"{settings.zerodha.login_url}?{urlencode(query, quote_via=quote)}"


def parse_request_token(text: str) -> str:
    """A request token from a bare token or from the redirect URL Kite sent the browser to."""
    text = text.strip()
    if not text:
        raise LoginInputError("nothing pasted: give the request token or the redirect URL")
    if "request_token=" in text or "://" in text or "?" in text:
        query = parse_qs(urlsplit(text).query if "?" in text else text)
        if query.get("status", ["success"])[0] != "success":
            raise LoginInputError(f"Kite reported the login as {query['status'][0]!r}")
        tokens = query.get("request_token", [])
        if len(tokens) != 1 or not tokens[0]:
            raise LoginInputError("the URL carries no request_token")
        text = tokens[0]
    if len(text) > REQUEST_TOKEN_MAX or not text.isalnum():
        raise LoginInputError("a request token is letters and digits only")
    return text


def issue_state(settings: Settings, username: str, now: datetime) -> str:
    claims = {"sub": username, "aud": STATE_AUDIENCE, "iat": now, "exp": now + STATE_TTL}
    return jwt.encode(claims, settings.auth.jwt_secret.get_secret_value(), algorithm="HS256")


def verify_state(settings: Settings, state: str, now: datetime) -> str:
    """The username who started the login; raises LoginInputError when not valid now."""
    try:
        claims = jwt.decode(
            state,
            settings.auth.jwt_secret.get_secret_value(),
            algorithms=["HS256"],
            audience=STATE_AUDIENCE,
            options={"require": ["sub", "aud", "exp"], "verify_exp": False},
        )
    except jwt.PyJWTError:
        raise LoginInputError("the login state is not valid: start the login again") from None
    if datetime.fromtimestamp(int(claims["exp"]), UTC) <= now:
        raise LoginInputError("the login state has expired: start the login again")
    return str(claims["sub"])


async def complete_login(
    settings: Settings,
    request_token: str,
    *,
    sessions: db.SessionFactory,
    http: aiohttp.ClientSession,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BrokerSessionRecord:
    """Exchange ``request_token`` at Kite and store the access token with its expiry.

    Kite's errors (a used or stale request token is a TokenException) propagate as the
    typed :mod:`alpha_panda.zerodha.errors`; their messages never carry the secrets.
    """
    api_key, api_secret = require_credentials(settings, secret=True)
    client = KiteRestClient(
        http, root_url=settings.zerodha.root_url, api_key=api_key, access_token=lambda: None
    )
    kite = await client.create_session(request_token, api_secret)
    # The expiry counts from when we obtained the token (Kite's login_time is a local
    # IST wall time without zone; our clock in UTC is unambiguous).
    return await store_session(
        sessions,
        user_id=kite.user_id,
        user_name=kite.user_name,
        access_token=kite.access_token,
        login_time=now(),
    )
