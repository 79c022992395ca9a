"""SMART Health Cards (``shc:/``): read a scanned card into a :class:`ForeignCertificate`.

Pure and strict; time is passed in. The steps, each refusing with a :class:`ForeignError`:

1. ``shc:/`` prefix (UNPREFIX). Anything else is not ours (``unsupported``); ``shc:`` without the
   slash is a broken header (``malformed``).
2. Numeric mode (TEXT): each pair of digits ``dd`` is the base64url character ``chr(dd + 45)``.
   A chunked card (``shc:/<i>/<n>/…``, deprecated since spec 1.3) is refused as one part of a
   chunked card unless the text holds every part (separated by whitespace, as a device that
   assembles them sends them), each once; ``n`` above :data:`MAX_CHUNKS`, ``i`` of 0 or above
   ``n``, leading zeros or more than 3 digits are absurd headers. Text over :data:`MAX_TEXT`
   characters is refused before any decoding.
3. JWS compact (DECODE): strict base64url (no padding, canonical), header
   ``{"alg": "ES256", "zip": "DEF", "kid": …}`` and no ``crit``; the signature is the raw 64-byte
   ``r||s`` of RFC 7518 §3.4 (a DER-encoded one is ``malformed`` at VERIFY, as the validator's
   SIGNATURE_FORMAT_ERROR fixtures expect).
4. Raw DEFLATE (COMPRESSION), capped while inflating (:func:`inflate_raw`).
5. Payload JSON (DECODE), capped in size (the inflate cap) and nesting depth
   (:data:`MAX_JSON_DEPTH`, checked before the parser recurses), no duplicate keys, no
   NaN/Infinity.
6. Issuer by ``iss`` and key by ``kid`` from the trust store (``unknown_key``), ES256 signature
   (``bad_signature``) — VERIFY.
7. ``nbf`` (a number, possibly a float) after ``now`` → ``not_yet_valid``; ``exp`` before ``now`` →
   ``expired`` (EXPIRATION).
8. Revocation (REVOCATION) as the spec defines it: the card's ``vc.rid`` is looked up in the
   issuer's CRL for the signing ``kid``; a bare entry revokes every card with that rid, an entry
   ``rid.<t>`` revokes the cards issued (``nbf``) before ``t``.
9. The FHIR bundle (SCHEMA): a Bundle of well-formed entries with Immunization and/or
   Observation resources and at most one Patient (two: whose card is it?), mapped onto the EU DCC
   payload shape (below). A bundle without a Patient is a valid card (spec example 02, a lab
   panel) but nothing in it can be tied to the person at the gate: it is read with an empty name
   and no ``v`` / ``t`` entries, so every policy answers ``not_accepted`` rather than ``invalid``.

Mapping onto the EU DCC payload (so one set of CertLogic rules judges both kinds):

* ``nam``: ``fn`` = Patient.name[0].family, ``gn`` = its given names joined by a space, ``fnt`` /
  ``gnt`` their ICAO 9303 transliteration (A–Z and ``<``); ``dob`` = Patient.birthDate (or "").
* ``v``: one entry for the latest ``completed`` Immunization (by occurrence date). ``dn`` is the
  count of completed doses up to and including it (any product: heterologous schedules count);
  ``sd`` = max(the product's primary series, ``dn``), the EU convention that a booster is ``n/n``.
  CVX → EU product: 207, 221, 227, 228, 229, 230 (Moderna) → EU/1/20/1507, 2 doses; 208, 217,
  218, 219, 300, 301, 302 (Pfizer-BioNTech) → EU/1/20/1528, 2; 210 (AstraZeneca) → EU/1/21/1529,
  2; 211 (Novavax) → EU/1/21/1618, 2; 212 (Janssen) → EU/1/20/1525, 1; and the WHO-listed non-US
  products 502 Covaxin, 505 Sputnik-V, 510 BBIBP-CorV, 511 CoronaVac (2 doses each) and 504
  Sputnik-Light, 506 Convidecia (1 dose), each with its DCC ``vp`` and ``ma``. Any other CVX code
  (213 "unspecified formulation" included) becomes ``mp = "CVX:<code>"`` with ``sd = dn``: the
  record of doses given, never a product the EU value sets know, so a rule that admits only
  listed products (the default policy) refuses it whatever ``dn``/``sd`` say. A non-CVX coding
  becomes ``mp = "<system>|<code>"`` the same way. ``dt`` is the occurrence date (YYYY-MM-DD),
  ``co`` is "" (an SHC does not say where a dose was given), ``is`` the ``iss`` URL, ``ci`` the
  certificate id.
* ``t``: one entry for the latest final/amended/corrected laboratory Observation whose LOINC code
  is a SARS-CoV-2 nucleic acid test (``tt`` LP6464-4) or antigen test (``tt`` LP217198-3) with a
  result of detected / not detected (SNOMED 260373001 / 260415000, or LOINC answers LA11882-0 /
  LA11883-8) → ``tr`` 260373001 / 260415000; ``sc`` is effectiveDateTime as RFC 3339 UTC (a bare
  date is read as its midnight UTC: the test then looks older, never younger), ``tc`` the
  performer's display or "".
* Other resources (DiagnosticReport, Specimen, …) are read for shape only.

``certificate_id`` is ``<iss>#<kid>#<rid>``, or ``<iss>#<kid>#sha256:<digest of the signing
input>`` when the card has no rid (the signing input, not the signature: ECDSA signatures are
malleable). Never a name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from passcode.domain.foreign import CertType, ForeignCertificate, ForeignError, ShcIssuer, Stage
from passcode.domain.inflate import MAX_INFLATED, InflateError, inflate_raw
from passcode.domain.model import Kind, Reason

PREFIX = "shc:/"
# One QR code (version 40, numeric mode) holds 7,089 digits; a chunked card's parts together
# stay far below this. Anything longer is refused before it is decoded.
MAX_TEXT = 16 * 1024
MAX_CHUNKS = 20  # the validator's own "too many chunks" fixture has 17 parts
MAX_JWS = MAX_TEXT // 2
MAX_HEADER = 1024  # {"zip":"DEF","alg":"ES256","kid":"<43 chars>"} is 80 bytes
MAX_JSON_DEPTH = 32  # a FHIR bundle nests about 10 deep
MAX_RID = 24  # the spec's limit on a revocation id
MAX_JWKS = 256 * 1024
MAX_CRL = 1024 * 1024

CVX_SYSTEM = "http://hl7.org/fhir/sid/cvx"
LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
DISEASE_COVID = "840539006"
TEST_NAA = "LP6464-4"
TEST_ANTIGEN = "LP217198-3"
DETECTED, NOT_DETECTED = "260373001", "260415000"

_MODERNA = ("EU/1/20/1507", "1119349007", "ORG-100031184", 2)
_PFIZER = ("EU/1/20/1528", "1119349007", "ORG-100030215", 2)
_VECTOR = "29061000087103"  # COVID-19 non-replicating viral vector vaccine
_INACTIVATED = "1157024006"
# CVX code → (DCC mp, vp, ma, doses in the primary series)
CVX_PRODUCTS: Mapping[str, tuple[str, str, str, int]] = {
    **dict.fromkeys(("207", "221", "227", "228", "229", "230"), _MODERNA),
    **dict.fromkeys(("208", "217", "218", "219", "300", "301", "302"), _PFIZER),
    "210": ("EU/1/21/1529", _VECTOR, "ORG-100001699", 2),
    "211": ("EU/1/21/1618", "1162643001", "ORG-100032020", 2),
    "212": ("EU/1/20/1525", _VECTOR, "ORG-100001417", 1),
    "502": ("Covaxin", _INACTIVATED, "Bharat-Biotech", 2),
    "504": ("Sputnik-Light", _VECTOR, "Gamaleya-Research-Institute", 1),
    "505": ("Sputnik-V", _VECTOR, "Gamaleya-Research-Institute", 2),
    "506": ("Convidecia", _VECTOR, "ORG-100013793", 1),
    "510": ("BBIBP-CorV", _INACTIVATED, "ORG-100020693", 2),
    "511": ("CoronaVac", _INACTIVATED, "Sinovac-Biotech", 2),
}
# LOINC codes of SARS-CoV-2 tests → DCC test type
LOINC_TESTS: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "94306-8", "94309-2", "94500-6", "94531-1", "94533-7", "94534-5", "94565-9",
            "94759-8", "94760-6", "94845-5", "95406-5", "95409-9", "95608-6", "96094-8",
        ),
        TEST_NAA,
    ),
    **dict.fromkeys(("94558-4", "95209-3", "96119-3", "97097-0"), TEST_ANTIGEN),
}  # fmt: skip
RESULTS: Mapping[tuple[str, str], str] = {
    (SNOMED_SYSTEM, DETECTED): DETECTED,
    (SNOMED_SYSTEM, NOT_DETECTED): NOT_DETECTED,
    (LOINC_SYSTEM, "LA11882-0"): DETECTED,
    (LOINC_SYSTEM, "LA11883-8"): NOT_DETECTED,
}
_FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})
_IMMUNIZATION_STATUS = frozenset({"completed", "entered-in-error", "not-done"})

_NUMERIC_PAIRS = {f"{n:02d}": chr(n + 45) for n in range(78)}
_CHUNK = re.compile(r"([1-9][0-9]{0,2})/([1-9][0-9]{0,2})/(.*)", re.DOTALL)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_RID = re.compile(r"[A-Za-z0-9_-]{1,24}")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:T([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)"
    r"(Z|[+-][0-9]{2}:[0-9]{2}))?"
)
_BIRTH = re.compile(r"[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?")


def _fail(reason: Reason, stage: Stage, detail: str) -> ForeignError:
    return ForeignError(reason, stage, detail)


# --- text: prefix, numeric mode, chunks --------------------------------------------------------


def _numeric(digits: str, where: str) -> str:
    if not (digits.isascii() and digits.isdigit()):
        raise _fail(Reason.MALFORMED, Stage.TEXT, f"{where}: not all digits")
    if len(digits) % 2:
        raise _fail(Reason.MALFORMED, Stage.TEXT, f"{where}: an odd number of digits")
    try:
        return "".join([_NUMERIC_PAIRS[digits[i : i + 2]] for i in range(0, len(digits), 2)])
    except KeyError as exc:
        raise _fail(
            Reason.MALFORMED, Stage.TEXT, f"{where}: digit pair {exc.args[0]} is above 77"
        ) from None


def _unprefix(part: str) -> str:
    if part[:5].lower() == PREFIX:
        return part[5:]
    if part[:4].lower() == "shc:":
        raise _fail(Reason.MALFORMED, Stage.UNPREFIX, "an shc: header without the '/'")
    raise _fail(Reason.UNSUPPORTED, Stage.UNPREFIX, "no shc:/ prefix")


def _chunk(body: str) -> tuple[int, int, str] | None:
    """``(index, total, digits)`` for a chunk header, None for a whole card; absurd headers fail."""
    if "/" not in body:
        return None
    match = _CHUNK.fullmatch(body)
    if match is None:
        raise _fail(Reason.MALFORMED, Stage.TEXT, "a chunk header that is not shc:/<i>/<n>/")
    index, total = int(match[1]), int(match[2])
    if total > MAX_CHUNKS or index > total:
        raise _fail(Reason.MALFORMED, Stage.TEXT, f"an absurd chunk header {index}/{total}")
    return index, total, match[3]


def decode_numeric(text: str) -> str:
    """The JWS a scanned ``shc:/`` text carries: one QR's text, or every part of a chunked card
    separated by whitespace. Raises ForeignError (UNPREFIX, TEXT)."""
    if len(text) > MAX_TEXT:
        raise _fail(Reason.MALFORMED, Stage.TEXT, f"longer than {MAX_TEXT} characters")
    parts = text.split()
    if not parts:
        raise _fail(Reason.UNSUPPORTED, Stage.UNPREFIX, "no shc:/ prefix")
    bodies = [_unprefix(p) for p in parts]
    chunks = [_chunk(b) for b in bodies]
    if len(parts) == 1:
        only = chunks[0]
        if only is None:
            return _numeric(bodies[0], "the numeric data")
        index, total, digits = only
        if total == 1:
            return _numeric(digits, "chunk 1/1")
        raise _fail(
            Reason.MALFORMED,
            Stage.TEXT,
            f"part {index} of {total} of a chunked card: scan all its parts on a device that "
            "assembles them",
        )
    found: dict[int, str] = {}
    totals = set()
    for chunk in chunks:
        if chunk is None:
            raise _fail(Reason.MALFORMED, Stage.TEXT, "several codes, not all parts of one card")
        index, total, digits = chunk
        totals.add(total)
        if index in found:
            raise _fail(Reason.MALFORMED, Stage.TEXT, f"chunk {index} given twice")
        found[index] = _numeric(digits, f"chunk {index}/{total}")
    if len(totals) != 1:
        raise _fail(Reason.MALFORMED, Stage.TEXT, "chunks of different cards")
    (total,) = totals
    if len(found) != total:
        missing = sorted(set(range(1, total + 1)) - set(found))
        raise _fail(Reason.MALFORMED, Stage.TEXT, f"chunks {missing} of {total} missing")
    return "".join(found[i] for i in range(1, total + 1))


# --- JSON and base64url ------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a duplicate key")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes | str, *, limit: int, what: str) -> Any:
    """Strict JSON of untrusted origin: at most ``limit`` bytes/characters, nesting at most
    MAX_JSON_DEPTH (measured before the recursive parser runs), no duplicate keys, no NaN.
    Raises ValueError naming ``what``."""
    if len(data) > limit:
        raise ValueError(f"{what} is longer than {limit} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({exc})") from None


def b64url_decode(text: str, what: str) -> bytes:
    """Unpadded base64url in its one canonical spelling; ValueError otherwise."""
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError(f"{what} is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError(f"{what} is not base64url") from None
    if b64url_encode(raw) != text:
        raise ValueError(f"{what} is not canonical base64url")
    return raw


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- the JWS -----------------------------------------------------------------------------------


def _header(text: str) -> str:
    """The kid of a valid SMART Health Card JWS header."""
    try:
        header = parse_json(b64url_decode(text, "the JWS header"), limit=MAX_HEADER, what="header")
    except ValueError as exc:
        raise _fail(Reason.MALFORMED, Stage.DECODE, str(exc)) from None
    if not isinstance(header, dict):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS header is not an object")
    if header.get("alg") != "ES256":
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS header's alg is not ES256")
    if header.get("zip") != "DEF":
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS header's zip is not DEF")
    if "crit" in header:
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS header has critical extensions")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS header has no kid")
    return kid


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(Reason.MALFORMED, Stage.DECODE, f"{name} is not a number")
    if not -(2**53) <= value <= 2**53:
        raise _fail(Reason.MALFORMED, Stage.DECODE, f"{name} is out of range")
    return float(value)


def read_shc(text: str, issuers: Mapping[str, ShcIssuer], *, now: int) -> ForeignCertificate:
    """Read a scanned ``shc:/`` text (one QR, or every part of a chunked card separated by
    whitespace) against the trusted issuers at ``now`` (Unix seconds)."""
    return read_jws(decode_numeric(text), issuers, now=now)


def read_jws(jws: str, issuers: Mapping[str, ShcIssuer], *, now: int) -> ForeignCertificate:
    """Read a SMART Health Card's JWS compact serialisation (what a ``shc:/`` QR, a
    ``.smart-health-card`` file or a FHIR $health-cards-issue answer carries)."""
    if len(jws) > MAX_JWS:
        raise _fail(Reason.MALFORMED, Stage.DECODE, f"the JWS is longer than {MAX_JWS} characters")
    segments = jws.split(".")
    if len(segments) != 3:
        raise _fail(Reason.MALFORMED, Stage.DECODE, "not a JWS compact serialisation")
    header_b64, payload_b64, signature_b64 = segments
    kid = _header(header_b64)
    try:
        compressed = b64url_decode(payload_b64, "the JWS payload")
        signature = b64url_decode(signature_b64, "the JWS signature")
    except ValueError as exc:
        raise _fail(Reason.MALFORMED, Stage.DECODE, str(exc)) from None
    if len(signature) != 64:
        der = " (DER-encoded?)" if signature[:1] == b"\x30" else ""
        raise _fail(
            Reason.MALFORMED,
            Stage.VERIFY,
            f"the signature is {len(signature)} bytes, not ES256's 64-byte r||s{der}",
        )
    try:
        inflated = inflate_raw(compressed, limit=MAX_INFLATED)
    except InflateError as exc:
        raise _fail(Reason.MALFORMED, Stage.COMPRESSION, str(exc)) from None
    try:
        payload = parse_json(inflated, limit=MAX_INFLATED, what="the JWS payload")
    except ValueError as exc:
        raise _fail(Reason.MALFORMED, Stage.DECODE, str(exc)) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("iss"), str):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS payload has no iss")
    iss: str = payload["iss"]
    issuer = issuers.get(iss)
    if issuer is None:
        raise _fail(Reason.UNKNOWN_KEY, Stage.VERIFY, "the issuer is not in the trust store")
    key = issuer.keys.get(kid)
    if key is None:
        raise _fail(Reason.UNKNOWN_KEY, Stage.VERIFY, "the issuer has no key with this kid")
    signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _fail(
            Reason.BAD_SIGNATURE, Stage.VERIFY, "the ES256 signature does not verify"
        ) from None
    return _certificate(payload, issuer, kid, signing_input, now)


def _certificate(
    payload: dict[str, Any], issuer: ShcIssuer, kid: str, signing_input: bytes, now: int
) -> ForeignCertificate:
    nbf = _number(payload.get("nbf"), "nbf")
    exp = None if payload.get("exp") is None else _number(payload["exp"], "exp")
    vc = payload.get("vc")
    if not isinstance(vc, dict):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "the JWS payload has no vc")
    vc_types = vc.get("type")
    if not isinstance(vc_types, list) or not all(isinstance(t, str) for t in vc_types):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "vc.type is not a list of strings")
    if "https://smarthealth.cards#health-card" not in vc_types:
        raise _fail(Reason.MALFORMED, Stage.DECODE, "vc.type lacks #health-card")
    subject = vc.get("credentialSubject")
    if not isinstance(subject, dict) or not isinstance(subject.get("fhirBundle"), dict):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "vc.credentialSubject.fhirBundle is missing")
    rid = vc.get("rid")
    if rid is not None and (not isinstance(rid, str) or _RID.fullmatch(rid) is None):
        raise _fail(Reason.MALFORMED, Stage.DECODE, "vc.rid is not a base64url id of ≤ 24 chars")
    if nbf > now:
        raise _fail(Reason.NOT_YET_VALID, Stage.EXPIRATION, "nbf is after the scan time")
    if exp is not None and exp < now:
        raise _fail(Reason.EXPIRED, Stage.EXPIRATION, "exp is before the scan time")
    if rid is not None and rid in issuer.revoked.get(kid, {}):
        before = issuer.revoked[kid][rid]
        if before is None or nbf < before:
            raise _fail(Reason.REVOKED, Stage.REVOCATION, "the rid is on the issuer's CRL")
    if rid is not None:
        certificate_id = f"{issuer.iss}#{kid}#{rid}"
    else:
        digest = b64url_encode(hashlib.sha256(signing_input).digest()[:16])
        certificate_id = f"{issuer.iss}#{kid}#sha256:{digest}"
    holder, dcc = _fhir(subject["fhirBundle"], issuer.iss, certificate_id)
    types = frozenset(t for t in CertType if t.value in dcc)
    return ForeignCertificate(
        kind=Kind.SHC,
        issuer=issuer.iss,
        certificate_id=certificate_id,
        holder_name=holder,
        types=types,
        issued_at=math.floor(nbf),
        expires_at=None if exp is None else math.floor(exp),
        payload=dcc,
    )


# --- the FHIR bundle → the EU DCC payload shape ------------------------------------------------


def _schema(detail: str) -> ForeignError:
    return _fail(Reason.MALFORMED, Stage.SCHEMA, detail)


def _icao(name: str) -> str:
    """ICAO 9303 machine-readable spelling: accents dropped, A–Z kept, spaces and hyphens '<',
    other punctuation left out."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Z<]", "", re.sub(r"[\s-]+", "<", plain.upper().strip()))


