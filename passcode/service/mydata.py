"""A citizen's own data: their copy of everything held about them (PIPL Art. 45), and its
deletion on request (Art. 47), by themselves or in person through an authority.

Both find the subject by the keyed hash of the caller's user id, so no request can name another
citizen. The erasure itself is :func:`passcode.store.erasure.erase_subjects` (what goes, what an
authority's open ruling keeps, and why); its audit entry carries a random erasure id and never
a user id or a subject id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from passcode.domain.clock import SYSTEM_CLOCK, Clock
from passcode.domain.identity import Citizen
from passcode.domain.privacy import Sealer
from passcode.errors import SignInAgain
from passcode.store import mydata as records
from passcode.store.cache import Cache
from passcode.store.erasure import AuditNote, KeptRuling, erase_subjects
from passcode.store.pg import Pool
from passcode.store.statuses import find_subject

SELF_ACTOR = "citizen"  # the audit log's actor for a citizen's own request: never their id


@dataclass(frozen=True, slots=True)
class Erasure:
    """The answer to a deletion: what stayed (an authority's open rulings) and until when."""

    kept: tuple[KeptRuling, ...]


class MyData:
    def __init__(
        self,
        *,
        pool: Pool,
        cache: Cache,
        sealer: Sealer,
        idp_issuer: str,
        scan_retention_days: int,
        signin_window: int,
        pg_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.pool = pool
        self.cache = cache
        self.sealer = sealer
        self.idp_issuer = idp_issuer
        self.scan_retention_days = scan_retention_days
        self.signin_window = signin_window
        self.pg_timeout = pg_timeout
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    async def copy(self, citizen: Citizen) -> dict[str, Any]:
        """Everything held about the caller (scans within the retention period); empty lists
        when nothing is."""
        user_hash = self.sealer.user_hash(citizen.issuer, citizen.user_id)
        subject = await find_subject(self.pool, user_hash, timeout=self.pg_timeout)
        now = self._now()
        since = now - timedelta(days=self.scan_retention_days)
        found = None
        if subject is not None:
            found = await records.everything(
                self.pool, subject, since=since, now=now, timeout=self.pg_timeout
            )
        return records.nothing_held(since=since) if found is None else found

    async def erase_self(self, citizen: Citizen) -> Erasure:
        """Erase the caller, if their ID token was issued within the sign-in window (by the
        injected clock): a token stolen earlier cannot do it."""
        issued = citizen.issued_at
        if issued is None or self.clock.now() - issued > self.signin_window:
            raise SignInAgain(
                f"deleting your data needs a sign-in within the last {self.signin_window}"
                " seconds: sign in again, then repeat the request"
            )
        user_hash = self.sealer.user_hash(citizen.issuer, citizen.user_id)
        return await self._erase(user_hash, actor=SELF_ACTOR, channel="self")

    async def erase_in_person(self, user_id: str, *, actor: str) -> Erasure:
        """Erase a citizen who asked in person (an authority checked who they are)."""
        user_hash = self.sealer.user_hash(self.idp_issuer, user_id)
        return await self._erase(user_hash, actor=actor, channel="in_person")

    async def _erase(self, user_hash: bytes, *, actor: str, channel: str) -> Erasure:
        subject = await find_subject(self.pool, user_hash, timeout=self.pg_timeout)
        note = AuditNote(
            actor=actor, action="subject.erase", erasure_id=uuid.uuid4(), channel=channel
        )
        report = await erase_subjects(
            self.pool,
            self.cache,
            [] if subject is None else [subject],
            now=self._now(),
            timeout=self.pg_timeout,
            note=note,
        )
        return Erasure(report.kept)
