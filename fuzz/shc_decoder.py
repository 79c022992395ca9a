"""atheris harness: the SMART Health Card reader (``shc.read_shc`` / ``read_jws``) and the trust
store's ``parse_jwks`` / ``parse_crl``.

Properties, against one trusted issuer (a fixed P-256 key, a CRL revoking one rid):

* the reader raises nothing but ``ForeignError`` (with a ``Reason`` and ``Stage``), whatever the
  text; the key-set and CRL parsers raise nothing but ``ValueError``;
* a card accepted reads the same again, is an SHC of the trusted issuer, and never names the
  holder in its certificate id.

Inputs are chosen by the first byte: arbitrary text; ``shc:/`` + arbitrary digits (chunk headers
included); a genuine card's JWS with bytes mutated, re-encoded as numeric QR text; a correctly
signed JWS around fuzzed payload bytes (so the JSON, claim and FHIR readers see authenticated
garbage); arbitrary JWKS / CRL text.

Run: ``python fuzz/shc_decoder.py [corpus dirs] -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["passcode"]):
    from passcode.domain.foreign import ForeignCertificate, ForeignError, Stage
    from passcode.domain.model import Kind, Reason
    from passcode.domain.shc import (
        b64url_encode,
        parse_crl,
        parse_jwks,
        read_jws,
        read_shc,
        shc_issuer,
    )

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISS = "https://issuer.example.org/shc"
NOW = 1_700_000_000
KEY = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
_NUMBERS = KEY.public_key().public_numbers()
_X, _Y = (b64url_encode(n.to_bytes(32, "big")) for n in (_NUMBERS.x, _NUMBERS.y))
_CANONICAL = json.dumps({"crv": "P-256", "kty": "EC", "x": _X, "y": _Y}, separators=(",", ":"))
_KID = b64url_encode(hashlib.sha256(_CANONICAL.encode()).digest())
JWKS = json.dumps({"keys": [{"kty": "EC", "kid": _KID, "use": "sig", "alg": "ES256",
                             "crv": "P-256", "x": _X, "y": _Y, "crlVersion": 1}]})  # fmt: skip
CRL = json.dumps({"kid": _KID, "method": "rid", "ctr": 1, "rids": ["revoked", "old.1690000000"]})
ISSUERS = {ISS: shc_issuer(ISS, JWKS, [CRL])}
HEADER = b64url_encode(json.dumps({"zip": "DEF", "alg": "ES256", "kid": _KID}).encode())


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush()


def sign(payload: bytes) -> str:
    body = b64url_encode(_deflate(payload))
    r, s = decode_dss_signature(KEY.sign(f"{HEADER}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{HEADER}.{body}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


GENUINE_PAYLOAD = json.dumps({
    "iss": ISS, "nbf": NOW - 100.5,
    "vc": {"type": ["https://smarthealth.cards#health-card"], "rid": "abc",
           "credentialSubject": {"fhirBundle": {"resourceType": "Bundle", "entry": [
               {"resource": {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["J"]}]}},
               {"resource": {"resourceType": "Immunization", "status": "completed",
                             "occurrenceDateTime": "2021-01-01",
                             "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx",
                                                         "code": "207"}]}}}]}}},
}).encode()  # fmt: skip
GENUINE = sign(GENUINE_PAYLOAD)


def numeric(jws: str) -> str:
    return "shc:/" + "".join(f"{ord(c) - 45:02d}" for c in jws)


def check(read: object) -> ForeignCertificate | None:
    """The reader properties for one input; the certificate when it is accepted."""
    assert callable(read)
    refused: ForeignError | None = None
    try:
        cert = read()
    except ForeignError as exc:
        refused = exc
    if refused is not None:
        assert isinstance(refused.reason, Reason), refused
        assert isinstance(refused.stage, Stage), refused
        return None
    assert isinstance(cert, ForeignCertificate)
    assert cert.kind is Kind.SHC
    assert cert.issuer == ISS
    assert cert.holder_name == "" or cert.holder_name not in cert.certificate_id
    again = read()
    assert again == cert, "the same card read differently"
    return cert


def _mutate(fdp: atheris.FuzzedDataProvider) -> str:
    raw = bytearray(GENUINE.encode())
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        pos = fdp.ConsumeIntInRange(0, len(raw))
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        if fdp.ConsumeBool():
            raw[pos : pos + len(chunk)] = chunk
        else:
            del raw[pos : pos + fdp.ConsumeIntInRange(0, 16)]
    return raw.decode("latin-1")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 5)
    if mode == 0:
        text = fdp.ConsumeUnicode(fdp.remaining_bytes())
        check(lambda: read_shc(text, ISSUERS, now=NOW))
    elif mode == 1:
        digits = "".join(
            chr(48 + b % 10) if b > 20 else "/ \n"[b % 3] for b in fdp.ConsumeBytes(4000)
        )
        check(lambda: read_shc("shc:/" + digits, ISSUERS, now=NOW))
    elif mode == 2:
        jws = _mutate(fdp)
        check(lambda: read_jws(jws, ISSUERS, now=NOW))
        if all(ord(c) >= 45 and ord(c) - 45 <= 77 for c in jws):
            check(lambda: read_shc(numeric(jws), ISSUERS, now=NOW))
    elif mode == 3:
        jws = sign(fdp.ConsumeBytes(fdp.remaining_bytes()))
        check(lambda: read_jws(jws, ISSUERS, now=NOW))
    elif mode == 4:
        text = fdp.ConsumeUnicode(fdp.remaining_bytes())
        with contextlib.suppress(ValueError):
            parse_jwks(text, iss=ISS)
    else:
        text = fdp.ConsumeUnicode(fdp.remaining_bytes())
        with contextlib.suppress(ValueError):
            parse_crl(text)


def main() -> None:
    assert check(lambda: read_shc(numeric(GENUINE), ISSUERS, now=NOW)) is not None
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
