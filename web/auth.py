"""Users and JWT auth for the read API: tokens, login throttling, the bearer guard, login.

Everything here is plain logic with injected clocks and user lookups, so it is tested
without a web server; ``web/api.py`` wires it to the Faust views.

- Tokens are HS256 JWTs with ``sub`` (username), ``role``, ``ver`` (the user's token
  version), ``iat`` and ``exp``. Expiry is checked here against the injected clock rather
  than by pyjwt, so tests control time. No token lives longer than
  ``auth.token_ttl_minutes``: both ``exp - iat`` and ``now - iat`` are bounded by it, so a
  token minted with a far ``exp`` (a leaked key, an old release) is refused anyway.
- The signing key comes from :func:`alpha_panda.jwt_secret.signing_key`: never the public
  placeholder, which therefore verifies nothing.
- Changing a password, disabling or re-enabling a user bumps the user's token version;
  a token carrying an older version is refused (within the user cache's few seconds).
- A token longer than ``MAX_TOKEN_CHARS`` is refused before it is decoded.
- The guard re-reads the user from the database (cached for ``USER_CACHE_TTL_S``) on every
  request, so disabling or deleting a user locks out their live tokens within seconds.
- Login failures are throttled per username and per client address (sliding window);
  unknown users cost the same bcrypt check as wrong passwords, so response time does not
  tell an attacker which usernames exist.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alpha_panda.jwt_secret import signing_key
from alpha_panda.passwords import DEFAULT_ROUNDS, hash_password, verify_password
from alpha_panda.settings import Settings
from models.db import USER_ROLES, USERNAME_MAX_LENGTH
from web import schemas

log = structlog.get_logger(__name__)

TOKEN_TYPE = "bearer"
REALM = "alpha-panda"
# Long enough that a dashboard polling every second does one database read per user per
# few seconds; short enough that disabling a user takes effect almost at once.
USER_CACHE_TTL_S = 5.0
# Tokens issued "in the future" are refused beyond this much clock skew between workers.
IAT_LEEWAY_S = 60
MAX_LOGIN_BODY_BYTES = 8 * 1024
# Our tokens are ~250 characters; anything far longer is a probe and is not decoded.
MAX_TOKEN_CHARS = 2048
# A bcrypt input is at most 72 bytes; anything much longer is not a password but a probe.
MAX_PASSWORD_CHARS = 1024


# -- errors ----------------------------------------------------------------------------


class ApiError(Exception):
    """A request the API refuses: rendered as ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return schemas.Error(error=schemas.ErrorDetail(code=code, message=message)).model_dump()


def unauthorized(code: str, message: str, *, token_presented: bool = True) -> ApiError:
    # RFC 6750 section 3: no error attribute when no credentials were sent at all.
    challenge = f'Bearer realm="{REALM}"'
    if token_presented:
        challenge += f', error="invalid_token", error_description="{message}"'
    return ApiError(401, code, message, {"WWW-Authenticate": challenge})


# -- tokens ----------------------------------------------------------------------------


