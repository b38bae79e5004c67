"""Tokens, the login throttle, the bearer guard and the login flow, without a server."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from pydantic import SecretStr

from alpha_panda import jwt_secret
from alpha_panda.jwt_secret import JwtSecretError, signing_key
from alpha_panda.passwords import hash_password
from alpha_panda.settings import PLACEHOLDER_JWT_SECRET, AuthSettings, Settings, load_settings
from web.auth import (
    INVALID_CREDENTIALS,
    USER_CACHE_TTL_S,
    ApiError,
    Authenticator,
    LoginService,
    LoginThrottle,
    TokenError,
    bearer_token,
    issue_token,
    verify_token,
)

NOW = datetime(2026, 1, 5, 9, 15, tzinfo=UTC)
_IAT = int(NOW.timestamp())
_EXP = _IAT + 600
SECRET = "unit-test-secret-long-enough-for-hs512-" + "0123456789" * 3
FAST = 4  # bcrypt cost for tests


def settings(
    secret: str = SECRET, ttl: int = 30, failures: int = 3, window: float = 60
) -> Settings:
    return load_settings(
        auth=AuthSettings(
            jwt_secret=SecretStr(secret),
            token_ttl_minutes=ttl,
            login_max_failures=failures,
            login_window_s=window,
        )
    )


def b64(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- tokens ----------------------------------------------------------------------------


def test_issued_token_verifies_with_its_claims_and_lifetime() -> None:
    issued = issue_token(settings(ttl=30), "alice", "trader", NOW)

    claims = verify_token(settings(), issued.access_token, NOW + timedelta(minutes=29))
    assert (claims.sub, claims.role) == ("alice", "trader")
    assert claims.iat == int(NOW.timestamp())
    assert claims.exp == int((NOW + timedelta(minutes=30)).timestamp())
    assert issued.expires_at == NOW + timedelta(minutes=30)
    assert jwt.get_unverified_header(issued.access_token)["alg"] == "HS256"
    assert issued.as_json() == {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_at": "2026-01-05T09:45:00+00:00",
    }


def test_token_expires_exactly_at_exp() -> None:
    token = issue_token(settings(ttl=30), "alice", "trader", NOW).access_token
    exp = NOW + timedelta(minutes=30)

    verify_token(settings(), token, exp - timedelta(seconds=1))
    with pytest.raises(TokenError) as err:
        verify_token(settings(), token, exp)
    assert err.value.code == "token_expired"


def test_tampered_payload_is_refused() -> None:
    token = issue_token(settings(), "alice", "trader", NOW).access_token
    header, _, signature = token.split(".")
    forged = ".".join(
        [header, b64({"sub": "alice", "role": "admin", "iat": 1, "exp": 2**40}), signature]
    )

    with pytest.raises(TokenError) as err:
        verify_token(settings(), forged, NOW)
    assert err.value.code == "invalid_token"
    assert "signature" in err.value.message


def test_token_signed_with_another_secret_is_refused() -> None:
    token = issue_token(
        settings(secret="another-secret-also-long-enough-0123456789"), "alice", "trader", NOW
    )

    with pytest.raises(TokenError, match="signature"):
        verify_token(settings(), token.access_token, NOW)


def test_alg_none_is_refused() -> None:
    claims = {"sub": "alice", "role": "admin", "iat": int(NOW.timestamp()), "exp": 2**40}
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    assert (
        jwt.decode(unsigned, options={"verify_signature": False})["sub"] == "alice"
    )  # well formed

    with pytest.raises(TokenError) as err:
        verify_token(settings(), unsigned, NOW)
    assert err.value.code == "invalid_token"


def test_other_hmac_algorithm_with_the_right_secret_is_refused() -> None:
    claims = {"sub": "alice", "role": "trader", "iat": int(NOW.timestamp()), "exp": 2**40}
    token = jwt.encode(claims, SECRET, algorithm="HS512")
    assert jwt.decode(token, SECRET, algorithms=["HS512"])["sub"] == "alice"  # valid as HS512

    with pytest.raises(TokenError, match="InvalidAlgorithmError"):
        verify_token(settings(), token, NOW)


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "trader", "ver": 0, "iat": _IAT, "exp": _EXP},  # no sub
        {"sub": "alice", "ver": 0, "iat": _IAT, "exp": _EXP},  # no role
        {"sub": "alice", "role": "trader", "ver": 0, "iat": _IAT},  # no exp
        {"sub": "alice", "role": "trader", "ver": 0, "exp": _EXP},  # no iat
        {"sub": "alice", "role": "trader", "iat": _IAT, "exp": _EXP},  # no ver
        {"sub": "alice", "role": "trader", "ver": -1, "iat": _IAT, "exp": _EXP},  # bad ver
        {"sub": "alice", "role": "trader", "ver": "0", "iat": _IAT, "exp": _EXP},  # str ver
        {"sub": "alice", "role": "root", "ver": 0, "iat": _IAT, "exp": _EXP},  # unknown role
        {"sub": "", "role": "trader", "ver": 0, "iat": _IAT, "exp": _EXP},  # empty sub
        {"sub": "alice", "role": "trader", "ver": 0, "iat": str(_IAT), "exp": _EXP},  # str iat
        {"sub": 7, "role": "trader", "ver": 0, "iat": _IAT, "exp": _EXP},  # sub not a string
    ],
)
def test_missing_or_malformed_claims_are_refused(claims: dict[str, object]) -> None:
    good = {"sub": "alice", "role": "trader", "ver": 0, "iat": _IAT, "exp": _EXP}
    verify_token(settings(), jwt.encode(good, SECRET, algorithm="HS256"), NOW)  # the baseline
    token = jwt.encode(claims, SECRET, algorithm="HS256")

    with pytest.raises(TokenError) as err:
        verify_token(settings(), token, NOW)
    assert err.value.code == "invalid_token"


def test_token_living_longer_than_the_ttl_is_refused() -> None:
    # Signed with the real key (say, by an old release or a leaked key) but with exp in
    # 2100: the lifetime is checked against iat and the configured TTL.
    year_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp())
    claims = {"sub": "alice", "role": "trader", "ver": 0, "iat": _IAT, "exp": year_2100}
    with pytest.raises(TokenError, match="lifetime") as err:
        verify_token(settings(ttl=30), jwt.encode(claims, SECRET, algorithm="HS256"), NOW)
    assert err.value.code == "invalid_token"

    exactly_ttl = {**claims, "exp": _IAT + 30 * 60}
    verify_token(settings(ttl=30), jwt.encode(exactly_ttl, SECRET, algorithm="HS256"), NOW)
    one_more = {**claims, "exp": _IAT + 30 * 60 + 1}
    with pytest.raises(TokenError, match="lifetime"):
        verify_token(settings(ttl=30), jwt.encode(one_more, SECRET, algorithm="HS256"), NOW)


def test_a_token_is_expired_once_its_iat_is_a_ttl_ago_even_after_a_ttl_cut() -> None:
    # Issued under a 60-minute TTL, verified after the operator cut the TTL to 30.
    token = issue_token(settings(ttl=60), "alice", "trader", NOW).access_token
    with pytest.raises(TokenError):
        verify_token(settings(ttl=30), token, NOW + timedelta(minutes=31))


def test_oversized_token_is_refused_before_decoding() -> None:
    claims = {"sub": "alice", "role": "trader", "ver": 0, "iat": _IAT, "exp": _EXP}
    big = jwt.encode({**claims, "pad": "x" * 4000}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="longer than") as err:
        verify_token(settings(), big, NOW)
    assert err.value.code == "invalid_token"


def test_the_placeholder_secret_never_signs_or_verifies(tmp_path: Path) -> None:
    dev = load_settings(data_dir=tmp_path)  # the placeholder left in place
    assert dev.auth.jwt_secret.get_secret_value() == PLACEHOLDER_JWT_SECRET
    issued = issue_token(dev, "alice", "trader", NOW)

    # Signed with the generated key, not the placeholder.
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(issued.access_token, PLACEHOLDER_JWT_SECRET, algorithms=["HS256"])
    assert verify_token(dev, issued.access_token, NOW).sub == "alice"
    claims = {"sub": "alice", "role": "admin", "ver": 0, "iat": _IAT, "exp": _EXP}
    placeholder_signed = jwt.encode(claims, PLACEHOLDER_JWT_SECRET, algorithm="HS256")
    with pytest.raises(TokenError, match="signature"):
        verify_token(dev, placeholder_signed, NOW)


def test_development_key_is_generated_once_owner_only_and_shared(tmp_path: Path) -> None:
    first = signing_key(load_settings(data_dir=tmp_path / "a"))
    path = tmp_path / "a" / "jwt_secret"
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 64 and first != PLACEHOLDER_JWT_SECRET

    # Another process (a restart, another stage) reads the same key from the file.
    jwt_secret._cache.clear()
    assert signing_key(load_settings(data_dir=tmp_path / "a")) == first
    # Another data directory is another deployment with its own key.
    assert signing_key(load_settings(data_dir=tmp_path / "b")) != first


def test_a_widened_key_file_is_tightened_and_a_bad_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("k" * 64)
    path.chmod(0o644)
    jwt_secret._cache.clear()
    assert signing_key(load_settings(data_dir=tmp_path)) == "k" * 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    path.write_text(PLACEHOLDER_JWT_SECRET)
    jwt_secret._cache.clear()
    with pytest.raises(JwtSecretError, match="no usable key"):
        signing_key(load_settings(data_dir=tmp_path))


def test_a_configured_secret_is_used_as_is_and_no_file_is_written(tmp_path: Path) -> None:
    configured = load_settings(data_dir=tmp_path, auth=AuthSettings(jwt_secret=SecretStr(SECRET)))
    assert signing_key(configured) == SECRET
    assert not (tmp_path / "jwt_secret").exists()


def test_token_issued_in_the_future_is_refused() -> None:
    token = issue_token(settings(), "alice", "trader", NOW + timedelta(minutes=5)).access_token

    with pytest.raises(TokenError, match="inconsistent"):
        verify_token(settings(), token, NOW)
    # within the skew allowance it is fine
    verify_token(
        settings(),
        issue_token(settings(), "a", "trader", NOW + timedelta(seconds=30)).access_token,
        NOW,
    )


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "....", "eyJ.eyJ.sig", "\u00e9.\u00e9.\u00e9"]
)
def test_garbage_tokens_are_invalid_not_errors(garbage: str) -> None:
    with pytest.raises(TokenError) as err:
        verify_token(settings(), garbage, NOW)
    assert err.value.code == "invalid_token"


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("   ") is None
    assert bearer_token("Bearer aaa.bbb.ccc") == "aaa.bbb.ccc"
    assert bearer_token("bearer  aaa.bbb.ccc ") == "aaa.bbb.ccc"
    for bad in ["aaa.bbb.ccc", "Basic dXNlcjpwYXNz", "Bearer", "Bearer aaa", "Bearer a.b.c d"]:
        with pytest.raises(TokenError):
            bearer_token(bad)


# -- throttle --------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_a_username_after_max_failures_from_any_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60, clock=clock)
    for i in range(3):
        assert throttle.retry_after("alice", f"10.0.0.{i}") is None
        throttle.record_failure("alice", f"10.0.0.{i}")
        clock.now += 1

    assert throttle.retry_after("alice", "10.9.9.9") == pytest.approx(57)  # oldest + 60 - now
    assert throttle.retry_after("bob", "10.9.9.9") is None  # other user, other address


def test_throttle_blocks_an_address_after_max_failures_for_any_username() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60, clock=clock)
    for name in ["a1", "a2", "a3"]:
        throttle.record_failure(name, "10.0.0.1")

    assert throttle.retry_after("brand-new-user", "10.0.0.1") == pytest.approx(60)
    assert throttle.retry_after("brand-new-user", "10.0.0.2") is None


def test_throttle_window_slides() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 60, clock=clock)
    throttle.record_failure("alice", "ip")  # t=1000
    clock.now = 1030
    throttle.record_failure("alice", "ip")  # t=1030
    assert throttle.retry_after("alice", "ip") == pytest.approx(30)

    clock.now = 1059.9
    assert throttle.retry_after("alice", "ip") is not None
    clock.now = 1060  # the first failure leaves the window; one left, below the limit
    assert throttle.retry_after("alice", "ip") is None
    throttle.record_failure("alice", "ip")  # t=1060: two in the window again
    assert throttle.retry_after("alice", "ip") == pytest.approx(30)  # until 1030 + 60


def test_success_clears_the_username_but_not_the_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 60, clock=clock)
    throttle.record_failure("alice", "ip")
    throttle.record_failure("alice", "ip")
    throttle.record_success("alice")

    assert throttle.retry_after("alice", "other-ip") is None
    assert throttle.retry_after("alice", "ip") is not None


def test_throttle_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60, clock=clock, max_keys=100)
    for i in range(1000):
        throttle.record_failure(f"user{i}", f"ip{i}")
    assert len(throttle._failures) <= 102


# -- the guard -------------------------------------------------------------------------


@dataclass
class User:
    username: str
    role: str = "trader"
    disabled: bool = False
    password_hash: str = ""
    token_version: int = 0


class Users:
    def __init__(self, *users: User) -> None:
        self.by_name = {u.username: u for u in users}
        self.calls = 0
        self.fail = False

    async def __call__(self, username: str) -> User | None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database down")
        return self.by_name.get(username)


def guard(users: Users, clock: Clock | None = None) -> Authenticator:
    return Authenticator(settings(), users, clock=clock or Clock(), wall_clock=lambda: NOW)


def token_for(name: str, at: datetime = NOW) -> str:
    return issue_token(settings(), name, "trader", at).access_token


async def refused(authn: Authenticator, header: str | None, query: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as err:
        await authn.authenticate(header, query)
    return err.value


async def test_guard_accepts_a_valid_token_and_uses_the_stored_role() -> None:
    authn = guard(Users(User("alice", role="admin")))
    principal = await authn.authenticate(f"Bearer {token_for('alice')}")
    assert (principal.username, principal.role) == ("alice", "admin")


async def test_guard_401s_carry_www_authenticate_and_the_error_format() -> None:
    authn = guard(Users(User("alice"), User("carol", disabled=True)))
    cases = {
        "missing": (None, "unauthorized"),
        "malformed": ("Token abc", "invalid_token"),
        "bad signature": (f"Bearer {token_for('alice')[:-2]}xx", "invalid_token"),
        "expired": (f"Bearer {token_for('alice', NOW - timedelta(hours=1))}", "token_expired"),
        "disabled": (f"Bearer {token_for('carol')}", "invalid_token"),
        "deleted": (f"Bearer {token_for('dave')}", "invalid_token"),
    }
    for name, (header, code) in cases.items():
        err = await refused(authn, header)
        assert err.status == 401, name
        assert err.code == code, name
        assert err.body() == {"error": {"code": code, "message": err.message}}, name
        challenge = err.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="alpha-panda"'), name
        assert ('error="invalid_token"' in challenge) is (header is not None), name


async def test_guard_takes_a_query_token_only_when_no_header_is_sent() -> None:
    authn = guard(Users(User("alice")))
    assert (await authn.authenticate(None, token_for("alice"))).username == "alice"
    # a malformed header is not rescued by a good query token
    assert (await refused(authn, "Bearer nonsense", token_for("alice"))).status == 401


async def test_guard_caches_users_for_a_few_seconds() -> None:
    users = Users(User("alice"))
    clock = Clock()
    authn = guard(users, clock)
    header = f"Bearer {token_for('alice')}"
    await authn.authenticate(header)
    await authn.authenticate(header)
    assert users.calls == 1

    users.by_name["alice"] = User("alice", disabled=True)
    clock.now += 4.9
    await authn.authenticate(header)  # cached: still allowed
    clock.now += 0.2
    assert (await refused(authn, header)).status == 401  # re-read: now disabled
    assert users.calls == 2


async def test_guard_refuses_tokens_of_an_older_token_version() -> None:
    users = Users(User("alice", token_version=0))
    clock = Clock()
    authn = guard(users, clock)
    old = f"Bearer {token_for('alice')}"
    await authn.authenticate(old)

    # A password change (or disable + re-enable) bumped the version.
    users.by_name["alice"] = User("alice", token_version=1)
    clock.now += USER_CACHE_TTL_S
    err = await refused(authn, old)
    assert (err.status, err.code) == (401, "invalid_token")
    assert "revoked" in err.message
    fresh = issue_token(settings(), "alice", "trader", NOW, version=1).access_token
    assert (await authn.authenticate(f"Bearer {fresh}")).username == "alice"


async def test_login_issues_tokens_under_the_users_current_version(alice_hash: str) -> None:
    service, _ = login_service(Users(User("alice", password_hash=alice_hash, token_version=3)))
    issued = await service.login(body("alice", "correct horse battery"), "10.0.0.1")
    assert verify_token(settings(), issued.access_token, NOW).ver == 3


async def test_guard_answers_503_when_the_user_store_is_down() -> None:
    users = Users(User("alice"))
    users.fail = True
    err = await refused(guard(users), f"Bearer {token_for('alice')}")
    assert (err.status, err.code) == (503, "auth_unavailable")


# -- login -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password("correct horse battery", rounds=FAST)


def login_service(users: Users, failures: int = 3) -> tuple[LoginService, list[str]]:
    checked: list[str] = []

    def verify(plain: str, hashed: str) -> bool:
        checked.append(hashed)
        from alpha_panda.passwords import verify_password

        return verify_password(plain, hashed)

    service = LoginService(
        settings(failures=failures),
        users,
        LoginThrottle(failures, 60, clock=Clock()),
        wall_clock=lambda: NOW,
        verify=verify,
        decoy_rounds=FAST,
    )
    return service, checked


def body(username: str, password: str) -> bytes:
    return json.dumps({"username": username, "password": password}).encode()


async def login_error(service: LoginService, payload: bytes, address: str = "10.0.0.1") -> ApiError:
    with pytest.raises(ApiError) as err:
        await service.login(payload, address)
    return err.value


async def test_login_issues_a_token_for_the_right_password(alice_hash: str) -> None:
    service, _ = login_service(Users(User("alice", role="admin", password_hash=alice_hash)))
    issued = await service.login(body("alice", "correct horse battery"), "10.0.0.1")

    claims = verify_token(settings(), issued.access_token, NOW)
    assert (claims.sub, claims.role) == ("alice", "admin")


async def test_unknown_user_and_wrong_password_look_the_same_and_both_run_bcrypt(
    alice_hash: str,
) -> None:
    service, checked = login_service(
        Users(
            User("alice", password_hash=alice_hash),
            User("carol", disabled=True, password_hash=alice_hash),
        ),
        failures=10,
    )
    wrong = await login_error(service, body("alice", "wrong password"))
    unknown = await login_error(service, body("nobody", "wrong password"))
    disabled = await login_error(service, body("carol", "correct horse battery"))

    for err in (wrong, unknown, disabled):
        assert (err.status, err.code, err.message) == (
            401,
            "invalid_credentials",
            INVALID_CREDENTIALS,
        )
    assert len(checked) == 3  # bcrypt ran for the unknown user as well
    assert checked[1].startswith("$2b$") and checked[1] != alice_hash  # against the decoy


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"alice"',
        b'{"username": "alice"}',
        b'{"password": "x"}',
        b'{"username": 1, "password": "x"}',
        b'{"username": "alice", "password": null}',
        b'{"username": "", "password": "x"}',
        b'{"username": "alice", "password": "x", "extra": 1}',
        b"\xff\xfe",
    ],
)
async def test_malformed_login_bodies_are_400(payload: bytes) -> None:
    service, checked = login_service(Users())
    err = await login_error(service, payload)
    assert (err.status, err.code) == (400, "bad_request")
    assert checked == []


async def test_oversized_login_body_is_413() -> None:
    service, _ = login_service(Users())
    err = await login_error(service, body("alice", "x" * 9000))
    assert err.status == 413


async def test_failed_logins_are_throttled_with_retry_after(alice_hash: str) -> None:
    service, checked = login_service(Users(User("alice", password_hash=alice_hash)), failures=3)
    for _ in range(3):
        assert (await login_error(service, body("alice", "wrong password"))).status == 401

    # the fourth attempt is refused even with the right password, before bcrypt runs
    ran = len(checked)
    err = await login_error(service, body("alice", "correct horse battery"), "10.0.0.2")
    assert (err.status, err.code) == (429, "too_many_requests")
    assert err.headers["Retry-After"] == "60"
    assert len(checked) == ran


async def test_login_answers_503_when_the_user_store_is_down() -> None:
    users = Users()
    users.fail = True
    service, _ = login_service(users)
    err = await login_error(service, body("alice", "whatever"))
    assert (err.status, err.code) == (503, "auth_unavailable")