def _codings(concept: Any, what: str) -> list[tuple[str, str]]:
    if not isinstance(concept, dict) or not isinstance(concept.get("coding"), list):
        raise _schema(f"{what} has no coding")
    out = []
    for coding in concept["coding"]:
        if not isinstance(coding, dict):
            raise _schema(f"{what} has a coding that is not an object")
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str):
            out.append((system, code))
    if not out:
        raise _schema(f"{what} has no system and code")
    return out


def _patient(resource: dict[str, Any]) -> tuple[str, dict[str, str], str]:
    names = resource.get("name")
    if not isinstance(names, list) or not names or not isinstance(names[0], dict):
        raise _schema("the Patient has no name")
    family, given = names[0].get("family", ""), names[0].get("given", [])
    if not isinstance(family, str) or not isinstance(given, list):
        raise _schema("the Patient's name is not family and given names")
    if not all(isinstance(g, str) for g in given):
        raise _schema("the Patient's given names are not strings")
    gn = " ".join(given)
    if not (family or gn):
        raise _schema("the Patient's name is empty")
    nam = {"fn": family, "fnt": _icao(family), "gn": gn, "gnt": _icao(gn)}
    birth = resource.get("birthDate", "")
    if not isinstance(birth, str) or (birth and _BIRTH.fullmatch(birth) is None):
        raise _schema("the Patient's birthDate is not a FHIR date")
    return f"{gn} {family}".strip(), nam, birth


