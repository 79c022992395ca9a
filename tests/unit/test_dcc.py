"""The EU DCC reader (passcode.domain.dcc): certificates built here with cryptography and cbor2,
read back through every step, and bad input refused with a ForeignError naming the step."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from passcode.domain.dcc import (
    MAX_TEXT,
    decode_dcc,
    kid_of,
    parse_der_list,
    parse_trust_list,
    read_dcc,
    signer_from_der,
)
from passcode.domain.foreign import CertType, DccSigner, ForeignError, Stage
from passcode.domain.model import Kind, Reason
from passcode.domain.passfmt import b45decode, b45encode
from tests.dcc_maker import (
    EKU_RECOVERY,
    EKU_TEST,
    EKU_VACCINATION,
    EKU_VACCINATION_ALT,
    NOW,
    Signer,
    claims,
    hc1,
    make_signer,
    pcr_test,
    rsa_key,
    sign,
    vaccination,
)

ES256 = make_signer()
PS256 = make_signer(key=rsa_key(2048))


def trust(*signers: Signer) -> dict[bytes, DccSigner]:
    out = {}
    for s in signers:
        signer = signer_from_der(s.der)
        out[signer.kid] = signer
    return out


def refusal(text: str, signers: dict[bytes, DccSigner] | None = None, now: int = NOW) -> Any:
    with pytest.raises(ForeignError) as info:
        read_dcc(text, trust(ES256) if signers is None else signers, now=now)
    return info.value


# --- accepted certificates ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "kid_in"),
    [
        ((18,), "protected"),
        ((), "protected"),
        ((61, 18), "protected"),
        ((18,), "unprotected"),
    ],
    ids=["tagged", "untagged", "cwt-tagged", "kid-unprotected"],
)
def test_es256_certificate_is_read_in_every_envelope(tags: tuple[int, ...], kid_in: str) -> None:
    """Tag 18, no tag, CWT tag 61 around tag 18, and a kid only in the unprotected header all
    read to the same certificate with the payload in CertLogic's shape."""
    payload = vaccination()
    text = sign(ES256, claims(payload), tags=tags, kid_in=kid_in)
    cert = read_dcc(text, trust(ES256), now=NOW)
    assert cert.kind is Kind.EU_DCC
    assert cert.issuer == "XX"
    assert cert.types == frozenset({CertType.VACCINATION})
    assert cert.certificate_id == "URN:UVCI:01:XX:TEST0000000001#A"
    assert cert.holder_name == "Erika Mustermann"
    assert cert.issued_at == NOW - 3600
    assert cert.expires_at == NOW + 86_400
    assert cert.payload == payload


@pytest.mark.parametrize("bits", [2048, 3072])
def test_ps256_certificate_is_read_with_rsa_signers(bits: int) -> None:
    """PS256 (RSA-PSS, SHA-256, salt of the digest's length) with 2048- and 3072-bit signers."""
    signer = PS256 if bits == 2048 else make_signer(key=rsa_key(bits))
    cert = read_dcc(sign(signer, claims(pcr_test())), trust(signer), now=NOW)
    assert cert.types == frozenset({CertType.TEST})


def test_payload_without_a_given_name_is_read() -> None:
    """Only a family name (as many real certificates carry) is a valid certificate."""
    cert = read_dcc(sign(ES256, claims(vaccination(given=None))), trust(ES256), now=NOW)
    assert cert.holder_name == "Mustermann"


def test_protected_kid_wins_over_a_wrong_unprotected_kid() -> None:
    """A correct protected kid with a wrong unprotected one verifies (the protected one wins)."""
    text = sign(ES256, claims(vaccination()))
    raw = cbor2.loads(zlib.decompress(_b45d(text)))
    raw.value[1] = {4: b"wrongkid"}
    assert read_dcc(hc1(cbor2.dumps(raw)), trust(ES256), now=NOW).types


def test_float_times_and_missing_iss_fall_back_to_the_signer_country() -> None:
    """iat/exp may be floats; with no iss the signer's country names the issuer."""
    body = claims(vaccination(), iat=NOW - 10.5, exp=NOW + 10.5)
    del body[1]
    cert = read_dcc(sign(ES256, body), trust(ES256), now=NOW)
    assert (cert.issued_at, cert.expires_at, cert.issuer) == (NOW - 11, NOW + 10, "XX")


