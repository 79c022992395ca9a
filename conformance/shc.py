"""SMART Health Cards conformance: the spec's examples and the validator's fixtures, each judged by
:mod:`passcode.domain.shc` at :data:`CLOCK` and compared with what upstream expects.

``<corpus>/shc/examples``: examples 00–03 in their JWS, file and numeric-QR forms (example 02's
three QR parts given together), against the example issuer's JWKS and CRL from
``issuer/.well-known/``. ``<corpus>/shc/validation-sdk-testdata/testdata``: the validator's
fixtures; :data:`CASES` says, per file, what its own tests (``tests/card.test.ts``,
``tests/keys.test.ts``, ``tests/api.test.ts`` of smart-on-fhir/health-cards-validation-SDK)
expect, translated into our outcome ``<reason>@<stage>`` (or ``ok``). Upstream *warnings* leave a
card valid (``ok``); upstream *errors* are refusals. Key and CRL files are judged by the trust
store's parsers (``ok`` or ``refused``). Images (PNG, JPG, SVG) need a QR decoder, which the
service does not have (terminals send the text): they are listed as skipped.

The trust store for the fixtures is built the way an operator would import it: the example
issuer; each ``badcrl/<case>`` issuer with its JWKS and CRL, and the ``badjwks`` issuer with its
JWKS, each only if :func:`shc_issuer` accepts it (none is: their cards then read as
``unknown_key``, since an issuer with a broken key set or CRL cannot be imported). Payload and
FHIR-bundle fixtures are unsigned: they are signed here with the validator's own test key
(``testdata/private_key.json``), trusted for their ``iss`` in that case only.

Run: ``python -m conformance.shc ../shared/corpus``.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conformance.report import Report
from passcode.domain.foreign import ForeignError, ShcIssuer
from passcode.domain.shc import (
    b64url_decode,
    b64url_encode,
    parse_jwks,
    read_jws,
    read_shc,
    shc_issuer,
)

CLOCK = 1_700_000_000  # 2023-11-14: after the examples' nbf (2023-06-22), before 03's exp (2024)
EXAMPLE_ISS = "https://spec.smarthealth.cards/examples/issuer"
FIXTURE_SAN = "https://smarthealth.cards/examples/issuer"  # keys.test.ts's expected x5c SAN
RAW = "https://raw.githubusercontent.com"
BADCRL_ISS = f"{RAW}/smart-on-fhir/health-cards-dev-tools/main/testdata/badcrl"
BADJWKS_ISS = f"{RAW}/microsoft/health-cards-validation-SDK/main/testdata/badjwks"
OK, REFUSED = "ok", "refused"
MALFORMED_TEXT = "malformed@text"


@dataclass(frozen=True, slots=True)
class Case:
    files: tuple[str, ...]  # relative to the fixtures folder; several = QR parts given together
    form: str  # qr, jws, file, fhirhealthcard, payload, bundle, jwks, issuer
    field: str  # the report's column: what the case is about
    expected: str  # ok, refused, or <reason>@<stage>
    note: str  # what upstream expects, and why that is our expectation


def _c(files: str | tuple[str, ...], form: str, field: str, expected: str, note: str) -> Case:
    return Case((files,) if isinstance(files, str) else files, form, field, expected, note)


_CHUNKS_PRESENT = (1, 2, 3, 5, 6, 11, 13, 14, 15, 16)  # of the 17 parts, the ones in the subset
_CHUNK_FILE = "test-example-00-f-qr-code-numeric-value-{}-qr_chunk_too_small.txt"

CASES: Sequence[Case] = (
    # --- numeric QR text (card.test.ts) ---
    _c("test-example-00-f-qr-code-numeric-value-0-number-too-big.txt", "qr", "QR",
       MALFORMED_TEXT, "INVALID_NUMERIC_QR error: a digit pair above 77"),
    _c("test-example-00-f-qr-code-numeric-value-0-odd-count.txt", "qr", "QR",
       MALFORMED_TEXT, "INVALID_NUMERIC_QR error: an odd number of digits"),
    _c("test-example-00-f-qr-code-numeric-value-0-wrong_qr_header.txt", "qr", "QR",
       "malformed@unprefix", "INVALID_NUMERIC_QR_HEADER error: 'shc:' without the '/'"),
    _c("test-example-1195-byte-qrnumeric.txt", "qr", "QR", OK,
       "'valid 1195-byte QR numeric': no error, the largest single QR the spec allows"),
    _c("test-example-02-f-qr-code-numeric-value-1-qr_chunk_too_big.txt", "qr", "QR",
       MALFORMED_TEXT, "INVALID_NUMERIC_QR errors for the pair; alone it is part 2/2 of a card"),
    *(
        _c(_CHUNK_FILE.format(n), "qr", "QR", MALFORMED_TEXT,
           f"part {n + 1}/17 of a card split needlessly (INVALID_QR, UNBALANCED_QR_CHUNKS errors "
           "for the set): alone, one part of a chunked card")
        for n in _CHUNKS_PRESENT
    ),
    _c(tuple(_CHUNK_FILE.format(n) for n in _CHUNKS_PRESENT), "qr", "QR", MALFORMED_TEXT,
       "the parts of the 17-part card in the subset together: parts missing (MISSING_QR_CHUNK)"),
    # --- JWS header and signature format ---
    _c("test-example-00-d-jws-no_deflate.txt", "jws", "JWS", "malformed@decode",
       "INFLATION_ERROR + JWS_HEADER_ERROR errors: no zip: DEF in the header"),
    _c("test-example-00-e-file-no_deflate.smart-health-card", "file", "JWS", "malformed@decode",
       "'no deflate': INFLATION_ERROR + JWS_HEADER_ERROR errors"),
    _c("test-example-00-d-jws-no_jws_header_alg.txt", "jws", "JWS", "malformed@decode",
       "JWS_HEADER_ERROR + JWS_VERIFICATION_ERROR errors: no alg"),
    _c("test-example-00-e-file-multi-jws-issues.smart-health-card", "file", "JWS",
       "malformed@decode", "JWS_HEADER_ERROR + JWS_VERIFICATION_ERROR: its first JWS has no alg"),
    _c("test-example-00-d-jws-utf8_bom_prefix.txt", "jws", "JWS", "malformed@decode",
       "TRAILING_CHARACTERS errors: the inflated payload starts with a UTF-8 BOM"),
    _c("test-example-00-d-jws-der-signature.txt", "jws", "VERIFY", "malformed@verify",
       "SIGNATURE_FORMAT_ERROR error: a DER-encoded signature, not the raw r||s"),
    _c("test-example-00-d-jws-der-signature-r-neg.txt", "jws", "VERIFY", "malformed@verify",
       "SIGNATURE_FORMAT_ERROR error: DER, r with its sign byte"),
    _c("test-example-00-d-jws-der-signature-rs-neg.txt", "jws", "VERIFY", "malformed@verify",
       "SIGNATURE_FORMAT_ERROR error: DER, r and s with sign bytes"),
    # --- issuer and key ---
    _c("test-example-00-d-jws-issuer-kid-mismatch.txt", "jws", "VERIFY", "unknown_key@verify",
       "ISSUER_KID_MISMATCH error: the kid is not one of the issuer's keys"),
    _c("test-example-00-d-jws-jws_too_long.txt", "jws", "VERIFY", "unknown_key@verify",
       "an old fixture (its upstream test is disabled) naming the issuer by its former URL "
       "https://smarthealth.cards/examples/issuer, which is not a trusted issuer"),
    _c("test-example-00-e-file-invalid_issuer_url_http.smart-health-card", "file", "VERIFY",
       "unknown_key@verify", "INVALID_ISSUER_URL error: an http:// issuer is never trusted"),
    _c("test-example-00-e-file-issuer_url_with_trailing_slash.smart-health-card", "file",
       "VERIFY", "unknown_key@verify",
       "INVALID_ISSUER_URL error: iss with a trailing '/' is not the trusted issuer's URL"),
    _c("test-example-00-e-file-bad_jwks.smart-health-card", "file", "VERIFY",
       "unknown_key@verify", "ISSUER_KEY_DOWNLOAD_ERROR: its issuer's JWKS is not JSON, so the "
       "issuer cannot be imported"),
    # --- revocation: the bad CRLs keep their issuers out of the trust store ---
    *(
        _c(f"badcrl/{name}/jws-crl-{name}.txt", "jws", "REVOCATION", "unknown_key@verify",
           f"REVOCATION_ERROR: its issuer's CRL is bad ({name}), so the issuer is not imported")
        for name in ("duplicate-rid", "invalid-method", "non-base64url-rid", "too-long-rid")
    ),
    # --- expiry (payload fixtures, signed here) ---
    _c("test-example-00-b-jws-payload-expanded-expired.json", "payload", "EXPIRATION",
       "expired@expiration", "EXPIRATION_ERROR: exp passed long before the clock"),
    _c("test-example-00-b-jws-payload-expanded-pre-expired.json", "payload", "EXPIRATION",
       "expired@expiration", "EXPIRATION_ERROR error and warning: exp before nbf"),
    _c("test-example-00-b-jws-payload-expanded-nbf_not_yet_valid.json", "payload", "EXPIRATION",
       "not_yet_valid@expiration", "NOT_YET_VALID: nbf in 2050"),
    # --- vc types and the FHIR bundle ---
    _c("test-example-00-b-jws-payload-expanded-missing-shc-vc-type.json", "payload", "SCHEMA",
       "malformed@decode", "SCHEMA_ERROR error: vc.type lacks #health-card"),
    _c("test-example-00-b-jws-payload-expanded-missing-covid-vc-type.json", "payload", "SCHEMA",
       OK, "SCHEMA_ERROR warning only (the optional #covid19 type)"),
    _c("test-example-00-b-jws-payload-expanded-missing-imm-vc-type.json", "payload", "SCHEMA",
       OK, "SCHEMA_ERROR warning only (the optional #immunization type)"),
    _c("test-example-covid-lab-jwspayload-missing-lab-vc-type.json", "payload", "SCHEMA", OK,
       "SCHEMA_ERROR warning only (the optional #laboratory type)"),
    _c("test-example-00-a-fhirBundle-occurrence-issues.json", "bundle", "SCHEMA",
       "malformed@schema", "FHIR_SCHEMA_ERROR x2: an Immunization without occurrence, one with two"),
    _c("test-example-00-a-fhirBundle-status-not-completed.json", "bundle", "SCHEMA",
       "malformed@schema", "FHIR_SCHEMA_ERROR x2: status 'Completed' is not a FHIR status code"),
    _c("test-example-00-a-fhirBundle-profile-usa.json", "bundle", "SCHEMA", "malformed@schema",
       "FHIR_SCHEMA_ERROR and PROFILE_ERROR errors: two Patients (whose card is it?)"),
    _c("test-example-00-a-fhirBundle-bad_meta_non_security.json", "bundle", "SCHEMA", OK,
       "FHIR_SCHEMA_ERROR warning only (meta without security)"),
    _c("test-example-00-a-non-dm-properties.json", "bundle", "SCHEMA", OK,
       "5 SCHEMA_ERROR warnings only (properties data minimisation would drop)"),
    _c("test-example-00-d-jws-bad-fhir-metadata.txt", "jws", "SCHEMA", OK,
       "api.test.ts: a FHIR_SCHEMA_ERROR warning only"),
    # --- valid cards in other wrappings ---
    _c("test-example-00-e-file-multi-jws.smart-health-card", "file", "VALID", OK,
       "'valid 00 health card w/ multiple jws': no error (both JWS judged)"),
    _c("test-example-00-e-file.wrong-extension", "file", "VALID", OK,
       "INVALID_FILE_EXTENSION warning only"),
    _c("test-example-00-fhirhealthcard.json", "fhirhealthcard", "VALID", OK,
       "'valid FHIR api health card': no error"),
    _c("test-example-00-fhirhealthcard-with-resource-link.json", "fhirhealthcard", "VALID", OK,
       "'valid FHIR api health card with optional data': no error"),
    # --- issuer key sets (keys.test.ts) ---
    _c("valid_key.json", "jwks", "KEYS", OK, "'Keys: valid'"),
    _c("valid_keys.json", "jwks", "KEYS", OK, "'Keys: valid keys'"),
    _c("valid_key_with_x5c.json", "jwks", "KEYS", OK, "'valid with x5c (3-cert chain)'"),
    _c("valid_2_chain.public.json", "jwks", "KEYS", OK, "'valid with x5c (2-cert chain)'"),
    _c("issuer.jwks.public.not.smart.json", "jwks", "KEYS", OK,
       "the key set card.test.ts trusts for the kid-mismatch case: valid"),
    _c("wrong_kid_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_WRONG_KID"),
    _c("wrong_curve_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_WRONG_ALG (P-384)"),
    _c("wrong_use_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_WRONG_USE (enc)"),
    _c("wrong_alg_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_WRONG_ALG (ES256K)"),
    _c("wrong_kty_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_WRONG_KTY (RSA)"),
    _c("private_key.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_PRIVATE"),
    _c("invalid_DNS_SAN.public.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_X5C: a DNS SAN"),
    _c("invalid_no_SAN.public.json", "jwks", "KEYS", REFUSED, "INVALID_KEY_X5C: no SAN"),
    _c("cert_mismatch.public.json", "jwks", "KEYS", REFUSED,
       "INVALID_KEY_X5C: the leaf holds another key"),
    _c("invalid_chain.public.json", "jwks", "KEYS", REFUSED,
       "INVALID_KEY_X5C: the chain does not verify"),
    _c("badjwks/.well-known/jwks.json", "jwks", "KEYS", REFUSED,
       "ISSUER_KEY_DOWNLOAD_ERROR: not a JWKS at all"),
    # --- CRLs, imported with their issuer's JWKS (card.test.ts's CRL cases) ---
    *(
        _c(f"badcrl/{name}", "issuer", "CRL", REFUSED, f"REVOCATION_ERROR: {why}")
        for name, why in (
            ("duplicate-rid", "a rid listed three times"),
            ("invalid-method", "method 'invalid-method'"),
            ("non-base64url-rid", "rids 'base64==' and '$wrongrid!'"),
            ("too-long-rid", "a rid over 24 characters"),
            ("version-mismatch", "ctr 2, the key's crlVersion 1"),
        )
    ),
)  # fmt: skip


def _trust(folder: Path) -> dict[str, ShcIssuer]:
    """What an operator could import from the corpus: issuers whose files shc_issuer accepts."""
    examples = folder.parent.parent / "examples" / "issuer" / ".well-known"
    candidates: list[tuple[str, Path]] = [
        (EXAMPLE_ISS, examples),
        (BADJWKS_ISS, folder / "badjwks"),
    ]
    candidates += [(f"{BADCRL_ISS}/{p.name}", p) for p in sorted((folder / "badcrl").iterdir())]
    trust: dict[str, ShcIssuer] = {}
    for iss, where in candidates:
        well_known = where if where.name == ".well-known" else where / ".well-known"
        try:
            trust[iss] = _issuer(iss, well_known)
        except (ValueError, OSError):
            continue
    return trust


def _issuer(iss: str, well_known: Path) -> ShcIssuer:
    crls = [p.read_text() for p in sorted((well_known / "crl").glob("*.json"))]
    return shc_issuer(iss, (well_known / "jwks.json").read_text(), crls)


def _judge(read: Any) -> tuple[str, str]:
    """(outcome, detail) of one read."""
    try:
        read()
    except ForeignError as exc:
        return f"{exc.reason.value}@{exc.stage.value}", exc.detail
    return OK, "read"


def _sign(payload: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """A SMART Health Card JWS of ``payload`` (minified, raw DEFLATE, raw r||s signature)."""
    header = b64url_encode(json.dumps({"zip": "DEF", "alg": "ES256", "kid": kid}).encode())
    minified = json.dumps(payload, separators=(",", ":")).encode()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b64url_encode(deflate.compress(minified) + deflate.flush())
    der = key.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{header}.{body}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _test_key(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, str, str]:
    """The validator's test private key, its kid and its public JWKS."""
    jwk = json.loads((folder / "private_key.json").read_text())["keys"][0]
    d = int.from_bytes(b64url_decode(jwk["d"], "d"), "big")
    key = ec.derive_private_key(d, ec.SECP256R1())
    public = {k: v for k, v in jwk.items() if k != "d"}
    return key, jwk["kid"], json.dumps({"keys": [public]})


