"""Dead letters of the scan log: list them, and replay them once they can be stored; both
audited, whether asked through the API or the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from passcode.store import audit, deadletters
from passcode.store.deadletters import KeptLetter
from passcode.store.pg import Pool, acquire
from passcode.store.scans import ScanRecord, decode_entry, insert_isolating, unstorable_reason

# Re-exported store types appear in the api's signatures; the api imports no store module.
__all__ = [
    "DeadLetterPage",
    "KeptLetter",
    "ReplayReport",
    "list_dead_letters",
    "replay_dead_letters",
]

REPLAY_PAGE = 500  # dead letters decoded and stored per transaction group


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    letters: list[KeptLetter]
    total: int  # dead letters kept in all


@dataclass(frozen=True, slots=True)
class ReplayReport:
    replayed: int  # stored in the scan log and forgotten as dead letters
    failed: int  # still not storable; kept, with the new reason
    remaining: int  # dead letters kept after the replay


async def list_dead_letters(
    pool: Pool, *, actor: str, after_id: int, limit: int, timeout: float
) -> DeadLetterPage:
    """A page of dead letters, oldest first, after the ``after_id`` cursor; the read is
    recorded (``dead_letters.read``, by ``actor``, with the rows returned) before it is
    answered."""
    letters = await deadletters.page(pool, after_id=after_id, limit=limit, timeout=timeout)
    total = await deadletters.count(pool, timeout=timeout)
    await audit.record(
        pool,
        actor=actor,
        action="dead_letters.read",
        target={"cursor": after_id},
        rows=len(letters),
        timeout=timeout,
    )
    return DeadLetterPage(letters, total)


async def replay_dead_letters(
    pool: Pool, *, actor: str, limit: int, dedupe_window: int, timeout: float
) -> ReplayReport:
    """Decode and store up to ``limit`` dead letters, oldest first, as the drain would have
    (after a fix to the decoder or the schema, say): those stored leave the dead-letter table,
    the rest stay with the reason they fail for now. Storing is idempotent, so a replay cut
    short and run again stores nothing twice.

    Each page (:data:`REPLAY_PAGE` letters) is settled in one transaction with its audit entry
    (``dead_letters.replay`` by ``actor``: the ``limit`` asked, the ``page`` (1-based) and how
    many of it still fail; rows: those it stored), so no dead letter leaves or changes
    unaudited however a replay ends. A replay that finds none is audited as page 0."""
    replayed = failed = pages = 0
    cursor, requested = 0, limit
    while limit > 0:
        letters = await deadletters.page(
            pool, after_id=cursor, limit=min(REPLAY_PAGE, limit), timeout=timeout
        )
        if not letters:
            break
        cursor, limit = letters[-1].id, limit - len(letters)
        records: list[ScanRecord] = []
        owners: list[int] = []
        still: dict[int, str] = {}
        for kept in letters:
            try:
                records.append(decode_entry(kept.letter.fields))
                owners.append(kept.id)
            except ValueError as exc:
                still[kept.id] = unstorable_reason(exc)
        refused = await insert_isolating(
            pool, records, timeout=timeout * 5, dedupe_window=dedupe_window
        )
        still.update({owners[n]: reason for n, reason in refused.items()})
        stored = [owner for n, owner in enumerate(owners) if n not in refused]
        pages += 1
        async with acquire(pool, "settle dead letters", timeout) as conn, conn.transaction():
            await deadletters.settle(conn, stored=stored, failed=still, timeout=timeout)
            await audit.append(
                conn,
                actor=actor,
                action="dead_letters.replay",
                target={"limit": requested, "page": pages, "failed": len(still)},
                rows=len(stored),
            )
        replayed += len(stored)
        failed += len(still)
    if not pages:
        await audit.record(
            pool,
            actor=actor,
            action="dead_letters.replay",
            target={"limit": requested, "page": 0, "failed": 0},
            rows=0,
            timeout=timeout,
        )
    return ReplayReport(replayed, failed, await deadletters.count(pool, timeout=timeout))
