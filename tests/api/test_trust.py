"""The trust store over HTTP (issue 14): operators import DCC signers (both formats) and SHC
issuers, each change audited and in this replica's ``app[TRUST].current`` at once, published
by ``GET /v1/trust`` with an ETag; bad imports are 400s naming what is wrong, with nothing
stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from passcode.domain.dcc import kid_of
from passcode.keys import POOL, TRUST
from tests.helpers import ADMIN, assert_exact_problem, role_headers
from tests.trust_material import (
    b64,
    crl,
    dsc,
    issuer_jwk,
    issuer_url,
    kid64,
    trust_list_entry,
)

Client = TestClient[Any, Any]
DCC = "/v1/admin/trust/dcc"
SHC = "/v1/admin/trust/shc"
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def _url_kid(der: bytes) -> str:
    """The kid as a path segment: base64url (standard base64 may hold a "/")."""
    return kid64(der).replace("+", "-").replace("/", "_")


async def published(client: Client) -> dict[str, Any]:
    response = await client.get("/v1/trust")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def audit_rows(client: Client, action: str) -> list[asyncpg.Record]:
    async with client.app[POOL].acquire() as conn:
        return list(
            await conn.fetch("SELECT * FROM audit_log WHERE action = $1 ORDER BY id", action)
        )


async def test_imported_certificates_are_trusted_at_once_and_published(client: Client) -> None:
    """{certificates: [...]} of base64 DER: both kids in app[TRUST].current and in GET
    /v1/trust with their certificate and the country of their subject."""
    operator = await role_headers(client, "operator")
    first, second = dsc("DE"), dsc("FR")
    response = await client.post(
        DCC, json={"certificates": [b64(first), b64(second)]}, headers=operator
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["source"] == "certificates"
    assert (answer["added"], answer["updated"], answer["removed"]) == (2, 0, 0)
    assert sorted(answer["kids"]) == sorted([kid64(first), kid64(second)])

    current = client.app[TRUST].current
    assert current.version == answer["version"]
    assert current.dcc[kid_of(first)].der == first
    assert current.dcc[kid_of(second)].country == "FR"
    document = await published(client)
    assert document["version"] == answer["version"]
    listed = {entry["kid"]: entry for entry in document["dcc"]}
    assert listed[kid64(first)] == {"kid": kid64(first), "country": "DE", "certificate": b64(first)}
    assert listed[kid64(second)]["country"] == "FR"


async def test_an_eu_trust_list_imports_its_signers_only(client: Client) -> None:
    """The EU gateway's trust-list JSON: its DSC entries are trusted with the list's country;
    a CSCA entry is not a signer and is left out; importing again updates, adds nothing."""
    signer, csca = dsc("AT"), dsc("AT")
    body = [trust_list_entry(signer, "AT"), trust_list_entry(csca, "AT", kind="CSCA")]
    response = await client.post(DCC, json=body, headers=ADMIN)
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert (answer["source"], answer["kids"], answer["added"]) == ("trust-list", [kid64(signer)], 1)
    assert kid_of(signer) in client.app[TRUST].current.dcc
    assert kid_of(csca) not in client.app[TRUST].current.dcc

    again = await (await client.post(DCC, json=body, headers=ADMIN)).json()
    assert (again["added"], again["updated"]) == (0, 1)
    assert again["version"] > answer["version"]


async def test_replace_trusts_only_the_imported_signers(client: Client) -> None:
    """replace=true removes every signer not in the import; without it, nothing is removed."""
    old, new = dsc(), dsc()
    await client.post(DCC, json={"certificates": [b64(old)]}, headers=ADMIN)
    response = await client.post(
        DCC + "?replace=true", json={"certificates": [b64(new)]}, headers=ADMIN
    )
    answer = await response.json()
    assert response.status == 200
    assert answer["removed"] >= 1
    assert set(client.app[TRUST].current.dcc) == {kid_of(new)}
    assert [e["kid"] for e in (await published(client))["dcc"]] == [kid64(new)]


async def test_the_etag_answers_304_until_the_store_changes(client: Client) -> None:
    """GET /v1/trust is public and cacheable; If-None-Match with its ETag is a 304 without a
    body, until an import changes the document (then a new ETag and a 200)."""
    first = await client.get("/v1/trust")
    etag = first.headers["ETag"]
    assert "public" in first.headers["Cache-Control"]
    unchanged = await client.get("/v1/trust", headers={"If-None-Match": etag})
    assert unchanged.status == 304
    assert await unchanged.read() == b""
    assert unchanged.headers["ETag"] == etag

    await client.post(DCC, json={"certificates": [b64(dsc())]}, headers=ADMIN)
    changed = await client.get("/v1/trust", headers={"If-None-Match": etag})
    assert changed.status == 200
    assert changed.headers["ETag"] != etag


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"certificates": ["not base64!"]}, "certificates[0]"),
        ({"certificates": [b64(b"\x30\x03\x02\x01\x01")]}, "certificates[0]"),
        ({"certificates": [b64(dsc()), b64(dsc(unknown_critical=True))]}, "certificates[1]"),
        ({"certificates": [b64(dsc())], "more": 1}, "certificates"),
        ([{"certificateType": "DSC", "rawData": "%%%"}], "rawData"),
        ([{**trust_list_entry(dsc()), "kid": b64(b"12345678")}], "kid"),
        ([trust_list_entry(dsc(), kind="CSCA")], "no certificates"),
        ({"kid": 1}, "not a JSON array"),
        ([], "no certificates"),
        ({"certificates": [b64(dsc(padding=17_000))]}, "above 16384"),
    ],
)
async def test_a_bad_dcc_import_is_a_400_naming_it_and_stores_nothing(
    client: Client, body: Any, named: str
) -> None:
    """Bad base64, bytes that are not a certificate, an unknown critical extension, a kid
    that does not match, an empty list: 400 problem+json whose detail names it, the trust
    store's version unchanged."""
    before = client.app[TRUST].current
    response = await client.post(DCC, json=body, headers=ADMIN)
    problem = await assert_exact_problem(response, 400)
    assert named in problem["detail"]
    assert client.app[TRUST].current is before
    assert (await published(client))["version"] == before.version