class TokenError(Exception):
    """The token cannot be used; ``code`` is ``invalid_token`` or ``token_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TokenClaims(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    sub: str = Field(min_length=1, max_length=USERNAME_MAX_LENGTH)
    role: str
    ver: int = Field(ge=0)
    iat: int
    exp: int


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_at: datetime

    def as_json(self) -> dict[str, str]:
        body = schemas.Token(
            access_token=self.access_token,
            token_type=TOKEN_TYPE,
            expires_at=self.expires_at.isoformat(),
        )
        return body.model_dump()


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return int(moment.timestamp())


def _ttl_s(settings: Settings) -> int:
    return int(timedelta(minutes=settings.auth.token_ttl_minutes).total_seconds())


def issue_token(
    settings: Settings, username: str, role: str, now: datetime, *, version: int = 0
) -> IssuedToken:
    """A signed token for ``username`` valid for ``auth.token_ttl_minutes`` from ``now``.

    ``version`` is the user's current token version; the guard refuses the token once
    the user's version has moved on.
    """
    issued = _epoch(now)
    expires = issued + _ttl_s(settings)
    claims = {"sub": username, "role": role, "ver": version, "iat": issued, "exp": expires}
    token = jwt.encode(claims, signing_key(settings), algorithm=settings.auth.jwt_algorithm)
    return IssuedToken(token, datetime.fromtimestamp(expires, UTC))


def verify_token(settings: Settings, token: str, now: datetime) -> TokenClaims:
    """The claims of a token this deployment signed and that is valid at ``now``.

    Raises :class:`TokenError` for anything else: longer than ``MAX_TOKEN_CHARS``,
    malformed, a signature made with another key (the placeholder included) or another
    algorithm (``none`` included), missing or mistyped claims, an unknown role, issued in
    the future, a lifetime longer than the configured TTL, or expired. The token version
    is checked by the guard, which knows the user.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("invalid_token", f"token is longer than {MAX_TOKEN_CHARS} characters")
    try:
        payload = jwt.decode(
            token,
            signing_key(settings),
            # Exactly the one configured algorithm: never taken from the token's header.
            algorithms=[settings.auth.jwt_algorithm],
            options={
                "require": ["sub", "role", "ver", "iat", "exp"],
                # Time is checked below against the injected clock.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
        claims = TokenClaims.model_validate(payload)
    except jwt.InvalidSignatureError:
        raise TokenError("invalid_token", "token signature does not verify") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError("invalid_token", f"token is not valid ({type(exc).__name__})") from None
    except ValidationError:
        raise TokenError("invalid_token", "token claims are malformed") from None
    except Exception as exc:  # a hostile token must never become a 500
        log.warning("token_decode_error", error=f"{type(exc).__name__}: {exc}")
        raise TokenError("invalid_token", "token is not valid") from None
    if claims.role not in USER_ROLES:
        raise TokenError("invalid_token", "token role is unknown")
    at = _epoch(now)
    if claims.iat > at + IAT_LEEWAY_S or claims.exp <= claims.iat:
        raise TokenError("invalid_token", "token times are inconsistent")
    ttl = _ttl_s(settings)
    if claims.exp - claims.iat > ttl:
        raise TokenError("invalid_token", "token lifetime exceeds the configured TTL")
    if at >= claims.exp or at - claims.iat >= ttl:
        raise TokenError("token_expired", "token has expired")
    return claims


# Three base64url segments; the signature may be empty only in an (always refused) alg=none.
_BEARER = re.compile(
    r"^Bearer[ \t]+([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*)[ \t]*$", re.IGNORECASE
)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <jwt>`` header; None when no header was sent.

    Raises :class:`TokenError` for a header that is present but not a bearer JWT.
    """
    if authorization is None or not authorization.strip():
        return None
    match = _BEARER.match(authorization)
    if match is None:
        raise TokenError("invalid_token", "Authorization header must be 'Bearer <token>'")
    return match.group(1)


# -- login throttle --------------------------------------------------------------------


class LoginThrottle:
    """Failed logins per username and per client address in a sliding window.

    Once either key has ``max_failures`` failures within ``window_s`` seconds, further
    attempts for it are refused (even with the right password) until the oldest failure
    leaves the window. Per address stops one client trying many usernames; per username
    stops many clients (a botnet) trying one account.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if max_failures < 1 or window_s <= 0:
            raise ValueError("max_failures must be >= 1 and window_s > 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    @staticmethod
    def _keys(username: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", username), ("addr", address)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps

    def retry_after(self, username: str, address: str) -> float | None:
        """Seconds until an attempt is allowed again, or None if it is allowed now."""
        now = self._clock()
        waits = []
        for key in self._keys(username, address):
            stamps = self._recent(key, now)
            if stamps is not None and len(stamps) >= self.max_failures:
                # Allowed again once enough of the oldest failures have left the window.
                waits.append(stamps[len(stamps) - self.max_failures] + self.window_s - now)
        return max(waits) if waits else None

    def record_failure(self, username: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) >= self._max_keys:
            self._prune(now)
        for key in self._keys(username, address):
            stamps = self._recent(key, now) or self._failures.setdefault(key, deque())
            stamps.append(now)
            # Only the newest max_failures stamps decide anything; keep memory bounded.
            while len(stamps) > self.max_failures:
                stamps.popleft()

    def record_success(self, username: str) -> None:
        # The account owner proved the password: their earlier typos no longer count.
        # The address keeps its failures, so a client cannot reset its own counter by
        # logging into an account it controls between guesses.
        self._failures.pop(("user", username), None)

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        # Still full of live entries (a flood of distinct usernames): forget the stalest.
        excess = len(self._failures) - self._max_keys // 2
        if excess > 0:
            stalest = sorted(self._failures, key=lambda k: self._failures[k][-1])[:excess]
            for key in stalest:
                del self._failures[key]


# -- users -----------------------------------------------------------------------------


class UserLike(Protocol):
    @property
    def username(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def disabled(self) -> bool: ...
    @property
    def password_hash(self) -> str: ...
    @property
    def token_version(self) -> int: ...


UserLookup = Callable[[str], Awaitable[UserLike | None]]


@dataclass(frozen=True)
class Principal:
    username: str
    role: str


@dataclass
class _CachedUser:
    user: UserLike | None
    fetched_at: float


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Authenticator:
    """The bearer guard of every protected view."""

    settings: Settings
    lookup: UserLookup
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = utc_now
    cache_ttl_s: float = USER_CACHE_TTL_S
    _cache: dict[str, _CachedUser] = field(default_factory=dict)

    async def user(self, username: str) -> UserLike | None:
        now = self.clock()
        cached = self._cache.get(username)
        if cached is not None and now - cached.fetched_at < self.cache_ttl_s:
            return cached.user
        try:
            user = await self.lookup(username)
        except Exception as exc:
            log.warning("auth_user_lookup_failed", error=f"{type(exc).__name__}: {exc}")
            raise ApiError(
                503, "auth_unavailable", "the user store is unavailable; try again shortly"
            ) from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[username] = _CachedUser(user, now)
        return user

    async def authenticate(
        self, authorization: str | None, query_token: str | None = None
    ) -> Principal:
        """The caller, from the ``Authorization`` header or (for EventSource) a query token.

        Raises :class:`ApiError` 401 (with ``WWW-Authenticate``) for every failure.
        """
        try:
            token = bearer_token(authorization)
        except TokenError as exc:
            raise unauthorized(exc.code, exc.message) from None
        if token is None and query_token:
            token = query_token
        if token is None:
            raise unauthorized("unauthorized", "missing bearer token", token_presented=False)
        try:
            claims = verify_token(self.settings, token, self.wall_clock())
        except TokenError as exc:
            raise unauthorized(exc.code, exc.message) from None
        user = await self.user(claims.sub)
        if user is None or user.disabled:
            raise unauthorized("invalid_token", "user is disabled or no longer exists")
        if claims.ver != user.token_version:
            raise unauthorized(
                "invalid_token", "token was revoked (password change or account change)"
            )
        return Principal(user.username, user.role)


# -- login -----------------------------------------------------------------------------


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    username: str = Field(min_length=1, max_length=USERNAME_MAX_LENGTH)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


def parse_login(body: bytes) -> LoginRequest:
    if len(body) > MAX_LOGIN_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"body exceeds {MAX_LOGIN_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "body must be JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", 'body must be {"username": ..., "password": ...}')
    try:
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        raise ApiError(400, "bad_request", f"invalid login request: {', '.join(fields)}") from None


INVALID_CREDENTIALS = "invalid username or password"


@dataclass
class LoginService:
    settings: Settings
    lookup: UserLookup
    throttle: LoginThrottle
    wall_clock: Callable[[], datetime] = utc_now
    verify: Callable[[str, str], bool] = verify_password
    # The decoy must cost what real hashes cost (``alpha-panda users create`` uses the
    # default); tests lower it for speed.
    decoy_rounds: int = DEFAULT_ROUNDS
    _dummy_hash: str | None = None

    async def _decoy_hash(self) -> str:
        # Same cost as a real user's hash, so an unknown username takes as long to refuse.
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(
                hash_password, "decoy-password-never-matches", rounds=self.decoy_rounds
            )
        return self._dummy_hash

    async def login(self, body: bytes, address: str) -> IssuedToken:
        request = parse_login(body)
        wait = self.throttle.retry_after(request.username, address)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too_many_requests",
                f"too many failed logins; retry in {seconds} s",
                {"Retry-After": str(seconds)},
            )
        try:
            user = await self.lookup(request.username)
        except Exception as exc:
            log.warning("login_user_lookup_failed", error=f"{type(exc).__name__}: {exc}")
            raise ApiError(
                503, "auth_unavailable", "the user store is unavailable; try again shortly"
            ) from None
        stored = user.password_hash if user is not None else await self._decoy_hash()
        # bcrypt runs for unknown users too (against the decoy) so timing says nothing.
        matches = await asyncio.to_thread(self.verify, request.password, stored)
        if user is None or not matches or user.disabled:
            self.throttle.record_failure(request.username, address)
            log.info(
                "login_failed",
                username=request.username[:USERNAME_MAX_LENGTH],
                address=address,
                reason="disabled" if user is not None and matches else "credentials",
            )
            raise ApiError(401, "invalid_credentials", INVALID_CREDENTIALS)
        self.throttle.record_success(request.username)
        log.info("login_succeeded", username=user.username, address=address)
        return issue_token(
            self.settings, user.username, user.role, self.wall_clock(), version=user.token_version
        )
