"""The live keyring: reloaded from its folder while the service runs, so rotation needs no restart."""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from passcode.store.keyring import Keyring, SigningKey, listing, load_keyring

log = logging.getLogger(__name__)


class KeyringHolder:
    """Holds the current keyring and the verification keys derived from it."""

    def __init__(
        self, keys_dir: Path, keyring: Keyring, *, retire_after: int, card_retire_after: int = 0
    ) -> None:
        self.keys_dir = keys_dir
        self.retire_after = retire_after
        # A printed card lives up to a year: the key that signed it verifies it that long
        # after its successor took over, for cards only (phones' passes keep retire_after).
        self.card_retire_after = max(card_retire_after, retire_after)
        self._listing = listing(keys_dir)
        self.keyring = keyring
        self._verify_keys: dict[bytes, Ed25519PublicKey] = {}
        self._verify_keys_at = -1
        self._card_keys: dict[bytes, Ed25519PublicKey] = {}
        self._card_keys_at = -1

    def reload_if_changed(self) -> bool:
        """Re-read the folder when its file list changed (a rotation); cheap otherwise."""
        current = listing(self.keys_dir)
        if current == self._listing:
            return False
        self.keyring = load_keyring(self.keys_dir)
        self._listing = current
        self._verify_keys_at = self._card_keys_at = -1
        log.info("signing keys reloaded: %d keys", len(self.keyring.keys))
        return True

    def signer(self, now: int) -> SigningKey:
        return self.keyring.signer(now)

    def verification_keys(self, now: int) -> dict[bytes, Ed25519PublicKey]:
        """Recomputed at most once a second: the set only changes at activation and retirement."""
        if now != self._verify_keys_at:
            self._verify_keys = self.keyring.verification_keys(now, retire_after=self.retire_after)
            self._verify_keys_at = now
        return self._verify_keys

    def card_keys(self, now: int) -> dict[bytes, Ed25519PublicKey]:
        """The keys a printed card may be signed by: :meth:`verification_keys` and those
        retired within :attr:`card_retire_after` (a superset)."""
        if now != self._card_keys_at:
            self._card_keys = self.keyring.verification_keys(
                now, retire_after=self.card_retire_after
            )
            self._card_keys_at = now
        return self._card_keys
