"""Reads of one subject's every record, for their own copy (``GET /v1/me/data``).

Each query is keyed by the one subject id; what is left out is said where: the authority's
actor names (``created_by``, ``uploaded_by``, ``issued_by``: officials, not the citizen), a
card's printed code (a credential, reprinted only by an authority), the sealed user id and
keyed hash (the citizen knows their own id; these are its protected forms).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from passcode.store.pg import Pool, acquire

MAX_SCANS = 10_000  # a copy's scans; far above 28 days of a commuter's (four a day)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


async def everything(
    pool: Pool, subject: bytes, *, since: datetime, now: datetime, timeout: float
) -> dict[str, Any] | None:
    """The subject's records as JSON-ready values (scans at or after ``since``; a card's state
    at ``now``), or None."""
    async with acquire(pool, "read my data", timeout) as conn, conn.transaction(readonly=True):
        head = await conn.fetchrow(
            "SELECT s.name_masked, s.created_at, t.color, t.reason, t.valid_until, t.version,"
            " t.updated_at FROM subjects s LEFT JOIN statuses t ON t.subject_id = s.id"
            " WHERE s.id = $1",
            subject,
            timeout=timeout,
        )
        if head is None:
            return None
        declarations = await conn.fetch(
            "SELECT id, declared_at, temperature_c, symptoms, regions, close_contact,"
            " idempotency_key FROM declarations WHERE subject_id = $1 ORDER BY declared_at, id",
            subject,
            timeout=timeout,
        )
        overrides = await conn.fetch(
            "SELECT color, reason, valid_from, valid_until, created_at FROM overrides"
            " WHERE subject_id = $1 ORDER BY created_at, id",
            subject,
            timeout=timeout,
        )
        exposures = await conn.fetch(
            "SELECT e.color, e.reason, e.valid_from, e.valid_until, e.created_at, r.place,"
            " r.window_start, r.window_end FROM exposures e LEFT JOIN risk_places r"
            " ON e.source = 'risk_place:' || r.id::text"
            " WHERE e.subject_id = $1 ORDER BY e.created_at, e.id",
            subject,
            timeout=timeout,
        )
        tests = await conn.fetch(
            "SELECT tested_at, result, uploaded_at FROM test_results WHERE subject_id = $1"
            " ORDER BY tested_at, result",
            subject,
            timeout=timeout,
        )
        cards = await conn.fetch(
            "SELECT serial, issued_at, expires_at, revoked_at, revoke_reason FROM cards"
            " WHERE subject_id = $1 ORDER BY issued_at, serial",
            subject,
            timeout=timeout,
        )
        scans = await conn.fetch(
            "SELECT scan_id, scanned_at, place, decision, reason, color, kind FROM scans"
            " WHERE subject_id = $1 AND scanned_at >= $2 ORDER BY scanned_at, scan_id"
            " LIMIT $3",
            subject,
            since,
            MAX_SCANS + 1,
            timeout=timeout,
        )
    status = None
    if head["version"] is not None:
        status = {
            "color": head["color"],
            "reason": head["reason"],
            "valid_until": _time(head["valid_until"]),
            "version": head["version"],
            "updated_at": _time(head["updated_at"]),
        }
    return {
        "subject": {"name_masked": head["name_masked"], "created_at": _time(head["created_at"])},
        "status": status,
        "declarations": [
            {
                "declaration_id": r["id"],
                "declared_at": _time(r["declared_at"]),
                "temperature_c": float(r["temperature_c"]),
                "symptoms": list(r["symptoms"]),
                "regions_visited": list(r["regions"]),
                "close_contact": r["close_contact"],
                "idempotency_key": r["idempotency_key"],
            }
            for r in declarations
        ],
        "overrides": [
            {
                "color": r["color"],
                "reason": r["reason"],
                "valid_from": _time(r["valid_from"]),
                "valid_until": _time(r["valid_until"]),
                "created_at": _time(r["created_at"]),
            }
            for r in overrides
        ],
        "exposures": [
            {
                "color": r["color"],
                "reason": r["reason"],
                "valid_from": _time(r["valid_from"]),
                "valid_until": _time(r["valid_until"]),
                "place": r["place"],
                "window_start": _time(r["window_start"]),
                "window_end": _time(r["window_end"]),
            }
            for r in exposures
        ],
        "test_results": [
            {
                "tested_at": _time(r["tested_at"]),
                "result": r["result"],
                "uploaded_at": _time(r["uploaded_at"]),
            }
            for r in tests
        ],
        "cards": [
            {
                "serial": bytes(r["serial"]).hex(),
                "issued_at": _time(r["issued_at"]),
                "expires_at": _time(r["expires_at"]),
                "state": _card_state(r["revoked_at"], r["expires_at"], now),
                "revoked_at": _time(r["revoked_at"]),
                "revoke_reason": r["revoke_reason"],
            }
            for r in cards
        ],
        "scans": [
            {
                "scan_id": str(r["scan_id"]),
                "scanned_at": _time(r["scanned_at"]),
                "place": r["place"],
                "decision": r["decision"],
                "reason": r["reason"],
                "color": r["color"],
                "kind": r["kind"],
            }
            for r in scans[:MAX_SCANS]
        ],
        "scans_since": _time(since),
        "scans_truncated": len(scans) > MAX_SCANS,
    }


def _card_state(revoked_at: datetime | None, expires_at: datetime, now: datetime) -> str:
    if revoked_at is not None:
        return "revoked"
    return "expired" if expires_at <= now else "active"


def nothing_held(*, since: datetime) -> dict[str, Any]:
    """The copy of a caller of whom nothing is held (never declared, or erased)."""
    return {
        "subject": None,
        "status": None,
        "declarations": [],
        "overrides": [],
        "exposures": [],
        "test_results": [],
        "cards": [],
        "scans": [],
        "scans_since": _time(since),
        "scans_truncated": False,
    }