async def test_an_shc_issuer_is_trusted_with_its_keys_and_crl(client: Client) -> None:
    """The issuer's JWKS and a CRL: its keys and revoked rids in app[TRUST].current, the same
    in GET /v1/trust (the CRL as the spec writes it); importing again replaces it whole."""
    iss, key = issuer_url(), issuer_jwk(crlVersion=1)
    revoked = crl(key["kid"], "rid1", "rid2.1636977600")
    body = {"iss": iss, "name": "Test Issuer", "jwks": {"keys": [key]}, "crls": [revoked]}
    response = await client.post(SHC, json=body, headers=ADMIN)
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert (answer["new"], answer["keys"], answer["crls"]) == (True, 1, 1)
    issuer = client.app[TRUST].current.shc[iss]
    assert set(issuer.keys) == {key["kid"]}
    assert issuer.revoked[key["kid"]] == {"rid1": None, "rid2": 1636977600}
    assert issuer.name == "Test Issuer"
    (entry,) = [e for e in (await published(client))["shc"] if e["iss"] == iss]
    assert entry["keys"] == {"keys": [key]}
    assert entry["crl"] == {key["kid"]: revoked}

    other = issuer_jwk()
    again = await client.post(SHC, json={"iss": iss, "jwks": {"keys": [other]}}, headers=ADMIN)
    assert (await again.json())["new"] is False
    assert set(client.app[TRUST].current.shc[iss].keys) == {other["kid"]}
    assert client.app[TRUST].current.shc[iss].revoked == {}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"kty": "RSA"}, "kty"),
        ({"crv": "P-384"}, "crv"),
        ({"use": "enc"}, "use"),
        ({"alg": "ES384"}, "alg"),
        ({"d": "AAAA"}, "private"),
        ({"kid": "not-the-thumbprint"}, "kid"),
    ],
)
async def test_a_bad_jwks_entry_is_a_400_and_stores_nothing(
    client: Client, change: dict[str, str], named: str
) -> None:
    """A JWKS entry with the wrong kty, curve, use or alg, a private key or a kid that is not
    its thumbprint refuses the import: 400 naming it; the issuer is not trusted."""
    iss = issuer_url()
    body = {"iss": iss, "jwks": {"keys": [issuer_jwk(), issuer_jwk(**change)]}}
    response = await client.post(SHC, json=body, headers=ADMIN)
    problem = await assert_exact_problem(response, 400)
    assert named in problem["detail"].lower()
    assert iss not in client.app[TRUST].current.shc


