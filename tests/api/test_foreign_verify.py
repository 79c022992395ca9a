"""One terminal reads every code (一码通用, DESIGN §3, issue 14), end to end on real servers: an
EU DCC whose signer an operator imported is admitted under the default policy, refused by a
place whose policy does not accept it, invalid when its signer is unknown or its signature bad;
a SMART Health Card from the spec's example issuer likewise, and its revoked example is
`revoked`; a printed card reported lost is refused at the next scan; the scan log keeps kind,
issuer and a keyed hash of the certificate id, never the holder's name; a batch reads every kind.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from passcode.app import create_app
from passcode.config import Settings
from passcode.keys import DRAIN, POOL
from tests.dcc_maker import claims, make_signer, pcr_test, sign, vaccination
from tests.helpers import (
    ADMIN,
    Client,
    ClientFactory,
    FakeClock,
    new_terminal,
    role_headers,
    verify_ok,
)

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SHC_EXAMPLES = CORPUS / "shc" / "examples"
PLACE = "Foreign Office Hall"  # each test's place is its own (policies outlive a test)


def _now() -> int:
    return int(time.time())


def _signer() -> Any:
    now = _now()
    return make_signer(country="DE", not_before=now - 86_400 * 30, not_after=now + 86_400 * 365)


def _dcc(signer: Any, payload: dict[str, Any], **kw: Any) -> str:
    now = _now()
    return sign(signer, claims(payload, iat=now - 3600, exp=now + 86_400 * 30), **kw)


async def _trust(client: Client, *signers: Any) -> None:
    body = {"certificates": [base64.b64encode(s.der).decode() for s in signers]}
    response = await client.post("/v1/admin/trust/dcc", json=body, headers=ADMIN)
    assert response.status in (200, 201), await response.text()


async def _scan_rows(client: Client, scan_ids: list[str]) -> list[asyncpg.Record]:
    await client.app[DRAIN].drain_all()
    async with client.app[POOL].acquire() as conn:
        return await conn.fetch(
            "SELECT s.*, s.scan_id::text AS sid FROM scans s WHERE scan_id = ANY($1::uuid[])",
            [uuid.UUID(s) for s in scan_ids],
        )


async def test_a_trusted_dcc_is_admitted_by_the_default_policy_and_logged_without_its_holder(
    client: Client,
) -> None:
    """admit, kind eu-dcc, no colour, the name masked; the scan row has kind, issuer and a
    16-byte keyed hash, no subject, and nothing of the holder's name anywhere in it."""
    signer = _signer()
    await _trust(client, signer)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    body = await verify_ok(client, key, _dcc(signer, vaccination()))
    assert (body["decision"], body["reason"], body["kind"]) == ("admit", "ok", "eu-dcc")
    assert body["color"] is None
    name = body["holder"]["name"]
    assert "*" in name
    assert "Mustermann" not in name
    assert "Erika" not in name
    (row,) = await _scan_rows(client, [body["scan_id"]])
    assert (row["kind"], row["issuer"], row["decision"]) == ("eu-dcc", "XX", "admit")  # the CWT iss
    assert row["subject_id"] is None
    assert len(row["cert_hash"]) == 16
    assert "mustermann" not in json.dumps({k: str(v) for k, v in row.items()}).lower()


async def test_one_certificate_scanned_twice_keeps_one_hash_and_another_a_different_one(
    client: Client,
) -> None:
    signer = _signer()
    await _trust(client, signer)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    code = _dcc(signer, vaccination())
    other = vaccination()
    other["v"][0]["ci"] = "URN:UVCI:01:DE:OTHER0000001#Z"
    ids = [(await verify_ok(client, key, c))["scan_id"] for c in (code, code, _dcc(signer, other))]
    hashes = {r["sid"]: bytes(r["cert_hash"]) for r in await _scan_rows(client, ids)}
    assert hashes[ids[0]] == hashes[ids[1]] != hashes[ids[2]]


async def test_an_unknown_signer_a_bad_signature_and_an_expired_certificate_are_invalid(
    client: Client,
) -> None:
    trusted, stranger = _signer(), _signer()
    await _trust(client, trusted)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    now = _now()
    expired = sign(trusted, claims(vaccination(), iat=now - 86_400 * 2, exp=now - 86_400))
    cases = {
        _dcc(stranger, vaccination()): "unknown_key",
        _dcc(trusted, vaccination(), corrupt=True): "bad_signature",
        expired: "expired",
    }
    for code, reason in cases.items():
        body = await verify_ok(client, key, code)
        assert (body["decision"], body["reason"], body["kind"]) == ("invalid", reason, "eu-dcc")
        assert body["holder"] is None


