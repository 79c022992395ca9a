"""A citizen's seeded history through the real API, for the copy and erasure tests: two
declarations (one with an Idempotency-Key), scans at a terminal, a negative test result, a
green override, a printed card (revoked), and optionally an open red ruling."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from passcode.keys import DRAIN, POOL, SEALER, SETTINGS
from passcode.store.statuses import find_subject
from passcode.testing import HEALTHY, auth
from tests.helpers import ADMIN, TokenFactory, declare, fetch_pass, role_headers, verify_ok

Client = TestClient[Any, Any]


@dataclass
class History:
    user_id: str
    token: str
    name: str
    masked: str
    subject: bytes
    user_hash: bytes
    sealed: bytes
    place: str
    scan_ids: list[str] = field(default_factory=list)
    card_serial: str = ""

    def needles(self) -> dict[str, bytes]:
        """What must never be found of this person once erased, as bytes and as hex text."""
        found = {
            "user id": self.user_id.encode(),
            "keyed hash": self.user_hash,
            "keyed hash (hex)": self.user_hash.hex().encode(),
            "sealed id": self.sealed,
            "masked name": self.masked.encode(),
        }
        for n, sid in enumerate(self.scan_ids):
            found[f"scan id {n}"] = sid.encode()
        return found


def cjk_name() -> tuple[str, str]:
    """A name whose mask (first and last character kept) no other test's subject shares:
    (full name, masked name)."""
    first, last = (chr(secrets.choice(range(0x4E00, 0x9FA5))) for _ in range(2))
    return f"{first}小{last}", f"{first}*{last}"


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat()


async def seed_history(
    client: Client,
    make_token: TokenFactory,
    terminal_key: str,
    place: str,
    *,
    name: str,
    masked: str,
    open_ruling: bool = False,
    drain: bool = True,
) -> History:
    """Seed one citizen's history; ``drain``: the scans stored in PostgreSQL (else left in the
    stream when the app's drain is off)."""
    user_id = f"erase-{uuid.uuid4().hex}"
    token = make_token(user_id=user_id, name=name)
    await declare(client, token, HEALTHY)
    response = await client.post(
        "/v1/declarations",
        json=HEALTHY,
        headers={**auth(token), "Idempotency-Key": f"k-{uuid.uuid4().hex}"},
    )
    assert response.status == 201, await response.text()
    code = await fetch_pass(client, token)
    scan_ids = [str(uuid.uuid4()) for _ in range(2)]
    for sid in scan_ids:
        assert (await verify_ok(client, terminal_key, code, scan_id=sid))["decision"] == "admit"
    csv = f"user_id,result,tested_at\n{user_id},negative,{ago(hours=3)}\n"
    uploaded = await client.post(
        "/v1/admin/test-results",
        data=csv.encode(),
        headers={**ADMIN, "Content-Type": "text/csv; charset=utf-8"},
    )
    assert uploaded.status == 200, await uploaded.text()
    released = {
        "user_id": user_id,
        "color": "green",
        "reason": "quarantine_release",
        "valid_until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }
    made = await client.post("/v1/admin/overrides", json=released, headers=ADMIN)
    assert made.status == 201, await made.text()
    worker = await role_headers(client, "community_worker", name="worker")
    card = await client.post(
        "/v1/admin/cards", json={"user_id": user_id, "name": name}, headers=worker
    )
    assert card.status == 201, await card.text()
    serial = (await card.json())["serial"]
    revoked = await client.post(
        f"/v1/admin/cards/{serial}/revoke", json={"reason": "lost"}, headers=worker
    )
    assert revoked.status == 200, await revoked.text()
    if open_ruling:
        red = {"user_id": user_id, "color": "red", "reason": "positive_test"}
        made = await client.post("/v1/admin/overrides", json=red, headers=ADMIN)
        assert made.status == 201, await made.text()
    if drain:
        await client.app[DRAIN].drain_all()
    settings = client.app[SETTINGS]
    user_hash = client.app[SEALER].user_hash(settings.idp_issuer, user_id)
    subject = await find_subject(client.app[POOL], user_hash, timeout=5)
    assert subject is not None
    sealed = await client.app[POOL].fetchval(
        "SELECT user_id_enc FROM subjects WHERE id = $1", subject
    )
    return History(
        user_id, token, name, masked, subject, user_hash, bytes(sealed), place, scan_ids, serial
    )


async def rows_of(client: Client, subject: bytes) -> dict[str, int]:
    """Rows naming ``subject`` in every subject-keyed table."""
    counts: dict[str, int] = {}
    async with client.app[POOL].acquire() as conn:
        for table, column in (
            ("subjects", "id"),
            ("declarations", "subject_id"),
            ("statuses", "subject_id"),
            ("overrides", "subject_id"),
            ("exposures", "subject_id"),
            ("test_results", "subject_id"),
            ("cards", "subject_id"),
            ("scans", "subject_id"),
        ):
            counts[table] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {column} = $1",  # noqa: S608  # fixed names
                subject,
            )
    return counts
