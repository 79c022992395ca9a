"""A scan keeps its subject only while the subject exists: one the drain stores just after its
subject was erased (DELETE /v1/me, the retention's purge) is kept, leading to no one."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from passcode.config import Settings
from passcode.store import pg
from passcode.store.cache import Cache
from passcode.store.scans import ScanRecord, insert_records
from tests.helpers import open_stores


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[tuple[pg.Pool, Cache]]:
    async with open_stores(settings, max_size=2) as made:
        yield made


def _record(subject: bytes | None) -> ScanRecord:
    return (
        datetime.now(UTC),
        str(uuid.uuid4()),
        None,
        str(uuid.uuid4()),
        "Subject Check Gate",
        subject,
        "admit",
        "ok",
        "green",
        False,
        "passcode",
        None,
        None,
    )


async def test_a_scan_of_an_erased_subject_is_stored_without_its_subject(
    stores: tuple[pg.Pool, Cache],
) -> None:
    pool, _ = stores
    kept, erased = os.urandom(16), os.urandom(16)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subjects (id, user_hash, user_id_enc, name_masked) VALUES ($1, $2, $3, $4)",
            kept,
            os.urandom(32),
            os.urandom(28),
            "张*三",
        )
    records = [_record(kept), _record(erased), _record(None)]
    assert await insert_records(pool, records, timeout=5, dedupe_window=60) == 3
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT scan_id::text AS sid, subject_id FROM scans WHERE scan_id = ANY($1::uuid[])",
            [uuid.UUID(r[1]) for r in records],
        )
    stored = {row["sid"]: row["subject_id"] for row in rows}
    assert stored == {records[0][1]: kept, records[1][1]: None, records[2][1]: None}