def test_dcc_key_usage_allows_the_types_it_names() -> None:
    """A signer with the vaccination EKU (either OID spelling) signs vaccinations."""
    for oid in (EKU_VACCINATION, EKU_VACCINATION_ALT):
        signer = make_signer(ekus=(oid, EKU_TEST))
        assert read_dcc(sign(signer, claims(vaccination())), trust(signer), now=NOW)


# --- refusals at each step ---------------------------------------------------------------------


def test_missing_prefix_is_unsupported() -> None:
    """Text without HC1: is not a DCC (HC2: neither)."""
    text = sign(ES256, claims(vaccination()))
    for other in ("HC2:" + text[4:], text[4:], ""):
        exc = refusal(other)
        assert (exc.reason, exc.stage) == (Reason.UNSUPPORTED, Stage.UNPREFIX)


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("HC1:" + "A" * (MAX_TEXT), Stage.TEXT),
        ("HC1:ab", Stage.TEXT),
        ("HC1:A", Stage.TEXT),
        ("HC1:" + b45encode(b"not zlib at all"), Stage.COMPRESSION),
        (
            "HC1:" + b45encode(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""]))),
            Stage.COMPRESSION,
        ),
        ("HC1:" + b45encode(zlib.compress(b"x" * 10)[:-3]), Stage.COMPRESSION),
        (hc1(b"\xff"), Stage.DECODE),
        (hc1(cbor2.dumps([1, 2, 3])), Stage.DECODE),
        (hc1(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])) + b"\x00"), Stage.DECODE),
        (hc1(cbor2.dumps(cbor2.CBORTag(99, [b"", {}, b"", b""]))), Stage.DECODE),
        (hc1(cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x26", {}, b"\xa0", b""]))), Stage.DECODE),
    ],
    ids=[
        "too-long",
        "bad-base45",
        "dangling-base45",
        "not-zlib",
        "uncompressed-cose",
        "truncated-zlib",
        "bad-cbor",
        "not-cose",
        "trailing-cbor",
        "wrong-tag",
        "no-hcert",
    ],
)
def test_malformed_input_is_refused_at_its_step(text: str, stage: Stage) -> None:
    """Each kind of broken input is MALFORMED at the step that found it."""
    exc = refusal(text)
    assert (exc.reason, exc.stage) == (Reason.MALFORMED, stage)


