"""The key that signs and verifies API tokens.

The settings' default secret is a public placeholder. Outside development the settings
refuse it; in development it is never used either: the first process that needs a key
generates a random one and keeps it in ``<data_dir>/jwt_secret`` (mode 0600), so every
stage of one deployment, and every restart, signs with the same key, and a token signed
with the placeholder (which anyone can read in the source) verifies nowhere.

The file is created atomically (written under a temporary name, then hard-linked into
place), so two stages starting together agree on one key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import structlog

from alpha_panda.settings import PLACEHOLDER_JWT_SECRET, Settings

log = structlog.get_logger(__name__)

SECRET_FILE_NAME = "jwt_secret"
# 48 random bytes, URL-safe base64: 64 characters, well above HS256's 32-byte minimum.
GENERATED_SECRET_BYTES = 48
MIN_SECRET_CHARS = 32

_cache: dict[Path, str] = {}


class JwtSecretError(Exception):
    """No usable signing key: the stored secret file is unreadable or too short."""


def secret_path(settings: Settings) -> Path:
    return Path(settings.data_dir).expanduser().resolve() / SECRET_FILE_NAME


def signing_key(settings: Settings) -> str:
    """The HS256 key of this deployment; never the placeholder.

    A configured secret (``ALPHA_PANDA_AUTH_JWT_SECRET``) is used as it is. With the
    placeholder left in place (development only; the settings refuse it elsewhere) the
    key comes from, or is generated into, the data directory.
    """
    configured = settings.auth.jwt_secret.get_secret_value()
    if configured != PLACEHOLDER_JWT_SECRET:
        return configured
    if settings.env != "development":  # the settings validator already refuses this
        raise JwtSecretError("auth.jwt_secret is the placeholder outside development")
    path = secret_path(settings)
    cached = _cache.get(path)
    if cached is None:
        cached = _load_or_create(path)
        _cache[path] = cached
    return cached


def _load_or_create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    value = secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            log.info("jwt_secret_generated", path=str(path))
        except FileExistsError:
            pass  # another stage won the race; its key is the deployment's key
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            # Someone widened it (or copied it with a umask): the key is only as secret
            # as the file, so put it back to owner-only rather than refuse to start.
            os.chmod(path, 0o600)
            log.warning("jwt_secret_permissions_tightened", path=str(path), was=oct(mode))
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise JwtSecretError(f"cannot read the JWT secret file {path}: {exc}") from None
    if len(value) < MIN_SECRET_CHARS or value == PLACEHOLDER_JWT_SECRET:
        raise JwtSecretError(
            f"the JWT secret file {path} holds no usable key (at least {MIN_SECRET_CHARS} "
            "characters); delete it to generate a new one (this logs everyone out)"
        )
    return value
