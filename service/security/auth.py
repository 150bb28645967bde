"""API keys and roles.

Keys are configured as `name:role:sha256(key)` entries (API_KEYS), so the configuration never holds
a usable secret. A presented key is hashed and compared in constant time against every entry.
Roles: `search` (read endpoints) and `admin` (everything, including /api/v1/admin/*).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

Role = Literal["search", "admin"]
ROLES: tuple[Role, ...] = ("search", "admin")
KEY_PREFIX = "avs_"


class ApiKeyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def may(self, required: Role) -> bool:
        return self.role == "admin" or self.role == required


@dataclass(frozen=True)
class _Entry:
    name: str
    role: Role
    digest: bytes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(name: str, role: Role) -> tuple[str, str]:
    """A fresh random key and its configuration entry."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"{name}:{role}:{hash_key(key)}"


def parse_entries(text: str | None) -> list[_Entry]:
    entries = []
    for raw in (text or "").replace("\n", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 3:
            raise ApiKeyConfigError(f"API_KEYS entry {item[:20]!r}... is not name:role:sha256hex")
        name, role, digest = parts
        if role not in ROLES:
            raise ApiKeyConfigError(f"API_KEYS entry '{name}': role must be one of {', '.join(ROLES)}")
        try:
            raw_digest = bytes.fromhex(digest)
        except ValueError as exc:
            raise ApiKeyConfigError(f"API_KEYS entry '{name}': the hash is not hex") from exc
        if len(raw_digest) != 32:
            raise ApiKeyConfigError(f"API_KEYS entry '{name}': expected a sha256 hex digest (64 characters)")
        entries.append(_Entry(name, role, raw_digest))  # type: ignore[arg-type]
    return entries


class KeyRing:
    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @classmethod
    def from_config(cls, text: str | None) -> KeyRing:
        return cls(parse_entries(text))

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def authenticate(self, key: str) -> Principal | None:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: _Entry | None = None
        # Compare with every entry, matched or not: the time taken does not say which one matched.
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return Principal(found.name, found.role) if found else None


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    key = headers.get(b"x-api-key", b"").decode("latin-1").strip()
    return key or None