def _read_signed(form: str, text: str, folder: Path) -> tuple[str, str]:
    """A payload (or a FHIR bundle, wrapped in a payload) signed with the validator's test key,
    read with that key trusted for its iss."""
    key, kid, jwks = _test_key(folder)
    if form == "payload":
        payload = json.loads(text)
    else:
        payload = {
            "iss": EXAMPLE_ISS,
            "nbf": CLOCK - 86_400,
            "vc": {
                "type": ["https://smarthealth.cards#health-card"],
                "credentialSubject": {"fhirVersion": "4.0.1", "fhirBundle": json.loads(text)},
            },
        }
    issuers = {payload["iss"]: shc_issuer(payload["iss"], jwks)}
    jws = _sign(payload, key, kid)
    return _judge(lambda: read_jws(jws, issuers, now=CLOCK))


def _read_case(case: Case, folder: Path, trust: dict[str, ShcIssuer]) -> tuple[str, str]:
    paths = [folder / f for f in case.files]
    if case.form == "issuer":
        try:
            _issuer(f"{BADCRL_ISS}/{paths[0].name}", paths[0] / ".well-known")
        except ValueError as exc:
            return REFUSED, str(exc)
        return OK, "accepted"
    text = paths[0].read_text()
    if case.form == "qr":
        joined = "\n".join(p.read_text().strip() for p in paths)
        return _judge(lambda: read_shc(joined, trust, now=CLOCK))
    if case.form == "jws":
        return _judge(lambda: read_jws(text.strip(), trust, now=CLOCK))
    if case.form in {"file", "fhirhealthcard"}:
        doc = json.loads(text)
        if case.form == "file":
            jwss = doc["verifiableCredential"]
        else:
            jwss = [
                p["valueString"] for p in doc["parameter"] if p["name"] == "verifiableCredential"
            ]
        for jws in jwss:
            outcome, detail = _judge(lambda jws=jws: read_jws(jws, trust, now=CLOCK))
            if outcome != OK:
                return outcome, detail
        return OK, f"{len(jwss)} JWS read"
    if case.form in {"payload", "bundle"}:
        return _read_signed(case.form, text, folder)
    try:
        parse_jwks(text, iss=FIXTURE_SAN)
    except ValueError as exc:
        return REFUSED, str(exc)
    return OK, "accepted"


