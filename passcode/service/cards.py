"""Printed cards (纸质码): a community worker issues one for a person without a smartphone,
revokes a lost one by its serial, and files declarations for its holder.

The person is named by the identity provider's user id the city holds for them, found or
created through the same keyed hash as a citizen's (the id itself only sealed), with the name the
worker gives stored masked. No ID number is asked for or kept.

:class:`CardRegistry` holds the revoked serials in process for verify: loaded whole at start-up
and whenever the ``cards`` catalog moves (this replica at once, the others within about a second).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from passcode.domain.cardsheet import DAY, card_days
from passcode.domain.clock import Clock, utc_now
from passcode.domain.masking import mask_name
from passcode.domain.model import Color
from passcode.domain.passfmt import PassClaims, sign_pass
from passcode.domain.privacy import Sealer
from passcode.domain.rules import Declaration, Policy, body_hash
from passcode.domain.status import LiveStatus
from passcode.errors import Conflict, NotFound, ValidationFailed
from passcode.service import status
from passcode.service.catalogs import CatalogWatcher
from passcode.service.signing import KeyringHolder
from passcode.store import audit, cards
from passcode.store.cache import Cache
from passcode.store.cards import StoredCard
from passcode.store.catalogs import Catalog
from passcode.store.pg import Pool, acquire
from passcode.store.statuses import StoredDeclaration, add_declaration, live_status, upsert_subject

SERIAL_LEN = 16
# Revoked cards that expired longer ago than this are refused as expired: no need to keep them.
_EXPIRED_KEPT = timedelta(days=1)


class CardRegistry:
    """The revoked serials, for an O(1) check on every scan of a card."""

    def __init__(self, pool: Pool, *, timeout: float, clock: Clock) -> None:
        self.pool = pool
        self.timeout = timeout
        self.clock = clock
        self._revoked: frozenset[bytes] = frozenset()

    async def reload(self) -> None:
        """Load the revoked, unexpired serials whole (the catalog watcher calls it)."""
        since = utc_now(self.clock) - _EXPIRED_KEPT
        self._revoked = await cards.revoked_serials(self.pool, since=since, timeout=self.timeout)

    def is_revoked(self, serial: bytes) -> bool:
        """Whether the card with this serial was reported lost (as last loaded)."""
        return serial in self._revoked


@dataclass(frozen=True, slots=True)
class IssuedCard:
    serial: bytes
    code: str
    holder: str
    issued_at: datetime
    expires_at: datetime


def parse_serial(text: str) -> bytes:
    """A serial from its lower-case hex text (as URLs and the CLI carry it); ValueError else."""
    if not 16 <= len(text) <= 64 or len(text) % 2 or text != text.lower():
        raise ValueError("a card serial is 8 to 32 bytes in lower-case hex")
    return bytes.fromhex(text)


class CardService:
    """Issuing, revoking and declaring for printed cards; every change audited."""

    def __init__(
        self,
        *,
        pool: Pool,
        cache: Cache,
        sealer: Sealer,
        keys: KeyringHolder,
        policy: Policy,
        issuer: str,
        idp_issuer: str,
        default_days: int,
        catalogs: CatalogWatcher,
        registry: CardRegistry,
        pg_timeout: float,
        clock: Clock,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.sealer = sealer
        self.keys = keys
        self.policy = policy
        self.issuer = issuer
        self.idp_issuer = idp_issuer
        self.default_days = card_days(None, default=default_days)
        self.catalogs = catalogs
        self.registry = registry
        self.pg_timeout = pg_timeout
        self.clock = clock

    async def issue(self, *, user_id: str, name: str, days: int | None, actor: str) -> IssuedCard:
        """A new card for the person, its row and audit entry in one transaction.

        The card's status claim holds the colour and version at issue, or red with version 0
        when the person has no valid status yet: a terminal that trusts the print offline then
        refuses rather than admits. Verify never reads it for a card (it judges the live colour).
        """
        try:
            lifetime = card_days(days, default=self.default_days)
        except ValueError as exc:
            raise ValidationFailed(str(exc), errors=["days"]) from exc
        now = utc_now(self.clock)
        issued_at = int(now.timestamp())
        expires_at = issued_at + lifetime * DAY
        serial = os.urandom(SERIAL_LEN)
        key = self.keys.signer(issued_at)
        async with acquire(self.pool, "issue card", self.pg_timeout) as conn, conn.transaction():
            subject = await upsert_subject(
                conn,
                subject_id=os.urandom(16),
                user_hash=self.sealer.user_hash(self.idp_issuer, user_id),
                sealed=self.sealer.seal(user_id),
                masked=mask_name(name),
            )
            live = await live_status(conn, subject)
            color, version = Color.RED, 0
            if live is not None and live.color is not None:
                color, version = live.color, live.version
            claims = PassClaims(
                issuer=self.issuer,
                subject=subject,
                issued_at=issued_at,
                expires_at=expires_at,
                token_id=os.urandom(8),
                color=color,
                version=version,
                card=serial,
            )
            code = sign_pass(claims, key.private, key.kid)
            await cards.add_card(
                conn,
                serial=serial,
                subject_id=subject,
                code=code,
                issued_by=actor,
                issued_at=datetime.fromtimestamp(issued_at, now.tzinfo),
                expires_at=datetime.fromtimestamp(expires_at, now.tzinfo),
            )
            found = await cards.find_card(conn, serial)
        assert found is not None  # just inserted
        return IssuedCard(serial, code, found.holder, found.issued_at, found.expires_at)

    async def card(self, serial: bytes) -> StoredCard:
        """The card with this serial; NotFound when there is none."""
        found = await cards.read_card(self.pool, serial, timeout=self.pg_timeout)
        if found is None:
            raise NotFound("no such card")
        return found

    async def revoke(self, serial: bytes, *, reason: str, actor: str) -> tuple[StoredCard, bool]:
        """Revoke a lost card (audited, the catalog bumped, this replica's registry reloaded at
        once); the card and whether this call revoked it (False: it already was)."""
        async with acquire(self.pool, "revoke card", self.pg_timeout) as conn:
            async with conn.transaction():
                revoked = await cards.revoke_card(
                    conn, serial, actor=actor, reason=reason, timeout=self.pg_timeout
                )
            if revoked is None:
                found = await cards.find_card(conn, serial)
                if found is None:
                    raise NotFound("no such card")
                return found, False
        await self.catalogs.changed(Catalog.CARDS)
        return revoked, True

    async def declare(
        self,
        serial: bytes,
        decl: Declaration,
        *,
        idempotency_key: str | None,
        body: object,
        actor: str,
    ) -> tuple[StoredDeclaration, LiveStatus]:
        """A declaration for the holder of a card in force, as a citizen's own is stored
        (durable, idempotent, the status derived in the same transaction, then published),
        audited (``card.declare``) with the worker as actor. Conflict for a revoked or expired
        card: its holder has, or needs, a new one."""
        now = utc_now(self.clock)
        async with acquire(self.pool, "declare for card holder", self.pg_timeout) as conn:
            async with conn.transaction():
                found = await cards.find_card(conn, serial)
                if found is None:
                    raise NotFound("no such card")
                if found.revoked_at is not None:
                    raise Conflict("this card is revoked: declare with the holder's new card")
                if found.expires_at <= now:
                    raise Conflict("this card has expired: issue a new one")
                stored = await add_declaration(
                    conn,
                    found.subject_id,
                    decl,
                    idempotency_key=idempotency_key,
                    request_hash=body_hash(body),
                )
                live = await status.write_one(conn, found.subject_id, now=now, policy=self.policy)
                if stored.created:
                    await audit.append(
                        conn,
                        actor=actor,
                        action="card.declare",
                        target={
                            "serial": serial.hex(),
                            "subject": found.subject_id.hex(),
                            "declaration_id": stored.id,
                        },
                        rows=1,
                    )
            assert live is not None  # the card's subject exists
            await status.publish(
                conn, self.cache, [(found.subject_id, live)], timeout=self.pg_timeout
            )
        return stored, live
