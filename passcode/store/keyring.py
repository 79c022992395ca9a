"""Signing keys in files: load, create, rotate, and which key signs or verifies when.

A key is one JSON file ``<activates_at>-<kid>.json`` (mode 0600) under ``<keys>/signing``.
Rotation writes the next key with ``activates_at`` in the future, so it is published in
``/v1/keys`` before it signs anything; a key that stopped signing stays published until every
pass it signed has expired (its successor's activation + pass lifetime + clock skew).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from passcode.domain.passfmt import kid_of


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: bytes
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    activates_at: int

    @property
    def public_raw(self) -> bytes:
        return self.public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    key: SigningKey
    not_before: int
    not_after: int | None  # None: still signing, or the newest


class NoSigningKey(RuntimeError):
    """The key folder holds no key; run ``passcode keys init``."""


@dataclass(frozen=True, slots=True)
class Keyring:
    keys: tuple[SigningKey, ...]  # by activation time, oldest first

    def signer(self, now: int) -> SigningKey:
        """The newest key already active; never one that is only published."""
        active = [k for k in self.keys if k.activates_at <= now]
        if not active:
            raise NoSigningKey("no active signing key")
        return active[-1]

    def published(self, now: int, *, retire_after: int) -> list[PublishedKey]:
        """Keys a verifier must know now: active, upcoming, and recently retired ones."""
        shown = []
        for index, key in enumerate(self.keys):
            successor = self.keys[index + 1] if index + 1 < len(self.keys) else None
            not_after = None
            if successor is not None and successor.activates_at <= now:
                not_after = successor.activates_at + retire_after
                if not_after < now:
                    continue
            shown.append(PublishedKey(key, key.activates_at, not_after))
        return shown

    def verification_keys(self, now: int, *, retire_after: int) -> dict[bytes, Ed25519PublicKey]:
        return {p.key.kid: p.key.public for p in self.published(now, retire_after=retire_after)}


def _folder(keys_dir: Path) -> Path:
    return keys_dir / "signing"


def listing(keys_dir: Path) -> tuple[str, ...]:
    """File names, cheap to compare: the reload task re-reads keys only when this changes."""
    folder = _folder(keys_dir)
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name for p in folder.glob("*.json")))


def load_keyring(keys_dir: Path) -> Keyring:
    keys = []
    for name in listing(keys_dir):
        data = json.loads((_folder(keys_dir) / name).read_text(encoding="utf-8"))
        private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data["private_key"]))
        public = private.public_key()
        keys.append(
            SigningKey(
                kid=kid_of(public),
                private=private,
                public=public,
                activates_at=int(data["activates_at"]),
            )
        )
    keys.sort(key=lambda k: (k.activates_at, k.kid))
    return Keyring(tuple(keys))


def add_key(keys_dir: Path, *, activates_at: int) -> SigningKey:
    """Write a new key file that nobody else can read."""
    folder = _folder(keys_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    kid = kid_of(public)
    raw = private.private_bytes_raw()
    path = folder / f"{activates_at:012d}-{kid.hex()}.json"
    body = json.dumps(
        {
            "kid": kid.hex(),
            "activates_at": activates_at,
            "private_key": base64.b64encode(raw).decode(),
        }
    )
    tmp = path.with_suffix(f".tmp{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.rename(path)
    return SigningKey(kid=kid, private=private, public=public, activates_at=activates_at)


def ensure_key(keys_dir: Path, *, now: int) -> Keyring:
    """The keyring, with a first key active now if the folder had none."""
    if not listing(keys_dir):
        add_key(keys_dir, activates_at=now)
    return load_keyring(keys_dir)


def rotate(keys_dir: Path, *, now: int, publish_lead: int) -> SigningKey:
    """Add the next key; it signs only after ``publish_lead`` seconds of being published."""
    return add_key(keys_dir, activates_at=now + publish_lead)


def load_or_create_secret(path: Path) -> str:
    """A random server secret kept in a 0600 file; dev mode only, production sets it."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return value


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """The dev identity provider's key: created once, then reused so old tokens stay valid."""
    if path.exists():
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes()))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = Ed25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(private.private_bytes_raw()))
    return private
