"""SMART Health Card reader (passcode.domain.shc): cards signed here with P-256 keys, every
refusal a ForeignError with the reason and stage a terminal is told, never another exception."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from passcode.domain.foreign import CertType, ForeignError, ShcIssuer, Stage
from passcode.domain.model import Kind, Reason
from passcode.domain.shc import (
    MAX_JSON_DEPTH,
    MAX_TEXT,
    b64url_encode,
    parse_crl,
    parse_jwks,
    read_jws,
    read_shc,
    shc_issuer,
)

ISS = "https://issuer.example.org/shc"
NOW = 1_700_000_000
KEY = ec.derive_private_key(0x1234567, ec.SECP256R1())
OTHER = ec.derive_private_key(0x7654321, ec.SECP256R1())


def _jwk(key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    x, y = (
        b64url_encode(numbers.x.to_bytes(32, "big")),
        b64url_encode(numbers.y.to_bytes(32, "big")),
    )
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    kid = b64url_encode(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256", "x": x, "y": y,
            **extra}  # fmt: skip


KID = _jwk(KEY)["kid"]
JWKS = json.dumps({"keys": [_jwk(KEY, crlVersion=1)]})


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "name": [{"family": "Müller", "given": ["Anna", "B."]}],
               "birthDate": "1980-02-03"}  # fmt: skip
    entries = [patient, *resources]
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"resource:{i}", "resource": r} for i, r in enumerate(entries)]}  # fmt: skip


def _dose(cvx: str, day: str, status: str = "completed") -> dict[str, Any]:
    return {"resourceType": "Immunization", "status": status,
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]},
            "patient": {"reference": "resource:0"}, "occurrenceDateTime": day}  # fmt: skip


def _payload(bundle: dict[str, Any] | None = None, **claims: Any) -> dict[str, Any]:
    vc: dict[str, Any] = {
        "type": ["https://smarthealth.cards#health-card"],
        "credentialSubject": {"fhirVersion": "4.0.1",
                              "fhirBundle": bundle or _bundle(_dose("208", "2021-05-01"))},
    }  # fmt: skip
    if "rid" in claims:
        vc["rid"] = claims.pop("rid")
    return {"iss": ISS, "nbf": NOW - 1000, "vc": vc, **claims}


def _jws(
    payload: dict[str, Any] | bytes,
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    header: dict[str, Any] | None = None,
    der: bool = False,
    deflate: bool = True,
) -> str:
    head = b64url_encode(json.dumps(header or {"zip": "DEF", "alg": "ES256", "kid": KID}).encode())
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if deflate:
        comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        raw = comp.compress(raw) + comp.flush()
    body = b64url_encode(raw)
    signature = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    if not der:
        r, s = decode_dss_signature(signature)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{body}.{b64url_encode(signature)}"


def _qr(jws: str) -> str:
    return "shc:/" + "".join(f"{ord(c) - 45:02d}" for c in jws)


def _issuers(revoked: dict[str, int | None] | None = None) -> dict[str, ShcIssuer]:
    crls = []
    if revoked is not None:
        rids = [rid if ts is None else f"{rid}.{ts}" for rid, ts in revoked.items()]
        crls.append(json.dumps({"kid": KID, "method": "rid", "ctr": 1, "rids": rids}))
    return {ISS: shc_issuer(ISS, JWKS, crls)}


def _refused(read: Callable[[], object]) -> ForeignError:
    with pytest.raises(ForeignError) as info:
        read()
    return info.value


def test_a_valid_card_reads_into_the_dcc_payload_shape() -> None:
    """A signed card's QR text reads as an SHC whose payload the DCC rules can judge: Pfizer's
    CVX 208 becomes EU/1/20/1528, the second dose of two is 2/2, names and dates carried over."""
    bundle = _bundle(_dose("208", "2021-05-01"), _dose("208", "2021-05-29"))
    cert = read_shc(_qr(_jws(_payload(bundle, rid="abcDEF12"))), _issuers(), now=NOW)
    assert cert.kind is Kind.SHC
    assert cert.issuer == ISS
    assert cert.certificate_id == f"{ISS}#{KID}#abcDEF12"
    assert cert.holder_name == "Anna B. Müller"
    assert cert.types == frozenset({CertType.VACCINATION})
    assert cert.issued_at == NOW - 1000
    assert cert.expires_at is None
    assert cert.payload["nam"] == {
        "fn": "Müller",
        "fnt": "MULLER",
        "gn": "Anna B.",
        "gnt": "ANNA<B",
    }
    assert cert.payload["dob"] == "1980-02-03"
    (v,) = cert.payload["v"]
    assert (v["mp"], v["ma"], v["dn"], v["sd"], v["dt"]) == (
        "EU/1/20/1528",
        "ORG-100030215",
        2,
        2,
        "2021-05-29",
    )
    assert v["tg"] == "840539006"
    assert v["ci"] == cert.certificate_id


def test_a_booster_counts_every_dose_and_an_unknown_cvx_keeps_its_code() -> None:
    """dn counts all completed doses (a not-done one is ignored); after a primary series the
    booster is n/n; a CVX code we cannot map stays "CVX:<code>", never an EU product."""
    bundle = _bundle(_dose("207", "2021-01-01"), _dose("207", "2021-02-01"),
                     _dose("212", "2021-03-01", status="not-done"), _dose("207", "2021-10-01"))  # fmt: skip
    (v,) = read_jws(_jws(_payload(bundle)), _issuers(), now=NOW).payload["v"]
    assert (v["mp"], v["dn"], v["sd"]) == ("EU/1/20/1507", 3, 3)
    single = _bundle(_dose("212", "2021-03-01"))
    (j,) = read_jws(_jws(_payload(single)), _issuers(), now=NOW).payload["v"]
    assert (j["mp"], j["dn"], j["sd"]) == ("EU/1/20/1525", 1, 1)
    unknown = _bundle(_dose("213", "2021-03-01"))
    (u,) = read_jws(_jws(_payload(unknown)), _issuers(), now=NOW).payload["v"]
    assert (u["mp"], u["dn"], u["sd"]) == ("CVX:213", 1, 1)


def test_a_lab_result_becomes_a_dcc_test_entry() -> None:
    """A SARS-CoV-2 PCR Observation maps to tt LP6464-4, tr 'not detected', sc in UTC."""
    observation = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "94558-4"}]},
        "effectiveDateTime": "2023-11-13T10:00:00+02:00",
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "260415000"}]},
        "performer": [{"display": "City Lab"}],
    }  # fmt: skip
    cert = read_jws(_jws(_payload(_bundle(observation))), _issuers(), now=NOW)
    assert cert.types == frozenset({CertType.TEST})
    (t,) = cert.payload["t"]
    assert (t["tt"], t["tr"], t["sc"], t["tc"]) == (
        "LP217198-3",
        "260415000",
        "2023-11-13T08:00:00Z",
        "City Lab",
    )


def test_a_card_without_rid_gets_a_digest_id_and_a_float_nbf_is_read() -> None:
    """No rid: the id is a digest of the signed content (never a name); nbf may be a float."""
    cert = read_jws(_jws(_payload(nbf=NOW - 0.5)), _issuers(), now=NOW)
    assert cert.certificate_id.startswith(f"{ISS}#{KID}#sha256:")
    assert "Müller" not in cert.certificate_id
    assert cert.issued_at == NOW - 1


@pytest.mark.parametrize(
    ("make", "reason", "stage"),
    [
        pytest.param(lambda: _jws(_payload())[:-4] + "AAAA", Reason.BAD_SIGNATURE, Stage.VERIFY, id="tampered-signature"),
        pytest.param(lambda: _jws(_payload(), key=OTHER), Reason.BAD_SIGNATURE, Stage.VERIFY, id="signed-by-another-key"),
        pytest.param(lambda: _jws(_payload(), header={"zip": "DEF", "alg": "ES256", "kid": "nope"}), Reason.UNKNOWN_KEY, Stage.VERIFY, id="wrong-kid"),
        pytest.param(lambda: _jws({**_payload(), "iss": "https://other.example"}), Reason.UNKNOWN_KEY, Stage.VERIFY, id="wrong-issuer"),
        pytest.param(lambda: _jws(_payload(), der=True), Reason.MALFORMED, Stage.VERIFY, id="der-signature"),
        pytest.param(lambda: _jws(_payload(), header={"alg": "ES256", "kid": KID}, deflate=False), Reason.MALFORMED, Stage.DECODE, id="no-zip"),
        pytest.param(lambda: _jws(_payload(), header={"zip": "DEF", "alg": "ES384", "kid": KID}), Reason.MALFORMED, Stage.DECODE, id="wrong-alg"),
        pytest.param(lambda: _jws(_payload(), header={"zip": "DEF", "alg": "ES256", "kid": KID, "crit": ["x"]}), Reason.MALFORMED, Stage.DECODE, id="crit"),
        pytest.param(lambda: _jws(_payload(exp=NOW - 1)), Reason.EXPIRED, Stage.EXPIRATION, id="expired"),
        pytest.param(lambda: _jws(_payload(nbf=NOW + 0.5)), Reason.NOT_YET_VALID, Stage.EXPIRATION, id="not-yet-valid"),
        pytest.param(lambda: _jws(_payload(nbf="yesterday")), Reason.MALFORMED, Stage.DECODE, id="nbf-not-a-number"),
        pytest.param(lambda: _jws(json.dumps(_payload()).encode(), deflate=False), Reason.MALFORMED, Stage.COMPRESSION, id="not-deflated"),
        pytest.param(lambda: _jws(b"\xff\xff\xff", deflate=False), Reason.MALFORMED, Stage.COMPRESSION, id="bad-deflate"),
        pytest.param(lambda: _jws(_payload(bundle={"resourceType": "Patient"})), Reason.MALFORMED, Stage.SCHEMA, id="not-a-bundle"),
        pytest.param(lambda: _jws(_payload(bundle=_bundle())), Reason.MALFORMED, Stage.SCHEMA, id="no-immunization"),
        pytest.param(lambda: _jws(_payload(bundle=_bundle(_dose("208", "2021-05-01", status="Completed")))), Reason.MALFORMED, Stage.SCHEMA, id="bad-status"),
        pytest.param(lambda: _jws(_payload(bundle=_bundle(_dose("208", "01/05/2021")))), Reason.MALFORMED, Stage.SCHEMA, id="bad-date"),
    ],
)  # fmt: skip
def test_bad_cards_are_refused_with_their_reason(
    make: Callable[[], str], reason: Reason, stage: Stage
) -> None:
    """Each broken card fails with the reason and stage the terminal and conformance report see."""
    error = _refused(lambda: read_shc(_qr(make()), _issuers(), now=NOW))
    assert (error.reason, error.stage) == (reason, stage), error


def test_a_rid_on_the_crl_is_revoked_for_every_card_or_those_issued_before_its_timestamp() -> None:
    """A bare rid revokes the card whatever its nbf; rid.<t> revokes it only if nbf < t."""
    jws = _jws(_payload(rid="r1d"))
    error = _refused(lambda: read_jws(jws, _issuers({"r1d": None}), now=NOW))
    assert (error.reason, error.stage) == (Reason.REVOKED, Stage.REVOCATION)
    error = _refused(lambda: read_jws(jws, _issuers({"r1d": NOW - 999}), now=NOW))
    assert error.reason is Reason.REVOKED
    assert read_jws(jws, _issuers({"r1d": NOW - 1000}), now=NOW).certificate_id.endswith("#r1d")
    assert read_jws(jws, _issuers({"other": None}), now=NOW).issuer == ISS


def test_a_chunked_card_is_refused_alone_and_read_when_all_parts_are_given() -> None:
    """One part of a chunked card says so; all parts (any order, whitespace-separated) read."""
    digits = _qr(_jws(_payload()))[5:]
    half = len(digits) // 2 // 2 * 2
    one, two = f"shc:/1/2/{digits[:half]}", f"shc:/2/2/{digits[half:]}"
    error = _refused(lambda: read_shc(one, _issuers(), now=NOW))
    assert (error.reason, error.stage) == (Reason.MALFORMED, Stage.TEXT)
    assert "chunked card" in error.detail
    assert read_shc(f"{two}\n{one}", _issuers(), now=NOW).kind is Kind.SHC
    for bad in (f"{one} {one}", f"{one} shc:/2/3/{digits[half:]}"):
        assert _refused(lambda bad=bad: read_shc(bad, _issuers(), now=NOW)).stage is Stage.TEXT


@pytest.mark.parametrize(
    "text",
    ["shc:/0/2/00", "shc:/3/2/00", "shc:/1/999/00", "shc:/1/2000/00", "shc:/01/2/00",
     "shc:/1/2/3/00", "shc:/1//00", "shc:/123", "shc:/7800", "shc:/12a4", "shc:/١٢"],
)  # fmt: skip
def test_absurd_chunk_headers_and_bad_digits_are_malformed_text(text: str) -> None:
    """Zero, out-of-range, huge or zero-padded chunk numbers, odd counts, pairs above 77 and
    non-ASCII digits are refused at the numeric step."""
    error = _refused(lambda: read_shc(text, _issuers(), now=NOW))
    assert (error.reason, error.stage) == (Reason.MALFORMED, Stage.TEXT), error


def test_prefixes_and_length_cap() -> None:
    """No shc:/ is unsupported (not ours); shc: without '/' is malformed; over-long text is
    refused before decoding."""
    assert _refused(lambda: read_shc("HC1:xyz", _issuers(), now=NOW)).reason is Reason.UNSUPPORTED
    broken = _refused(lambda: read_shc("shc:5676", _issuers(), now=NOW))
    assert (broken.reason, broken.stage) == (Reason.MALFORMED, Stage.UNPREFIX)
    long = _refused(lambda: read_shc("shc:/" + "0" * MAX_TEXT, _issuers(), now=NOW))
    assert (long.reason, long.stage) == (Reason.MALFORMED, Stage.TEXT)


def test_a_deflate_bomb_is_refused_while_inflating() -> None:
    """A few KB of DEFLATE that would inflate to 4 MB (60 times the cap) is refused at the cap."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = comp.compress(b" " * 4_000_000) + comp.flush()
    head = b64url_encode(json.dumps({"zip": "DEF", "alg": "ES256", "kid": KID}).encode())
    jws = f"{head}.{b64url_encode(bomb)}.{b64url_encode(bytes(64))}"
    error = _refused(lambda: read_jws(jws, _issuers(), now=NOW))
    assert (error.reason, error.stage) == (Reason.MALFORMED, Stage.COMPRESSION)
    assert "inflates past" in error.detail


