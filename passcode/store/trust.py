"""The trust store's rows: DCC document signers and SMART Health Card issuers.

Every write commits with its audit entry and a bump of the trust catalog's version
(:func:`passcode.store.catalogs.bump`), so a replica that reads the new version finds the new
rows, and no change is ever unaudited. :func:`load` reads the version and the rows in one
snapshot, so what a replica caches and the version it caches it under always agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from passcode.store import audit, catalogs
from passcode.store.catalogs import Catalog
from passcode.store.pg import Connection, Pool, acquire


@dataclass(frozen=True, slots=True)
class SignerRow:
    """A DCC document signer certificate as stored (``source``: the import format)."""

    kid: bytes
    der: bytes
    country: str | None
    source: str
    imported_at: datetime | None = None
    imported_by: str | None = None


@dataclass(frozen=True, slots=True)
class IssuerRow:
    """An SHC issuer as stored: its public JWKS and its CRLs by kid, both JSON objects."""

    iss: str
    name: str | None
    jwks: dict[str, Any]
    crls: dict[str, dict[str, Any]]
    imported_at: datetime | None = None
    imported_by: str | None = None


@dataclass(frozen=True, slots=True)
class StoredTrust:
    version: int  # the trust catalog's version these rows belong to
    signers: list[SignerRow]
    issuers: list[IssuerRow]


@dataclass(frozen=True, slots=True)
class SignersWritten:
    version: int
    added: int  # kids not stored before
    updated: int  # kids stored before, now with this import's certificate and source
    removed: int  # kids a replacing import dropped


async def load(pool: Pool, *, timeout: float) -> StoredTrust:
    """Everything, with the version it belongs to (one read-only snapshot)."""
    async with (
        acquire(pool, "load trust store", timeout) as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        version = await conn.fetchval(
            "SELECT version FROM catalog_versions WHERE name = $1",
            Catalog.TRUST.value,
            timeout=timeout,
        )
        signers = await conn.fetch(
            "SELECT kid, der, country, source, imported_at, imported_by"
            " FROM trust_dcc_signers ORDER BY kid",
            timeout=timeout,
        )
        issuers = await conn.fetch(
            "SELECT iss, name, jwks::text AS jwks, crls::text AS crls, imported_at, imported_by"
            " FROM trust_shc_issuers ORDER BY iss",
            timeout=timeout,
        )
    return StoredTrust(
        version=int(version or 0),
        signers=[
            SignerRow(
                bytes(r["kid"]),
                bytes(r["der"]),
                r["country"],
                r["source"],
                r["imported_at"],
                r["imported_by"],
            )
            for r in signers
        ],
        issuers=[
            IssuerRow(
                r["iss"],
                r["name"],
                json.loads(r["jwks"]),
                json.loads(r["crls"]),
                r["imported_at"],
                r["imported_by"],
            )
            for r in issuers
        ],
    )


async def put_signers(
    pool: Pool,
    signers: Sequence[SignerRow],
    *,
    replace: bool,
    actor: str,
    action: str,
    target: dict[str, Any],
    timeout: float,
) -> SignersWritten:
    """Add ``signers`` (a kid already stored takes the new certificate); with ``replace``,
    every stored signer not among them is removed. Audited as ``action`` with ``target`` plus
    the counts, and the catalog bumped, in the same transaction."""
    kids = [s.kid for s in signers]
    async with acquire(pool, "import DCC signers", timeout) as conn, conn.transaction():
        removed = 0
        if replace:
            dropped = await conn.fetch(
                "DELETE FROM trust_dcc_signers WHERE kid <> ALL($1::bytea[]) RETURNING kid",
                kids,
                timeout=timeout,
            )
            removed = len(dropped)
        written = await conn.fetch(
            "INSERT INTO trust_dcc_signers (kid, der, country, source, imported_by)"
            " SELECT kid, der, country, source, $5"
            " FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[])"
            " AS u(kid, der, country, source)"
            " ON CONFLICT (kid) DO UPDATE SET der = excluded.der, country = excluded.country,"
            " source = excluded.source, imported_at = now(), imported_by = excluded.imported_by"
            " RETURNING (xmax = 0) AS inserted",
            kids,
            [s.der for s in signers],
            [s.country for s in signers],
            [s.source for s in signers],
            actor,
            timeout=timeout,
        )
        added = sum(1 for r in written if r["inserted"])
        counts = {"added": added, "updated": len(written) - added, "removed": removed}
        await audit.append(
            conn, actor=actor, action=action, target={**target, **counts}, rows=len(written)
        )
        version = await _bump(conn, timeout)
    return SignersWritten(version, added, len(written) - added, removed)


async def remove_signer(
    pool: Pool, kid: bytes, *, actor: str, action: str, target: dict[str, Any], timeout: float
) -> int | None:
    """Remove one signer (audited, catalog bumped); the new version, or None if it was not
    stored (then nothing is written)."""
    async with acquire(pool, "remove DCC signer", timeout) as conn, conn.transaction():
        found = await conn.fetchval(
            "DELETE FROM trust_dcc_signers WHERE kid = $1 RETURNING kid", kid, timeout=timeout
        )
        if found is None:
            return None
        await audit.append(conn, actor=actor, action=action, target=target, rows=1)
        return await _bump(conn, timeout)


async def put_issuer(
    pool: Pool,
    issuer: IssuerRow,
    *,
    actor: str,
    action: str,
    target: dict[str, Any],
    timeout: float,
) -> tuple[int, bool]:
    """Store an issuer whole (keys and CRLs replace what was stored for its URL); audited,
    catalog bumped. The new version, and whether the issuer is new."""
    async with acquire(pool, "import SHC issuer", timeout) as conn, conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO trust_shc_issuers (iss, name, jwks, crls, imported_by)"
            " VALUES ($1, $2, $3::jsonb, $4::jsonb, $5)"
            " ON CONFLICT (iss) DO UPDATE SET name = excluded.name, jwks = excluded.jwks,"
            " crls = excluded.crls, imported_at = now(), imported_by = excluded.imported_by"
            " RETURNING (xmax = 0)",
            issuer.iss,
            issuer.name,
            json.dumps(issuer.jwks, sort_keys=True),
            json.dumps(issuer.crls, sort_keys=True),
            actor,
            timeout=timeout,
        )
        await audit.append(
            conn, actor=actor, action=action, target={**target, "new": bool(inserted)}, rows=1
        )
        return await _bump(conn, timeout), bool(inserted)


async def remove_issuer(
    pool: Pool, iss: str, *, actor: str, action: str, target: dict[str, Any], timeout: float
) -> int | None:
    """Remove one issuer (audited, catalog bumped); the new version, or None if it was not
    stored (then nothing is written)."""
    async with acquire(pool, "remove SHC issuer", timeout) as conn, conn.transaction():
        found = await conn.fetchval(
            "DELETE FROM trust_shc_issuers WHERE iss = $1 RETURNING iss", iss, timeout=timeout
        )
        if found is None:
            return None
        await audit.append(conn, actor=actor, action=action, target=target, rows=1)
        return await _bump(conn, timeout)


async def _bump(conn: Connection, timeout: float) -> int:
    return await catalogs.bump(conn, Catalog.TRUST, timeout=timeout)
