"""The sunset report's signature: made over canonical bytes, checked with a key from a JWK Set as
/v1/keys serves it, and every changed, forged or hostile report refused with a reason."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.domain.passfmt import kid_of
from passcode.domain.sunsetreport import (
    MAX_REPORT_BYTES,
    ReportError,
    ScanCount,
    build_report,
    canonical,
    load_jwks,
    sign_report,
    summary,
    verify_report,
)

KEY = Ed25519PrivateKey.generate()
KID = kid_of(KEY.public_key())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks(key: Ed25519PrivateKey = KEY) -> bytes:
    raw = key.public_key().public_bytes_raw()
    entry = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": b64(kid_of(key.public_key()))}
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256"}, entry]}).encode()


def report() -> dict[str, object]:
    return build_report(
        deployment="city-广州",
        issuer="passcode",
        started_at=datetime(2022, 12, 31, 23, 0, tzinfo=UTC),
        finished_at=datetime(2022, 12, 31, 23, 1, tzinfo=UTC),
        destroyed={"subjects": 3, "scans": 10},
        redis_keys={"st": 3},
        audit_rows=7,
        scan_counts=[ScanCount("2022-12-30", "metro", 10)],
    )


def test_a_signed_report_verifies_with_the_published_key_set() -> None:
    """Signed with the pass key, the file verifies against the JWK Set's Ed25519 key (other
    key types in the set are skipped), and reads back as it was built."""
    verified = verify_report(sign_report(report(), KEY, KID), load_jwks(jwks()))
    assert verified.kid == KID
    assert verified.report == report()
    assert verified.report["started_at"] == "2022-12-31T23:00:00Z"
    assert "    2022-12-30 metro: 10" in summary(verified.report)


def test_canonical_bytes_do_not_depend_on_key_order_or_indentation() -> None:
    """What is signed is sorted, compact UTF-8: the same report in any layout signs alike."""
    shuffled = json.loads(json.dumps(report(), indent=4))
    assert canonical(dict(reversed(list(shuffled.items())))) == canonical(report())
    assert b" " not in canonical({"a": [1, 2]})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d["report"]["kept"]["scan_counts"][0].update(scans=9), "was changed"),
        (lambda d: d["report"]["destroyed"]["postgres_rows"].pop("scans"), "was changed"),
        (lambda d: d["report"].update(deployment="other"), "was changed"),
        (lambda d: d["signature"].update(kid=b64(b"\0" * 8)), "no key"),
        (lambda d: d["signature"].update(alg="ES256"), "not EdDSA"),
        (lambda d: d["signature"].update(sig="!!"), "base64url"),
        (lambda d: d["signature"].update(sig=b64(b"x" * 10)), "not 64 bytes"),
        (lambda d: d["report"].update(format="other/1"), "not a passcode-sunset-report/1"),
        (lambda d: d.update(extra=1), "exactly"),
    ],
)
def test_a_changed_report_is_refused_with_its_reason(change: object, reason: str) -> None:
    """Any change to the content, or to the signature block, fails verification by name."""
    document = json.loads(sign_report(report(), KEY, KID))
    change(document)  # type: ignore[operator]
    with pytest.raises(ReportError, match=reason):
        verify_report(json.dumps(document).encode(), load_jwks(jwks()))


def test_a_report_signed_by_another_key_under_the_same_kid_is_refused() -> None:
    """A forger's key claiming the service's kid does not verify."""
    forged = sign_report(report(), Ed25519PrivateKey.generate(), KID)
    with pytest.raises(ReportError, match="was changed"):
        verify_report(forged, load_jwks(jwks()))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "UTF-8 JSON|nested"),
        (b'{"report": NaN}', "not JSON"),
        (b"[[[[[[[[[[1]]]]]]]]]]", "nested"),
        (b"1" * (MAX_REPORT_BYTES + 1), "larger"),
        (b"[]", "exactly"),
    ],
)
def test_hostile_report_bytes_are_refused_not_crashed_on(raw: bytes, reason: str) -> None:
    """Bad encoding, deep nesting, JSON's non-standard constants and oversize input are each a
    ReportError, never an unhandled exception."""
    with pytest.raises(ReportError, match=reason):
        verify_report(raw, load_jwks(jwks()))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"keys": {}}', 'no "keys" list'),
        (b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "AA"}]}', "32 bytes"),
        (b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": 5, "kid": "AA"}]}', "base64url"),
        (b"x" * 300_000, "larger"),
    ],
)
def test_hostile_key_sets_are_refused(raw: bytes, reason: str) -> None:
    """A key set that is not a JWK Set of 32-byte Ed25519 keys is refused with a reason."""
    with pytest.raises(ReportError, match=reason):
        load_jwks(raw)