def test_zlib_bomb_is_capped_while_inflating() -> None:
    """Gigabytes of zeros compress to kilobytes; inflating stops at the cap."""
    bomb = zlib.compressobj(9)
    data = bomb.compress(b"\0" * (64 * 1024 * 1024)) + bomb.flush()
    text = "HC1:" + b45encode(data[: (MAX_TEXT * 2 // 3) - 10])
    exc = refusal(text)
    assert (exc.reason, exc.stage) == (Reason.MALFORMED, Stage.COMPRESSION)


def test_deeply_nested_cbor_is_malformed() -> None:
    """Arrays nested thousands deep (envelope or payload) are refused, never a RecursionError."""
    deep = b"\x81" * 3000 + b"\x00"
    assert refusal(hc1(deep)).stage is Stage.DECODE
    nested: Any = "x"
    for _ in range(20):
        nested = [nested]
    body = vaccination() | {"extra": nested}
    exc = refusal(sign(ES256, claims(body)))
    assert (exc.reason, exc.stage) == (Reason.MALFORMED, Stage.DECODE)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x84\x5b\x00\x00\x00\xff\xff\xff\xff\xff",
        b"\xd2\x84\x40\xbb\x00\x00\x00\x0f\xff\xff\xff\xff",
    ],
    ids=["array", "bytes", "map"],
)
def test_absurd_cbor_lengths_are_malformed(raw: bytes) -> None:
    """Heads claiming 2^64 items or terabytes of bytes are refused without allocating them."""
    exc = refusal(hc1(raw))
    assert (exc.reason, exc.stage) == (Reason.MALFORMED, Stage.DECODE)


def test_non_json_payload_values_are_malformed() -> None:
    """Byte strings, tags and integer keys have no JSON form for the rules: refused."""
    for extra in (b"bytes", cbor2.CBORTag(1234, 1), {1: "x"}):
        body = vaccination() | {"extra": extra}
        assert refusal(sign(ES256, claims(body))).stage is Stage.DECODE


def test_other_algorithms_are_unsupported() -> None:
    """EdDSA or ES384 labels are not DCC algorithms."""
    for alg in (-8, -35, "ES256"):
        exc = refusal(sign(ES256, claims(vaccination()), alg=alg))  # type: ignore[arg-type]
        assert (exc.reason, exc.stage) == (Reason.UNSUPPORTED, Stage.DECODE)


def test_unknown_or_missing_kid_is_unknown_key() -> None:
    """A signer not in the trust store, a wrong kid, or no kid at all: unknown_key."""
    other = make_signer()
    for text in (
        sign(other, claims(vaccination())),
        sign(ES256, claims(vaccination()), kid=b"wrongkid"),
        sign(ES256, claims(vaccination()), kid_in="none"),
    ):
        exc = refusal(text)
        assert (exc.reason, exc.stage) == (Reason.UNKNOWN_KEY, Stage.VERIFY)


def test_bad_signatures_are_refused() -> None:
    """A flipped bit, a key of the wrong type for the alg, a P-384 key for ES256: bad_signature."""
    p384 = make_signer(key=ec.generate_private_key(ec.SECP384R1()))
    cases = [
        (sign(ES256, claims(vaccination()), corrupt=True), trust(ES256)),
        (sign(PS256, claims(vaccination()), corrupt=True), trust(PS256)),
        (sign(ES256, claims(vaccination()), alg=-37), trust(ES256)),
        (sign(PS256, claims(vaccination()), alg=-7), trust(PS256)),
        (sign(p384, claims(vaccination()), alg=-7), trust(p384)),
    ]
    for text, signers in cases:
        exc = refusal(text, signers)
        assert (exc.reason, exc.stage) == (Reason.BAD_SIGNATURE, Stage.VERIFY)


def test_a_signature_over_other_claims_is_refused() -> None:
    """The signature covers the claims as sent: a payload swapped under it does not verify."""
    text = sign(ES256, claims(vaccination()))
    raw = cbor2.loads(zlib.decompress(_b45d(text)))
    raw.value[2] = cbor2.dumps(claims(vaccination(given="Mallory")))
    exc = refusal(hc1(cbor2.dumps(raw)))
    assert exc.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("kwargs", "signer_window", "reason"),
    [
        ({"exp": NOW - 1}, None, Reason.EXPIRED),
        ({"iat": NOW + 60}, None, Reason.NOT_YET_VALID),
        ({}, (NOW - 100, NOW - 1), Reason.EXPIRED),
        ({}, (NOW + 1, NOW + 100), Reason.NOT_YET_VALID),
    ],
    ids=["exp-passed", "iat-future", "signer-expired", "signer-not-yet-valid"],
)
def test_validity_windows_are_checked_at_now(
    kwargs: dict[str, int], signer_window: tuple[int, int] | None, reason: Reason
) -> None:
    """The certificate's exp/iat and its signer certificate's window, both at ``now``."""
    signer = ES256
    if signer_window:
        signer = make_signer(not_before=signer_window[0], not_after=signer_window[1])
    exc = refusal(sign(signer, claims(vaccination(), **kwargs)), trust(signer))
    assert (exc.reason, exc.stage) == (reason, Stage.EXPIRATION)


def test_wrong_key_usage_is_refused() -> None:
    """A signer whose DCC key usage names only tests and recoveries may not sign vaccinations."""
    signer = make_signer(ekus=(EKU_TEST, EKU_RECOVERY))
    exc = refusal(sign(signer, claims(vaccination())), trust(signer))
    assert (exc.reason, exc.stage) == (Reason.UNKNOWN_KEY, Stage.KEYUSAGE)
    assert read_dcc(sign(signer, claims(pcr_test())), trust(signer), now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p.pop("dob"),
        lambda p: p.pop("ver"),
        lambda p: [p["nam"].pop(k) for k in ("fnt", "gnt")],
        lambda p: p.update(t=pcr_test()["t"]),
        lambda p: p.update(v=[]),
        lambda p: p["v"].append(dict(p["v"][0])),
        lambda p: p["v"][0].update(dn=0),
        lambda p: p["v"][0].update(ci="x" * 81),
        lambda p: p.update(dob="1850-01-01"),
        lambda p: p["nam"].update(fnt="lower"),
    ],
    ids=[
        "no-dob",
        "no-ver",
        "no-transliterated-name",
        "two-groups",
        "empty-group",
        "two-entries",
        "dose-zero",
        "long-ci",
        "dob-range",
        "bad-icao",
    ],
)
def test_schema_failures_are_malformed(change: Any) -> None:
    """Payloads the DCC schema refuses are MALFORMED at the schema step."""
    payload = vaccination()
    change(payload)
    exc = refusal(sign(ES256, claims(payload)))
    assert (exc.reason, exc.stage) == (Reason.MALFORMED, Stage.SCHEMA)