def _examples(corpus: Path, report: Report) -> None:
    folder = corpus / "shc" / "examples"
    trust = {EXAMPLE_ISS: _issuer(EXAMPLE_ISS, folder / "issuer" / ".well-known")}
    # example 03's rid is on the example CRL (revoked for cards issued before 2023-06-22T16:19:25,
    # which it was); 00–02 are valid. Example 02 is a lab panel with no Patient resource.
    expected = {"00": OK, "01": OK, "02": OK, "03": "revoked@revocation"}
    for n, want in expected.items():
        jws_path = folder / f"example-{n}-d-jws.txt"
        qr = "\n".join(p.read_text().strip() for p in sorted(folder.glob(f"example-{n}-f-*.txt")))
        doc = json.loads((folder / f"example-{n}-e-file.smart-health-card").read_text())
        forms = {
            jws_path.name: lambda p=jws_path: read_jws(p.read_text().strip(), trust, now=CLOCK),
            f"example-{n}-f-qr-code-numeric-value-*.txt": lambda q=qr: read_shc(
                q, trust, now=CLOCK
            ),
            f"example-{n}-e-file.smart-health-card": lambda d=doc: [
                read_jws(j, trust, now=CLOCK) for j in d["verifiableCredential"]
            ],
        }
        for name, read in forms.items():
            got, detail = _judge(read)
            report.compare(f"shc/examples/{name}", "EXAMPLES", want, got, detail)