async def test_a_place_whose_policy_refuses_foreign_certificates_denies_not_accepted(
    client: Client,
) -> None:
    """The policy is effective at the next scan; an old PCR test fails the default policy."""
    signer = _signer()
    await _trust(client, signer)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    old_test = await verify_ok(client, key, _dcc(signer, pcr_test()))
    assert (old_test["decision"], old_test["reason"]) == ("deny", "not_accepted")
    response = await client.put(
        f"/v1/admin/places/{place}", json={"type": "office", "name": place}, headers=ADMIN
    )
    assert response.status in (200, 201), await response.text()
    officer = await role_headers(client, "health_officer")
    policy = {"accepts": ["passcode", "card"], "rules": []}
    response = await client.put(f"/v1/admin/places/{place}/policy", json=policy, headers=officer)
    assert response.status in (200, 201), await response.text()
    body = await verify_ok(client, key, _dcc(signer, vaccination()))
    assert (body["decision"], body["reason"], body["kind"]) == ("deny", "not_accepted", "eu-dcc")


async def test_a_batch_reads_every_kind_in_order(client: Client) -> None:
    signer = _signer()
    await _trust(client, signer)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    scans = [{"code": _dcc(signer, vaccination())}, {"code": "hello"}, {"code": "PC1:A"}]
    response = await client.post(
        "/v1/verify/batch", json={"scans": scans}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status == 200, await response.text()
    results = (await response.json())["results"]
    assert [r["kind"] for r in results] == ["eu-dcc", None, "passcode"]
    assert [r["decision"] for r in results] == ["admit", "invalid", "invalid"]


def _shc_example(number: str) -> str:
    return (SHC_EXAMPLES / f"example-{number}-f-qr-code-numeric-value-0.txt").read_text().strip()


@pytest.fixture
def shc_issuer() -> dict[str, Any]:
    if not SHC_EXAMPLES.is_dir():
        pytest.skip(f"the SMART Health Cards examples are not at {SHC_EXAMPLES}")
    well_known = SHC_EXAMPLES / "issuer" / ".well-known"
    return {
        "iss": "https://spec.smarthealth.cards/examples/issuer",
        "jwks": json.loads((well_known / "jwks.json").read_text()),
        "crls": [json.loads(p.read_text()) for p in sorted((well_known / "crl").glob("*.json"))],
    }


async def test_smart_health_cards_from_a_trusted_issuer_are_read_and_a_revoked_one_refused(
    aiohttp_client: ClientFactory, settings: Settings, shc_issuer: dict[str, Any]
) -> None:
    """The spec's example 00 (two vaccine doses) is a valid card of kind shc; example 03's rid
    is on its issuer's revocation list: invalid/revoked. Before the import: unknown_key. The
    service runs on a clock inside the examples' validity (example 03 has expired since)."""
    app = create_app(dataclasses.replace(settings, clock=FakeClock(1_700_000_000.0)))
    client = await aiohttp_client(app)
    place = f"{PLACE} {uuid.uuid4().hex[:8]}"
    _, key = await new_terminal(client, place)
    before = await verify_ok(client, key, _shc_example("00"))
    assert (before["decision"], before["reason"], before["kind"]) == (
        "invalid",
        "unknown_key",
        "shc",
    )
    response = await client.post("/v1/admin/trust/shc", json=shc_issuer, headers=ADMIN)
    assert response.status in (200, 201), await response.text()
    valid = await verify_ok(client, key, _shc_example("00"))
    assert valid["kind"] == "shc"
    assert valid["decision"] in {"admit", "deny"}
    assert valid["reason"] in {"ok", "not_accepted"}
    assert valid["holder"] is not None
    assert "*" in valid["holder"]["name"]
    revoked = await verify_ok(client, key, _shc_example("03"))
    assert (revoked["decision"], revoked["reason"], revoked["kind"]) == (
        "invalid",
        "revoked",
        "shc",
    )
    rows = await _scan_rows(client, [valid["scan_id"], revoked["scan_id"]])
    assert {r["issuer"] for r in rows} <= {shc_issuer["iss"], None}
    assert all(r["kind"] == "shc" for r in rows)
