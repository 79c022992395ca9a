"""Scanner terminals: keys shown once and stored hashed; lookups cached in process."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from passcode.domain.privacy import secret_hash
from passcode.errors import StoreUnavailable
from passcode.store.pg import Connection, Pool, acquire

KEY_PREFIX = "pt_"


@dataclass(frozen=True, slots=True)
class Terminal:
    id: uuid.UUID
    place: str
    revoked: bool
    id_text: str = field(init=False, repr=False, compare=False)  # every scan record carries it

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_text", str(self.id))


@dataclass(frozen=True, slots=True)
class NewTerminal:
    id: uuid.UUID
    place: str
    key: str
    created_at: datetime


async def insert_terminal(conn: Connection, place: str) -> NewTerminal:
    """A new terminal at ``place`` and its key (returned once, stored only hashed), on the
    caller's connection (inside its transaction when it has one)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    terminal_id = uuid.uuid4()
    created_at = await conn.fetchval(
        "INSERT INTO terminals (id, place, key_hash) VALUES ($1, $2, $3) RETURNING created_at",
        terminal_id,
        place,
        secret_hash(key),
    )
    return NewTerminal(terminal_id, place, key, created_at)


async def add_terminal(pool: Pool, place: str, *, timeout: float) -> NewTerminal:
    """:func:`insert_terminal` on a connection of its own (seeding and benchmarks)."""
    async with acquire(pool, "add terminal", timeout) as conn:
        return await insert_terminal(conn, place)


async def revoke_terminal(conn: Connection, terminal_id: uuid.UUID) -> bool:
    """True when the terminal exists (revoking twice is harmless), on the caller's connection."""
    found = await conn.fetchval(
        "UPDATE terminals SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id",
        terminal_id,
    )
    return found is not None


class TerminalDirectory:
    """Key → terminal, cached for a few seconds so verify costs no Postgres query.

    Unknown keys are cached too, so a flood of bad keys cannot reach the database. A revoke made
    through this process takes effect at once; one made elsewhere within ``ttl`` seconds.
    """

    def __init__(self, pool: Pool, *, ttl: float, timeout: float, max_entries: int = 100_000):
        self.pool = pool
        self.ttl = ttl
        self.timeout = timeout
        self.max_entries = max_entries
        self._cache: dict[bytes, tuple[float, Terminal | None]] = {}

    async def lookup(self, key: str) -> Terminal | None:
        digest = secret_hash(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            async with acquire(self.pool, "find terminal", self.timeout) as conn:
                row = await conn.fetchrow(
                    "SELECT id, place, revoked_at IS NOT NULL AS revoked FROM terminals"
                    " WHERE key_hash = $1",
                    digest,
                )
        except StoreUnavailable:
            # Postgres down: verify must keep working from Redis (DESIGN §5), so a terminal
            # already known keeps its last answer, re-checked after another ``ttl``.
            if hit is None:
                raise
            self._cache[digest] = (now + self.ttl, hit[1])
            return hit[1]
        terminal = None if row is None else Terminal(row["id"], row["place"], row["revoked"])
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl, terminal)
        return terminal

    def forget(self, terminal_id: uuid.UUID) -> None:
        """Drop a terminal from the cache after a revoke made through this process."""
        for digest, (_, terminal) in list(self._cache.items()):
            if terminal is not None and terminal.id == terminal_id:
                del self._cache[digest]