def run(corpus: Path) -> Report:
    """Judge every SHC example and validator fixture under ``corpus`` (see the module doc)."""
    report = Report("SMART Health Cards")
    if not (corpus / "shc" / "examples").is_dir():
        report.skipped.append(f"no SHC examples under {corpus / 'shc'}")
        return report
    _examples(corpus, report)
    folder = corpus / "shc" / "validation-sdk-testdata" / "testdata"
    if not folder.is_dir():
        report.skipped.append(f"no validator fixtures under {folder}")
        return report
    trust = _trust(folder)
    judged: set[str] = set()
    for case in CASES:
        if not all((folder / f).exists() for f in case.files):
            report.skipped.append(f"{case.files}: not in this corpus")
            continue
        judged.update(case.files)
        got, detail = _read_case(case, folder, trust)
        name = (
            case.files[0] if len(case.files) == 1 else f"{case.files[0]} (+{len(case.files) - 1})"
        )
        report.compare(f"shc/testdata/{name}", case.field, case.expected, got, detail)
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if path.suffix in {".png", ".jpg", ".svg"}:
            report.skipped.append(f"{relative}: a QR image (the service reads the QR's text)")
        elif path.is_file() and relative not in judged and not _ancillary(relative):
            report.skipped.append(f"{relative}: no upstream expectation encoded")
    return report


def _ancillary(relative: str) -> bool:
    """Files that are inputs to other cases rather than cases of their own."""
    name = relative.rsplit("/", 1)[-1]
    return relative.startswith(("badcrl/", "shl-examples/")) or name in {
        "README.md",
        "LICENSE",
        "test-issuers.json",
        ".gitkeep",
    }


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m conformance.shc <corpus folder>", file=sys.stderr)
        return 2
    for line in run(Path(argv[0])).lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
