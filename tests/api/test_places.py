"""Places and their policies through the admin API, on real PostgreSQL: roles, audit entries,
versions, the policy in force at once on the replica that set it, and 400s naming the fault."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from passcode.domain.model import Kind
from passcode.domain.policy import DEFAULT_POLICY, policy_json
from passcode.keys import PLACES, POOL
from tests.helpers import PROBLEM, role_headers

Client = TestClient[Any, Any]

ONE_RULE = {
    "accepts": ["passcode", "eu-dcc"],
    "rules": [
        {
            "id": "VR-ANY",
            "description": "Any complete vaccination course",
            "certificate_types": ["v"],
            "logic": {">=": [{"var": "payload.v.0.dn"}, {"var": "payload.v.0.sd"}]},
        }
    ],
}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _audit(client: Client, action: str, key: str, value: str) -> list[asyncpg.Record]:
    async with client.app[POOL].acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT actor, outcome, target FROM audit_log WHERE action = $1"
                " AND target->>$2 = $3 ORDER BY id",
                action,
                key,
                value,
            )
        )


async def test_operator_describes_places_health_officer_sets_policies(client: Client) -> None:
    """PUT place is the operator's, policy PUTs the health officer's; the other gets 403."""
    operator = await role_headers(client, "operator", name="places-op")
    officer = await role_headers(client, "health_officer", name="places-ho")
    place, kind = _unique("北门"), _unique("metro")
    body = {"type": kind, "name": "North Gate"}
    refused = await client.put(f"/v1/admin/places/{place}", json=body, headers=officer)
    assert refused.status == 403
    assert refused.content_type == PROBLEM
    assert (
        await client.put(f"/v1/admin/places/{place}", json=body, headers=operator)
    ).status == 201
    for path in (f"/v1/admin/place-types/{kind}/policy", f"/v1/admin/places/{place}/policy"):
        assert (await client.put(path, json=ONE_RULE, headers=operator)).status == 403
        assert (await client.put(path, json=ONE_RULE, headers=officer)).status == 200
    assert (await client.get(f"/v1/admin/places/{place}", headers=officer)).status == 403


async def test_place_resolves_its_own_policy_else_its_types_else_the_default(
    client: Client,
) -> None:
    """GET shows the policy scans are judged by: default (v0), then the type's, then its own."""
    operator = await role_headers(client, "operator", name="places-op")
    officer = await role_headers(client, "health_officer", name="places-ho")
    place, kind = _unique("mall"), _unique("mall-type")
    made = await client.put(
        f"/v1/admin/places/{place}", json={"type": kind, "name": "City Mall"}, headers=operator
    )
    assert made.status == 201
    shown = await (await client.get(f"/v1/admin/places/{place}", headers=operator)).json()
    assert shown["name"] == "City Mall"
    assert shown["type"] == kind
    assert shown["policy"] == {"source": "default", "version": 0, **policy_json(DEFAULT_POLICY)}

    typed = await client.put(f"/v1/admin/place-types/{kind}/policy", json=ONE_RULE, headers=officer)
    assert (await typed.json())["version"] == 1
    shown = await (await client.get(f"/v1/admin/places/{place}", headers=operator)).json()
    assert (shown["policy"]["source"], shown["policy"]["version"]) == ("type", 1)
    assert shown["policy"]["rules"][0]["id"] == "VR-ANY"

    own = {"accepts": ["passcode"], "rules": []}
    assert (
        await client.put(f"/v1/admin/places/{place}/policy", json=own, headers=officer)
    ).status == 200
    shown = await (await client.get(f"/v1/admin/places/{place}", headers=operator)).json()
    assert shown["policy"] == {
        "source": "place",
        "version": 1,
        "accepts": ["passcode"],
        "rules": [],
    }
    # In force on this replica at once: verify reads the directory.
    policy = client.app[PLACES].policy_for(place)
    assert policy.accepts == frozenset({Kind.PASSCODE})
    assert client.app[PLACES].info(place) == ("City Mall", kind)


