"""Keyed hashing and sealing of identity-provider user ids (DESIGN §1).

Lookups use an HMAC of the user id, so the database never holds it in the clear; the id is
kept sealed (AES-GCM) for audited tracing only.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _derive(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), label, hashlib.sha256).digest()


class Sealer:
    """Derives independent keys for hashing and sealing from one server secret."""

    def __init__(self, secret: str) -> None:
        self._hash_key = _derive(secret, b"passcode/user-hash/v1")
        self._aead = AESGCM(_derive(secret, b"passcode/user-seal/v1"))
        self._cert_key = _derive(secret, b"passcode/certificate-hash/v1")

    def user_hash(self, issuer: str, user_id: str) -> bytes:
        return hmac.new(self._hash_key, f"{issuer}\0{user_id}".encode(), hashlib.sha256).digest()

    def certificate_hash(self, kind: str, issuer: str, certificate_id: str) -> bytes:
        """What the scan log keeps of a foreign certificate's id (DESIGN §3): 16 bytes of an
        HMAC under its own key, enough to tell repeated scans of one certificate apart from
        others, and nothing a reader of the log can turn back into the id."""
        text = f"{kind}\0{issuer}\0{certificate_id}".encode()
        return hmac.new(self._cert_key, text, hashlib.sha256).digest()[:16]

    def seal(self, user_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, user_id.encode(), b"user-id")

    def open(self, sealed: bytes) -> str:
        return self._aead.decrypt(sealed[:12], sealed[12:], b"user-id").decode()


def secret_hash(credential: str) -> bytes:
    """Terminal and admin keys are random and long, so SHA-256 is enough to store them."""
    return hashlib.sha256(credential.encode()).digest()