def test_deeply_nested_json_is_refused_before_parsing() -> None:
    """A payload nesting past the depth cap is malformed (no RecursionError), even when signed."""
    deep = b"[" * 20_000 + b"]" * 20_000
    error = _refused(lambda: read_jws(_jws(deep), _issuers(), now=NOW))
    assert (error.reason, error.stage) == (Reason.MALFORMED, Stage.DECODE)
    nested: Any = "x"
    for _ in range(MAX_JSON_DEPTH):
        nested = {"a": nested}
    error = _refused(lambda: read_jws(_jws(_payload(extra=nested)), _issuers(), now=NOW))
    assert "nests deeper" in error.detail


@pytest.mark.parametrize(
    ("change", "named"),
    [({"kty": "RSA"}, "kty"), ({"crv": "P-384"}, "crv"), ({"use": "enc"}, "use"),
     ({"alg": "ES384"}, "alg"), ({"kid": "not-the-thumbprint"}, "thumbprint"), ({"d": "AAAA"}, "private")],
)  # fmt: skip
def test_jwks_entries_with_the_wrong_kty_curve_or_use_refuse_the_set(
    change: dict[str, str], named: str
) -> None:
    """One wrong entry refuses the whole set with a ValueError naming the entry and the fault."""
    text = json.dumps({"keys": [_jwk(OTHER), {**_jwk(KEY), **change}]})
    with pytest.raises(ValueError, match=named) as info:
        parse_jwks(text, iss=ISS)
    assert "key 1" in str(info.value)
    assert set(parse_jwks(json.dumps({"keys": [_jwk(OTHER), _jwk(KEY)]}), iss=ISS)) == {
        _jwk(OTHER)["kid"],
        KID,
    }