async def test_every_policy_change_is_a_new_version_and_old_ones_stay(client: Client) -> None:
    """Setting a type's policy three times keeps versions 1-3; the table refuses UPDATE."""
    officer = await role_headers(client, "health_officer", name="places-ho")
    kind = _unique("hospital")
    versions = []
    for accepts in (["passcode"], ["passcode", "card"], ["passcode", "card", "shc"]):
        answer = await client.put(
            f"/v1/admin/place-types/{kind}/policy",
            json={"accepts": accepts, "rules": []},
            headers=officer,
        )
        assert answer.status == 200
        versions.append((await answer.json())["version"])
    assert versions == [1, 2, 3]
    async with client.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            "SELECT version, set_by FROM place_policies WHERE scope = 'type' AND target = $1"
            " ORDER BY version",
            kind,
        )
        assert [r["version"] for r in rows] == [1, 2, 3]
        assert all("places-ho" in r["set_by"] for r in rows)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE place_policies SET policy = '{}' WHERE target = $1", kind)
    audited = await _audit(client, "place_policy.set", "target", kind)
    assert [a["outcome"] for a in audited] == ["ok"] * 3
    assert all("places-ho" in a["actor"] for a in audited)


async def test_changes_and_refusals_are_audited(client: Client) -> None:
    """place.set and place_policy.set entries name the place, type and version; a refusal
    for want of a role is recorded as denied."""
    operator = await role_headers(client, "operator", name="places-op")
    place, kind = _unique("office"), _unique("office-type")
    await client.put(
        f"/v1/admin/places/{place}", json={"type": kind, "name": "Tower"}, headers=operator
    )
    await client.put(
        f"/v1/admin/places/{place}", json={"type": kind, "name": "Tower B"}, headers=operator
    )
    entries = await _audit(client, "place.set", "place", place)
    assert len(entries) == 2
    assert '"created": true' in entries[0]["target"]
    assert '"Tower B"' in entries[1]["target"]
    assert (
        await client.put(f"/v1/admin/places/{place}/policy", json=ONE_RULE, headers=operator)
    ).status == 403
    async with client.app[POOL].acquire() as conn:
        denied = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'place_policy.set'"
            " AND outcome = 'denied' AND actor LIKE '%places-op%'"
        )
    assert denied >= 1


@pytest.mark.parametrize(
    ("policy", "detail"),
    [
        (
            {"accepts": ["eu-dcc"], "rules": [{**ONE_RULE["rules"][0], "logic": {"eval": [1]}}]},
            "rules[0].logic: unknown CertLogic operation 'eval'",
        ),
        ({"accepts": ["eu-dcc"]}, "rules"),
        ({"accepts": ["qr"], "rules": []}, "accepts"),
        (
            {"accepts": [], "rules": [ONE_RULE["rules"][0], ONE_RULE["rules"][0]]},
            "'VR-ANY' is used twice",
        ),
        (
            {
                "accepts": [],
                "rules": [{**ONE_RULE["rules"][0], "logic": {"plusTime": ["x", 1, "week"]}}],
            },
            "plusTime takes",
        ),
    ],
)
async def test_bad_policy_is_a_400_naming_what_is_wrong(
    client: Client, policy: dict[str, Any], detail: str
) -> None:
    """A policy the checks refuse is a problem+json 400 whose detail names the fault;
    nothing is stored."""
    officer = await role_headers(client, "health_officer", name="places-ho")
    kind = _unique("bad")
    answer = await client.put(f"/v1/admin/place-types/{kind}/policy", json=policy, headers=officer)
    assert answer.status == 400
    assert answer.content_type == PROBLEM
    assert detail in (await answer.json())["detail"]
    async with client.app[POOL].acquire() as conn:
        assert not await conn.fetchval("SELECT 1 FROM place_policies WHERE target = $1", kind)


async def test_bad_place_fields_are_400_and_unknown_place_policy_404(client: Client) -> None:
    """A blank type or name is a 400 naming it; a policy for a place never described a 404."""
    operator = await role_headers(client, "operator", name="places-op")
    officer = await role_headers(client, "health_officer", name="places-ho")
    place = _unique("gate")
    blank = await client.put(
        f"/v1/admin/places/{place}", json={"type": "  ", "name": "x"}, headers=operator
    )
    assert blank.status == 400
    assert "type" in (await blank.json())["detail"]
    missing = await client.put(f"/v1/admin/places/{place}", json={"type": "x"}, headers=operator)
    assert missing.status == 400
    unknown = await client.put(
        f"/v1/admin/places/{_unique('nowhere')}/policy", json=ONE_RULE, headers=officer
    )
    assert unknown.status == 404
    assert unknown.content_type == PROBLEM


async def test_place_no_one_described_is_judged_by_the_default(client: Client) -> None:
    """A place text terminals carry without a places row: name and type null, the default."""
    operator = await role_headers(client, "operator", name="places-op")
    shown = await (await client.get(f"/v1/admin/places/{_unique('bare')}", headers=operator)).json()
    assert (shown["name"], shown["type"]) == (None, None)
    assert shown["policy"]["source"] == "default"
