"""Venue codes' current issue per place, and each place's venue terminal (migration 011).

Issuing is one transaction: the place checked, the next issue number taken under a per-place
lock, the venue terminal created at the first issue, the row written and the audit entry
appended, so no code exists that the audit log does not name.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from passcode.store import audit
from passcode.store.pg import Pool, acquire
from passcode.store.terminals import insert_terminal

ISSUE_ACTION = "venue.issue"
_LOCK = 7412015  # advisory lock namespace (first key) of venue issues, per place


@dataclass(frozen=True, slots=True)
class Venue:
    """A place's current poster: its code and issue, the place's name and venue terminal."""

    place: str
    name: str
    terminal_id: uuid.UUID
    issue: int
    code: str
    issued_at: datetime
    expires_at: datetime
    issued_by: str


_SELECT = (
    "SELECT v.place, p.name, v.terminal_id, v.issue, v.code, v.issued_at, v.expires_at,"
    " v.issued_by FROM venues v JOIN places p ON p.id = v.place WHERE v.place = $1"
)


def _venue(row: asyncpg.Record) -> Venue:
    return Venue(
        place=row["place"],
        name=row["name"],
        terminal_id=row["terminal_id"],
        issue=int(row["issue"]),
        code=row["code"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        issued_by=row["issued_by"],
    )


async def issue_venue(
    pool: Pool,
    place: str,
    *,
    make_code: Callable[[int], str],
    issued_at: datetime,
    expires_at: datetime,
    actor: str,
    timeout: float,
) -> Venue | None:
    """A new issue for ``place`` (the old one is revoked by it): ``make_code(issue)`` signs its
    code. None when the place does not exist. Audited (``venue.issue``) in the same
    transaction, naming the issue it revokes."""
    async with acquire(pool, "issue venue code", timeout) as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK, place, timeout=timeout
        )
        if await conn.fetchval("SELECT 1 FROM places WHERE id = $1", place) is None:
            return None
        current = await conn.fetchrow(
            "SELECT issue, terminal_id FROM venues WHERE place = $1", place, timeout=timeout
        )
        if current is None:
            terminal_id = (await insert_terminal(conn, place)).id  # its key is dropped here
            issue, revoked = 1, None
        else:
            terminal_id, revoked = current["terminal_id"], int(current["issue"])
            issue = revoked + 1
        code = make_code(issue)
        await conn.execute(
            "INSERT INTO venues (place, terminal_id, issue, code, issued_at, expires_at,"
            " issued_by) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (place) DO UPDATE SET issue = excluded.issue, code = excluded.code,"
            " issued_at = excluded.issued_at, expires_at = excluded.expires_at,"
            " issued_by = excluded.issued_by",
            place,
            terminal_id,
            issue,
            code,
            issued_at,
            expires_at,
            actor,
            timeout=timeout,
        )
        await audit.append(
            conn,
            actor=actor,
            action=ISSUE_ACTION,
            target={
                "place": place,
                "issue": issue,
                "revokes_issue": revoked,
                "terminal_id": str(terminal_id),
                "expires_at": expires_at.isoformat(),
            },
            rows=1,
        )
        row = await conn.fetchrow(_SELECT, place, timeout=timeout)
    assert row is not None  # just written, in this transaction
    return _venue(row)


async def find_venue(pool: Pool, place: str, *, timeout: float) -> Venue | None:
    """The place's current poster, or None when it has never had one."""
    async with acquire(pool, "find venue", timeout) as conn:
        row = await conn.fetchrow(_SELECT, place, timeout=timeout)
    return None if row is None else _venue(row)


# Fonts with Chinese glyphs, as Debian installs them (fonts-noto-cjk, fonts-wqy-microhei,
# fonts-wqy-zenhei); the first found draws the PNG posters' text.
POSTER_FONTS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
)
MAX_FONT_BYTES = 64 * 1024 * 1024


@functools.cache
def poster_font() -> bytes | None:
    """The bytes of the first CJK font installed (read once), or None when there is none."""
    for path in POSTER_FONTS:
        try:
            if path.stat().st_size <= MAX_FONT_BYTES:
                return path.read_bytes()
        except OSError:
            continue
    return None
