"""Versions of the catalogs every replica caches in process (trust store, place policies,
revoked cards): a change bumps its catalog's version in the change's own transaction, so a
replica that reads the new version finds the new rows."""

from __future__ import annotations

from enum import StrEnum

from passcode.store.pg import Connection, Pool, acquire


class Catalog(StrEnum):
    """The catalogs; one name each, used by the writers and the watcher alike."""

    TRUST = "trust"
    PLACES = "places"
    CARDS = "cards"


async def bump(conn: Connection, catalog: Catalog, *, timeout: float) -> int:
    """Mark ``catalog`` changed (call inside the change's transaction); its new version."""
    version = await conn.fetchval(
        "INSERT INTO catalog_versions (name, version) VALUES ($1, 1)"
        " ON CONFLICT (name) DO UPDATE"
        " SET version = catalog_versions.version + 1, changed_at = now()"
        " RETURNING version",
        catalog.value,
        timeout=timeout,
    )
    return int(version)


async def versions(pool: Pool, *, timeout: float) -> dict[str, int]:
    """Every catalog's version (a catalog never changed is absent: version 0)."""
    async with acquire(pool, "read catalog versions", timeout) as conn:
        rows = await conn.fetch("SELECT name, version FROM catalog_versions", timeout=timeout)
    return {row["name"]: int(row["version"]) for row in rows}