def _date(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _schema(f"{what} is not a date")
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise _schema(f"{what} is not a FHIR date or dateTime with its time zone")
    try:
        datetime.strptime(match[1], "%Y-%m-%d")  # a calendar check only
    except ValueError:
        raise _schema(f"{what} is not a calendar date") from None
    return value


def _rfc3339(value: Any, what: str) -> str:
    text = _date(value, what)
    if "T" not in text:
        return f"{text}T00:00:00Z"
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _occurrence(resource: dict[str, Any]) -> str:
    choices = [k for k in resource if k.startswith("occurrence")]
    if choices != ["occurrenceDateTime"]:
        raise _schema("an Immunization needs exactly one occurrenceDateTime")
    return _date(resource["occurrenceDateTime"], "occurrenceDateTime")[:10]


def _dose(resource: dict[str, Any]) -> tuple[str, str, str, str, int | None]:
    """(date, mp, vp, ma, primary series doses or None) of a completed Immunization."""
    day = _occurrence(resource)
    codings = _codings(resource.get("vaccineCode"), "vaccineCode")
    cvx = next((code for system, code in codings if system == CVX_SYSTEM), None)
    if cvx is not None and cvx in CVX_PRODUCTS:
        mp, vp, ma, series = CVX_PRODUCTS[cvx]
        return day, mp, vp, ma, series
    if cvx is not None:
        return day, f"CVX:{cvx}", "", "", None
    system, code = codings[0]
    return day, f"{system}|{code}", "", "", None


def _test(resource: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """(sc, tt, tr, tc) of a SARS-CoV-2 test result, None for any other Observation."""
    if resource.get("status") not in _FINAL_OBSERVATION:
        return None
    codings = _codings(resource.get("code"), "an Observation's code")
    kind = next(
        (LOINC_TESTS[c] for s, c in codings if s == LOINC_SYSTEM and c in LOINC_TESTS), None
    )
    if kind is None or "valueCodeableConcept" not in resource:
        return None
    results = _codings(resource["valueCodeableConcept"], "an Observation's value")
    result = next((RESULTS[r] for r in results if r in RESULTS), None)
    if result is None:
        return None
    taken = _rfc3339(resource.get("effectiveDateTime"), "effectiveDateTime")
    performers = resource.get("performer")
    centre = ""
    if isinstance(performers, list) and performers and isinstance(performers[0], dict):
        display = performers[0].get("display")
        centre = display if isinstance(display, str) else ""
    return taken, kind, result, centre


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle's entries, each checked to have a resourceType."""
    if bundle.get("resourceType") != "Bundle" or not isinstance(bundle.get("entry"), list):
        raise _schema("the fhirBundle is not a Bundle with entries")
    resources = []
    for entry in bundle["entry"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            raise _schema("a Bundle entry has no resource")
        resource = entry["resource"]
        if not isinstance(resource.get("resourceType"), str):
            raise _schema("a Bundle entry's resource has no resourceType")
        resources.append(resource)
    return resources


def _fhir(bundle: dict[str, Any], iss: str, ci: str) -> tuple[str, dict[str, Any]]:
    """The holder's name and the DCC-shaped payload of a FHIR bundle."""
    resources = _resources(bundle)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) > 1:
        raise _schema(f"the Bundle has {len(patients)} Patient resources: whose card is it?")
    kinds = {r["resourceType"] for r in resources}
    if not kinds & {"Immunization", "Observation"}:
        raise _schema("the Bundle has no Immunization or Observation")
    if not patients:  # a valid card (spec example 02), but nothing in it names the holder
        return "", {"ver": "1.3.0", "nam": {"fn": "", "fnt": "", "gn": "", "gnt": ""}, "dob": ""}
    holder, nam, dob = _patient(patients[0])
    doses = []
    for resource in resources:
        if resource["resourceType"] != "Immunization":
            continue
        status = resource.get("status")
        if status not in _IMMUNIZATION_STATUS:
            raise _schema("an Immunization's status is not a FHIR status code")
        if status == "completed":
            doses.append(_dose(resource))
    tests = [t for r in resources if r["resourceType"] == "Observation" if (t := _test(r))]
    payload: dict[str, Any] = {"ver": "1.3.0", "nam": nam, "dob": dob}
    if doses:
        doses.sort(key=lambda d: d[0])
        day, mp, vp, ma, series = doses[-1]
        dn = len(doses)
        sd = dn if series is None else max(series, dn)
        payload["v"] = [
            {"tg": DISEASE_COVID, "vp": vp, "mp": mp, "ma": ma, "dn": dn, "sd": sd, "dt": day,
             "co": "", "is": iss, "ci": ci}
        ]  # fmt: skip
    if tests:
        sc, tt, tr, tc = max(tests, key=lambda t: t[0])
        payload["t"] = [
            {"tg": DISEASE_COVID, "tt": tt, "sc": sc, "tr": tr, "tc": tc, "co": "", "is": iss,
             "ci": ci}
        ]  # fmt: skip
    return holder, payload


# --- issuer keys and revocation lists (for the trust store) ------------------------------------


def _thumbprint(crv: str, x: str, y: str) -> str:
    """RFC 7638 JWK thumbprint of an EC key: SHA-256 of its required members, sorted, no spaces."""
    canonical = json.dumps({"crv": crv, "kty": "EC", "x": x, "y": y}, separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def _x5c(entry: dict[str, Any], key: EllipticCurvePublicKey, iss: str, name: str) -> None:
    """An entry's x5c chain: its leaf holds this key, each certificate is signed by the next, and
    the leaf's subject alternative name is the issuer URL (the spec's rule for x5c)."""
    chain = entry["x5c"]
    if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
        raise ValueError(f"{name}: x5c is not a list of base64 certificates")
    try:
        certs = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in chain]
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"{name}: an x5c certificate does not parse ({exc})") from None
    if certs[0].public_key() != key:
        raise ValueError(f"{name}: the x5c leaf certificate holds another key")
    for cert, parent in itertools.pairwise(certs):
        try:
            cert.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError(f"{name}: the x5c chain is broken") from None
    try:
        san = certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError(f"{name}: the x5c leaf has no subject alternative name") from None
    if iss not in san.get_values_for_type(x509.UniformResourceIdentifier):
        raise ValueError(f"{name}: the x5c leaf's subject alternative name is not {iss}")


def _jwk(entry: Any, iss: str, n: int) -> tuple[str, EllipticCurvePublicKey, int | None]:
    if not isinstance(entry, dict):
        raise ValueError(f"key {n}: not a JSON object")
    name = f"key {n} ({entry.get('kid')!r})"
    checks = (("kty", "EC"), ("crv", "P-256"), ("use", "sig"), ("alg", "ES256"))
    for member, wanted in checks:
        if entry.get(member) != wanted:
            raise ValueError(f"{name}: {member} is {entry.get(member)!r}, not {wanted!r}")
    if "d" in entry:
        raise ValueError(f"{name}: a private key: publish only the public key")
    x, y, kid = entry.get("x"), entry.get("y"), entry.get("kid")
    if not isinstance(x, str) or not isinstance(y, str) or not isinstance(kid, str):
        raise ValueError(f"{name}: x, y and kid must be strings")
    raw_x, raw_y = b64url_decode(x, f"{name} x"), b64url_decode(y, f"{name} y")
    if len(raw_x) != 32 or len(raw_y) != 32:
        raise ValueError(f"{name}: x and y must be 32 bytes for P-256")
    if kid != _thumbprint("P-256", x, y):
        raise ValueError(f"{name}: kid is not the key's RFC 7638 thumbprint")
    try:
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(raw_x, "big"), int.from_bytes(raw_y, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise ValueError(f"{name}: the point is not on P-256") from None
    if "x5c" in entry:
        _x5c(entry, key, iss, name)
    version = entry.get("crlVersion")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ValueError(f"{name}: crlVersion is not an integer")
    return kid, key, version


def _jwks(text: str, iss: str) -> dict[str, tuple[EllipticCurvePublicKey, int | None]]:
    doc = parse_json(text, limit=MAX_JWKS, what="the JWKS")
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise ValueError('the JWKS is not {"keys": [...]} with at least one key')
    out: dict[str, tuple[EllipticCurvePublicKey, int | None]] = {}
    for n, entry in enumerate(doc["keys"]):
        kid, key, version = _jwk(entry, iss, n)
        if kid in out:
            raise ValueError(f"key {n}: kid {kid!r} appears twice")
        out[kid] = (key, version)
    return out


def parse_jwks(text: str, *, iss: str) -> dict[str, EllipticCurvePublicKey]:
    """An issuer's ``/.well-known/jwks.json`` as its signing keys by kid.

    Strict: every entry must be kty EC, crv P-256, use sig, alg ES256, public only, with its kid
    the RFC 7638 thumbprint, and any x5c chain must hold the key and name ``iss``. One bad entry
    refuses the whole set (ValueError naming it): the set is one published document, and a
    wrong entry means it was mis-built or altered; importing the rest would leave cards signed
    with the refused key answered ``unknown_key`` later with nobody told why, while refusing
    the import tells the operator now.
    """
    return {kid: key for kid, (key, _) in _jwks(text, iss).items()}


def _rid_entry(entry: Any) -> tuple[str, int | None]:
    if not isinstance(entry, str):
        raise ValueError("a CRL rid is not a string")
    rid, dot, stamp = entry.partition(".")
    if _RID.fullmatch(rid) is None:
        raise ValueError(f"CRL rid {entry!r} is not base64url of at most {MAX_RID} characters")
    if not dot:
        return rid, None
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 12:
        raise ValueError(f"CRL rid {entry!r}: the timestamp is not whole seconds")
    return rid, int(stamp)


def parse_crl(text: str) -> tuple[str, dict[str, int | None], int]:
    """An issuer's ``/.well-known/crl/<kid>.json``: ``(kid, {rid: revoked-before timestamp or
    None for every card}, ctr)``. Only the spec's ``method: rid``; a malformed rid or a rid
    listed twice (the CRL would be ambiguous) refuses the list with a ValueError."""
    doc = parse_json(text, limit=MAX_CRL, what="the CRL")
    if not isinstance(doc, dict):
        raise ValueError("the CRL is not a JSON object")
    kid, method, ctr, rids = doc.get("kid"), doc.get("method"), doc.get("ctr"), doc.get("rids")
    if not isinstance(kid, str) or not kid:
        raise ValueError("the CRL has no kid")
    if method != "rid":
        raise ValueError(f"the CRL's method is {method!r}, not 'rid'")
    if isinstance(ctr, bool) or not isinstance(ctr, int) or ctr < 1:
        raise ValueError("the CRL's ctr is not a positive integer")
    if not isinstance(rids, list):
        raise ValueError("the CRL's rids is not a list")
    revoked: dict[str, int | None] = {}
    for entry in rids:
        rid, before = _rid_entry(entry)
        if rid in revoked:
            raise ValueError(f"the CRL lists rid {rid!r} twice")
        revoked[rid] = before
    return kid, revoked, ctr


def shc_issuer(
    iss: str, jwks_text: str, crl_texts: Iterable[str] = (), *, name: str | None = None
) -> ShcIssuer:
    """A trusted issuer from its URL, JWKS and CRL files; ValueError for any that is wrong: an
    issuer URL that is not https or ends in '/', a bad key, a CRL for a kid not in the set, two
    CRLs for one kid, or a CRL whose ctr is not its key's crlVersion (one of the two is stale)."""
    if not iss.startswith("https://") or iss.endswith("/") or len(iss) > 2048:
        raise ValueError("the issuer URL must be https:// and must not end with '/'")
    keys = _jwks(jwks_text, iss)
    revoked: dict[str, dict[str, int | None]] = {}
    for crl_text in crl_texts:
        kid, rids, ctr = parse_crl(crl_text)
        if kid not in keys:
            raise ValueError(f"a CRL for kid {kid!r}, which is not in the issuer's JWKS")
        if kid in revoked:
            raise ValueError(f"two CRLs for kid {kid!r}")
        version = keys[kid][1]
        if version != ctr:
            raise ValueError(f"the CRL for {kid!r} has ctr {ctr}, its key crlVersion {version}")
        revoked[kid] = rids
    return ShcIssuer(
        iss=iss, keys={kid: key for kid, (key, _) in keys.items()}, revoked=revoked, name=name
    )
