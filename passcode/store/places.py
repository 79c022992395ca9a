"""Places and their versioned policies in PostgreSQL, and the EU value sets from files.

Each write commits with its audit entry and a bump of the places catalog
(:func:`passcode.store.catalogs.bump`) in one transaction: a replica that sees the new catalog
version finds the change, and no change exists that the audit log does not name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from passcode.domain.policy import value_set_codes
from passcode.store import audit, catalogs
from passcode.store.catalogs import Catalog
from passcode.store.pg import Pool, acquire

SCOPE_TYPE = "type"
SCOPE_PLACE = "place"
MAX_VALUE_SET_FILE = 4 * 1024 * 1024  # the EU's largest (country codes) is under 20 kB


@dataclass(frozen=True, slots=True)
class Place:
    id: str
    type: str
    name: str


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """One version of a type's or a place's policy, as an operator's JSON."""

    scope: str
    target: str
    version: int
    policy: dict[str, Any]
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True)
class PlaceCatalog:
    """Everything a replica caches: every place, and the policy in force per type and place."""

    places: dict[str, Place]
    type_policies: dict[str, StoredPolicy]
    place_policies: dict[str, StoredPolicy]


async def put_place(
    pool: Pool, place_id: str, *, type_: str, name: str, actor: str, timeout: float
) -> bool:
    """Create the place or change its type and name; True when it is new. Audited
    (``place.set``) and the places catalog bumped in the same transaction."""
    async with acquire(pool, "set place", timeout) as conn, conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO places (id, type, name) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET type = excluded.type, name = excluded.name,"
            " updated_at = now()"
            " RETURNING (xmax = 0)",
            place_id,
            type_,
            name,
            timeout=timeout,
        )
        await audit.append(
            conn,
            actor=actor,
            action="place.set",
            target={"place": place_id, "type": type_, "name": name, "created": bool(created)},
            rows=1,
        )
        await catalogs.bump(conn, Catalog.PLACES, timeout=timeout)
    return bool(created)


async def find_place(pool: Pool, place_id: str, *, timeout: float) -> Place | None:
    async with acquire(pool, "find place", timeout) as conn:
        row = await conn.fetchrow(
            "SELECT id, type, name FROM places WHERE id = $1", place_id, timeout=timeout
        )
    return None if row is None else Place(row["id"], row["type"], row["name"])


async def add_policy(
    pool: Pool,
    *,
    scope: str,
    target: str,
    policy: dict[str, Any],
    actor: str,
    timeout: float,
) -> int:
    """A new version of ``scope``/``target``'s policy (the old ones stay); its version.
    Audited (``place_policy.set``) and the places catalog bumped in the same transaction."""
    async with acquire(pool, "set place policy", timeout) as conn, conn.transaction():
        # One writer per policy at a time, so two health officers never pick the same version.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(7412007, hashtext($1 || '/' || $2))",
            scope,
            target,
            timeout=timeout,
        )
        version = await conn.fetchval(
            "INSERT INTO place_policies (scope, target, version, policy, set_by)"
            " SELECT $1, $2, coalesce(max(version), 0) + 1, $3::jsonb, $4 FROM place_policies"
            " WHERE scope = $1 AND target = $2"
            " RETURNING version",
            scope,
            target,
            json.dumps(policy, ensure_ascii=False, sort_keys=True),
            actor,
            timeout=timeout,
        )
        await audit.append(
            conn,
            actor=actor,
            action="place_policy.set",
            target={
                "scope": scope,
                "target": target,
                "version": int(version),
                "rules": [rule["id"] for rule in policy.get("rules", [])],
                "accepts": policy.get("accepts", []),
            },
            rows=1,
        )
        await catalogs.bump(conn, Catalog.PLACES, timeout=timeout)
    return int(version)


async def load_catalog(pool: Pool, *, timeout: float) -> PlaceCatalog:
    """Every place and the newest version of every policy (one read, for the catalog)."""
    async with acquire(pool, "load places", timeout) as conn, conn.transaction(readonly=True):
        places = await conn.fetch("SELECT id, type, name FROM places", timeout=timeout)
        policies = await conn.fetch(
            "SELECT DISTINCT ON (scope, target) scope, target, version, policy, set_by, set_at"
            " FROM place_policies ORDER BY scope, target, version DESC",
            timeout=timeout,
        )
    by_scope: dict[str, dict[str, StoredPolicy]] = {SCOPE_TYPE: {}, SCOPE_PLACE: {}}
    for row in policies:
        by_scope[row["scope"]][row["target"]] = StoredPolicy(
            row["scope"],
            row["target"],
            int(row["version"]),
            json.loads(row["policy"]),
            row["set_by"],
            row["set_at"],
        )
    return PlaceCatalog(
        {row["id"]: Place(row["id"], row["type"], row["name"]) for row in places},
        by_scope[SCOPE_TYPE],
        by_scope[SCOPE_PLACE],
    )


def load_value_sets(folder: Path) -> dict[str, list[str]]:
    """The value sets of an eu-dcc-valuesets folder (one JSON document per set), by id, as the
    rules read them (``external.valueSets``). An empty file (a set left out, as the large
    test-manufacturer list is in some copies) is skipped; OSError or ValueError for an
    unreadable folder or a file that is not a value set."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.json")):
        size = path.stat().st_size
        if size == 0:
            continue
        if size > MAX_VALUE_SET_FILE:
            raise ValueError(f"{path.name}: larger than {MAX_VALUE_SET_FILE} bytes")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not an object")
            set_id, codes = value_set_codes(document)
        except ValueError as exc:
            raise ValueError(f"{path.name}: {exc}") from exc
        found[set_id] = codes
    return found