@pytest.mark.parametrize(
    ("crls", "named"),
    [
        ([crl("someone-else", "rid1")], "not in"),
        ([{"kid": "k", "method": "digest", "ctr": 1, "rids": []}], "method"),
        ([crl("K", "bad rid!")], "rid"),
    ],
)
async def test_a_bad_crl_is_a_400(client: Client, crls: list[Any], named: str) -> None:
    """A CRL for a kid the JWKS does not hold, of another method, or with a malformed rid."""
    key = issuer_jwk(crlVersion=1)
    crls = [{**c, "kid": key["kid"]} if c["kid"] == "K" else c for c in crls]
    body = {"iss": issuer_url(), "jwks": {"keys": [key]}, "crls": crls}
    problem = await assert_exact_problem(await client.post(SHC, json=body, headers=ADMIN), 400)
    assert named in problem["detail"]


async def test_an_issuer_url_must_be_https_without_a_trailing_slash(client: Client) -> None:
    """http:// and a trailing / are refused by the schema before anything is parsed."""
    for iss in ("http://issuer.example.org", "https://issuer.example.org/"):
        body = {"iss": iss, "jwks": {"keys": [issuer_jwk()]}}
        await assert_exact_problem(await client.post(SHC, json=body, headers=ADMIN), 400)


async def test_removal_by_kid_and_by_iss(client: Client) -> None:
    """DELETE a signer by its kid (base64url in the path too) and an issuer by ?iss=: 204,
    gone from app[TRUST].current and GET /v1/trust; a second time 404."""
    der = dsc()
    await client.post(DCC, json={"certificates": [b64(der)]}, headers=ADMIN)
    url_safe = kid64(der).replace("+", "-").replace("/", "_").rstrip("=")
    assert (await client.delete(f"{DCC}/{url_safe}", headers=ADMIN)).status == 204
    assert kid_of(der) not in client.app[TRUST].current.dcc
    assert kid64(der) not in {e["kid"] for e in (await published(client))["dcc"]}
    await assert_exact_problem(await client.delete(f"{DCC}/{url_safe}", headers=ADMIN), 404)
    await assert_exact_problem(await client.delete(f"{DCC}/short", headers=ADMIN), 400)

    iss = issuer_url()
    await client.post(SHC, json={"iss": iss, "jwks": {"keys": [issuer_jwk()]}}, headers=ADMIN)
    gone = await client.delete(f"{SHC}?iss={quote(iss, safe='')}", headers=ADMIN)
    assert gone.status == 204
    assert iss not in client.app[TRUST].current.shc
    again = await client.delete(f"{SHC}?iss={quote(iss, safe='')}", headers=ADMIN)
    await assert_exact_problem(again, 404)
    await assert_exact_problem(await client.delete(SHC, headers=ADMIN), 400)


async def test_only_an_operator_changes_the_trust_store(client: Client) -> None:
    """A health officer (or an auditor) is refused every trust write with 403, audited as
    denied; GET /v1/trust needs no credential at all."""
    before = client.app[TRUST].current
    for role in ("health_officer", "auditor"):
        headers = await role_headers(client, role)
        calls = [
            client.post(DCC, json={"certificates": [b64(dsc())]}, headers=headers),
            client.post(SHC, json={"iss": issuer_url(), "jwks": {"keys": []}}, headers=headers),
            client.delete(f"{DCC}/{_url_kid(dsc())}", headers=headers),
            client.delete(f"{SHC}?iss=https://x.example.org", headers=headers),
        ]
        for call in calls:
            problem = await assert_exact_problem(await call, 403)
            assert "operator" in problem["detail"]
    assert client.app[TRUST].current is before
    denied = [r for r in await audit_rows(client, "trust.import_dcc") if r["outcome"] == "denied"]
    assert len(denied) >= 2
    assert (await client.get("/v1/trust")).status == 200


