"""API keys: created once, stored only as SHA-256 hashes next to their id, tenant and limits.

A key looks like ``ipk_<id>_<secret>``: the id (12 hex digits) finds the record, the SHA-256 of the
whole key (compared in constant time) proves it. Keys are random 256-bit secrets, so a plain hash
is as strong as a slow one; the file never holds a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

import yaml
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferplane.configfile import ConfigError, format_validation_error

KEY_PREFIX = "ipk_"
HASH_PREFIX = "sha256:"


class KeyRecord(BaseModel):
    """One key as stored: never the key itself."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the public part of the key (ipk_<id>_…)")
    hash: str = Field(description="sha256:<hex digest of the whole key>")
    tenant: str = Field(min_length=1, description="the tenant: the fairness id of every request made with the key")
    models: list[str] = Field(default_factory=list, description="models the key may use; empty = all")
    rpm: int | None = Field(default=None, ge=1, description="requests per minute for the tenant")
    tpm: int | None = Field(default=None, ge=1, description="tokens per minute for the tenant (prompt estimate + max_tokens)")
    created_at: int = 0
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyRecord] = Field(default_factory=list)


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str | None:
    """The id part of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    ident, sep, secret = key[len(KEY_PREFIX):].partition("_")
    return ident if sep and ident and secret else None


def new_key() -> tuple[str, str]:
    """``(id, key)`` for a fresh random key."""
    ident = secrets.token_hex(6)
    return ident, f"{KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"


def read_keys(path: Path) -> KeysFile:
    """The keys file (empty when it does not exist yet); a ConfigError names a bad field."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return KeysFile()
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"keys file {path} cannot be read: {exc}") from None
    try:
        return KeysFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"keys file {path}")) from None


def write_keys(path: Path, keys: KeysFile) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(keys.model_dump(mode="json"), out, sort_keys=False)
    os.replace(tmp, path)


def _lock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def create_key(path: Path, tenant: str, models: Iterable[str] = (), rpm: int | None = None,
               tpm: int | None = None) -> tuple[KeyRecord, str]:
    """Add a key to the file; returns its record and the key, which is shown once and never stored."""
    ident, key = new_key()
    try:
        record = KeyRecord(id=ident, hash=hash_key(key), tenant=tenant, models=sorted(set(models)), rpm=rpm, tpm=tpm,
                           created_at=int(time.time()))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "the new key")) from None
    with _lock(path):
        keys = read_keys(path)
        keys.keys.append(record)
        write_keys(path, keys)
    return record, key


def revoke_key(path: Path, ident: str) -> KeyRecord | None:
    """Mark the key revoked (kept for the record); None when no such active key."""
    ident = key_id(ident) or ident
    with _lock(path):
        keys = read_keys(path)
        for record in keys.keys:
            if record.id == ident and record.active:
                record.revoked_at = int(time.time())
                write_keys(path, keys)
                return record
    return None


class KeyStore:
    """Looks keys up for the auth service, re-reading the file when it changes (revocations apply at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, KeyRecord] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read the file if its modification time or size changed; a broken file keeps the old keys."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        self._by_id = {r.id: r for r in read_keys(self.path).keys if r.active}
        self._stamp = stamp

    def lookup(self, key: str) -> KeyRecord | None:
        """The active record of ``key``, or None when it is malformed, unknown, revoked or wrong."""
        try:
            self.reload()
        except ConfigError:
            pass
        ident = key_id(key)
        record = self._by_id.get(ident) if ident else None
        if record is None or not hmac.compare_digest(record.hash, hash_key(key)):
            return None
        return record

    def tenant_models(self, tenant: str) -> list[str] | None:
        """Models any active key of ``tenant`` may use; None = all (or a tenant with no keys: not restricted here)."""
        records = [r for r in self._by_id.values() if r.tenant == tenant]
        if not records or any(not r.models for r in records):
            return None
        return sorted({m for r in records for m in r.models})