@pytest.mark.parametrize(
    "text", ["", "not json", "[]", '{"keys": []}', '{"keys": [1]}', "[" * 5000]
)
def test_unreadable_jwks_are_value_errors(text: str) -> None:
    """Anything that is not a non-empty key set is a ValueError, never another exception."""
    with pytest.raises(ValueError, match=r"JWKS|key 0"):
        parse_jwks(text, iss=ISS)


def test_crl_parsing_and_issuer_checks() -> None:
    """A CRL gives kid, rids (with their timestamps) and ctr; bad methods, rids, duplicates, a
    stale ctr, an unknown kid and a non-https issuer are refused."""
    good = {"kid": KID, "method": "rid", "ctr": 1, "rids": ["abc", "def.1690000000"]}
    assert parse_crl(json.dumps(good)) == (KID, {"abc": None, "def": 1_690_000_000}, 1)
    for bad in ({"method": "hash-fhir"}, {"rids": ["a" * 25]}, {"rids": ["$x"]},
                {"rids": ["abc", "abc.1"]}, {"rids": ["abc.x"]}, {"ctr": True}):  # fmt: skip
        with pytest.raises(ValueError, match="CRL"):
            parse_crl(json.dumps({**good, **bad}))
    for crl in ({**good, "ctr": 2}, {**good, "kid": "unknown"}):
        with pytest.raises(ValueError, match="CRL"):
            shc_issuer(ISS, JWKS, [json.dumps(crl)])
    for iss in ("http://issuer.example.org", f"{ISS}/"):
        with pytest.raises(ValueError, match="issuer URL"):
            shc_issuer(iss, JWKS)
    assert shc_issuer(ISS, JWKS, [json.dumps(good)]).revoked == {
        KID: {"abc": None, "def": 1_690_000_000}
    }