async def test_the_audit_log_names_kids_and_urls_never_certificates(client: Client) -> None:
    """Each change is one audit entry by the operator's credential: kids, counts, the issuer
    URL and its kids; no certificate or key material."""
    operator = await role_headers(client, "operator", name="trust-auditing")
    der, key, iss = dsc(), issuer_jwk(), issuer_url()
    await client.post(DCC, json={"certificates": [b64(der)]}, headers=operator)
    await client.post(SHC, json={"iss": iss, "jwks": {"keys": [key]}}, headers=operator)
    await client.delete(f"{DCC}/{_url_kid(der)}", headers=operator)
    await client.delete(f"{SHC}?iss={quote(iss, safe='')}", headers=operator)

    entries = {}
    for action in ("trust.import_dcc", "trust.import_shc", "trust.remove_dcc", "trust.remove_shc"):
        mine = [r for r in await audit_rows(client, action) if "trust-auditing" in r["actor"]]
        assert len(mine) == 1, action
        entries[action] = json.loads(mine[0]["target"])
    assert entries["trust.import_dcc"]["kids"] == [kid64(der)]
    assert entries["trust.import_dcc"]["added"] == 1
    assert entries["trust.import_shc"] == {
        "iss": iss,
        "keys": [key["kid"]],
        "crls": [],
        "new": True,
    }
    assert entries["trust.remove_dcc"] == {"kid": kid64(der)}
    assert entries["trust.remove_shc"] == {"iss": iss}
    written = json.dumps(entries)
    assert b64(der)[8:40] not in written
    assert key["x"] not in written


def _corpus(*parts: str) -> Path:
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"the shared corpus is not at {CORPUS} ({'/'.join(parts)} absent)")
    return path


async def test_the_corpus_signers_and_issuer_import(client: Client) -> None:
    """dgc-testdata's signing certificates (TESTCTX.CERTIFICATE of a few countries' cases) and
    the SHC spec's example issuer (its jwks.json and CRL) import as they are; example 03's
    revoked rid is on the issuer's list."""
    dgc = _corpus("dgc-testdata")
    certificates = []
    for case in sorted(dgc.glob("*/2DCode/raw/*.json"))[:40]:
        context = json.loads(case.read_text(encoding="utf-8")).get("TESTCTX", {})
        if isinstance(context.get("CERTIFICATE"), str) and context["CERTIFICATE"]:
            certificates.append(context["CERTIFICATE"])
    if not certificates:
        pytest.skip("no TESTCTX.CERTIFICATE found in the corpus's dgc-testdata cases")
    response = await client.post(DCC, json={"certificates": certificates}, headers=ADMIN)
    assert response.status == 200, (await response.text())[:500]
    assert (await response.json())["certificates"] >= 1

    well_known = _corpus("shc", "examples", "issuer", ".well-known")
    jwks = json.loads((well_known / "jwks.json").read_text(encoding="utf-8"))
    crls = [json.loads(p.read_text(encoding="utf-8")) for p in (well_known / "crl").glob("*.json")]
    iss = "https://spec.smarthealth.cards/examples/issuer"
    response = await client.post(SHC, json={"iss": iss, "jwks": jwks, "crls": crls}, headers=ADMIN)
    assert response.status == 200, await response.text()
    issuer = client.app[TRUST].current.shc[iss]
    assert {k["kid"] for k in jwks["keys"]} == set(issuer.keys)
    for listed in crls:
        assert set(issuer.revoked[listed["kid"]]) == {r.split(".")[0] for r in listed["rids"]}