def test_decode_without_signature_check_names_the_kid() -> None:
    """decode_dcc gives the unverified message (the conformance tool uses it step by step)."""
    message = decode_dcc(sign(ES256, claims(vaccination()), kid_in="unprotected"))
    assert message.kid == ES256.kid
    assert message.types == frozenset({CertType.VACCINATION})


# --- signers -----------------------------------------------------------------------------------


def test_signer_from_der_computes_kid_and_country() -> None:
    """kid = first 8 bytes of SHA-256 of the DER; the country defaults to the subject's C=."""
    signer = signer_from_der(ES256.der)
    assert signer.kid == kid_of(ES256.der) == ES256.kid
    assert signer.country == "XX"
    assert signer_from_der(ES256.der, country="DE").country == "DE"


def test_signer_with_unknown_critical_extension_is_refused() -> None:
    """An unknown critical extension means the certificate's use cannot be judged: refused."""
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00")
    bad = make_signer(extra=ext, extra_critical=True)
    with pytest.raises(ValueError, match=r"unknown critical extensions: 1\.2\.3\.4\.5"):
        signer_from_der(bad.der)
    assert signer_from_der(make_signer(extra=ext).der)  # the same, not critical, is fine


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x01", b"garbage" * 10])
def test_signer_from_bad_der_is_a_clear_value_error(der: bytes) -> None:
    """Bytes that are not a certificate raise ValueError saying so."""
    with pytest.raises(ValueError, match=r"not a DER X\.509 certificate"):
        signer_from_der(der)


def _entry(signer: Signer, **extra: Any) -> dict[str, Any]:
    return {
        "kid": base64.b64encode(signer.kid).decode(),
        "country": "XX",
        "certificateType": "DSC",
        "rawData": base64.b64encode(signer.der).decode(),
        "thumbprint": "ignored",
    } | extra


def test_parse_trust_list_reads_dscs_and_checks_kids() -> None:
    """The gateway's JSON: DSC entries become signers, other types are skipped, a kid that does
    not match its certificate is refused."""
    text = json.dumps(
        [_entry(ES256), _entry(PS256, country="DE"), _entry(ES256, certificateType="CSCA")]
    )
    signers = parse_trust_list(text)
    assert [(s.kid, s.country) for s in signers] == [(ES256.kid, "XX"), (PS256.kid, "DE")]
    wrong = _entry(ES256, kid=base64.b64encode(b"wrongkid").decode())
    with pytest.raises(ValueError, match="entry 0: kid does not match"):
        parse_trust_list(json.dumps([wrong]))
    for bad in ("{", "{}", "[1]", json.dumps([_entry(ES256, rawData="!!")])):
        with pytest.raises(ValueError, match="trust list"):
            parse_trust_list(bad)


def test_parse_der_list_reads_lines_and_json_arrays() -> None:
    """One base64 DER per line (blank lines skipped) or a JSON array of strings."""
    b64 = [base64.b64encode(s.der).decode() for s in (ES256, PS256)]
    expected = [ES256.kid, PS256.kid]
    assert [s.kid for s in parse_der_list("\n".join(["", b64[0], "  ", b64[1], ""]))] == expected
    assert [s.kid for s in parse_der_list(json.dumps(b64))] == expected
    with pytest.raises(ValueError, match="certificate 1"):
        parse_der_list(b64[0] + "\nnot base64!")


def _b45d(text: str) -> bytes:
    return b45decode(text[4:])
