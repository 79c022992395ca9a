"""atheris harness: the EU DCC reader (``passcode.domain.dcc``).

Properties, against a fixed trust store (an ES256 and a PS256 signer, the first with DCC key
usages):

* ``read_dcc`` and ``decode_dcc`` raise nothing but ``ForeignError`` (with a ``Reason`` and a
  ``Stage``), whatever the text; ``read_dcc`` refuses whatever ``decode_dcc`` refuses, at the
  same step;
* an accepted certificate reads back identically, its payload is JSON-serialisable, and its
  types are what its payload holds;
* ``signer_from_der`` raises nothing but ``ValueError``, whatever the bytes.

Inputs are chosen by the first byte: arbitrary text, ``HC1:`` + Base45 of arbitrary bytes, the
same zlib-compressed, a genuine certificate's COSE bytes mutated, a correctly signed envelope
around fuzzed claims (so the claims, validity, key-usage and schema steps see authenticated
garbage), or arbitrary DER for the signer parser.

Run: ``python fuzz/dcc_decoder.py [corpus dirs] -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import contextlib
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["passcode", "cbor2"]):
    import cbor2

    from passcode.domain.dcc import decode_dcc, read_dcc, signer_from_der
    from passcode.domain.foreign import ForeignError, Stage
    from passcode.domain.model import Reason
    from passcode.domain.passfmt import b45decode, b45encode

from tests.dcc_maker import (
    EKU_TEST,
    EKU_VACCINATION,
    NOW,
    claims,
    make_signer,
    pcr_test,
    rsa_key,
    sign,
    vaccination,
)

SIGNERS = [make_signer(ekus=(EKU_VACCINATION, EKU_TEST)), make_signer(key=rsa_key(2048))]
TRUST = {s.kid: signer_from_der(s.der) for s in SIGNERS}
GENUINE = [
    sign(SIGNERS[0], claims(vaccination())),
    sign(SIGNERS[1], claims(pcr_test()), tags=(61, 18)),
    sign(SIGNERS[0], claims(vaccination(given=None)), tags=(), kid_in="unprotected"),
]
GENUINE_RAW = [zlib.decompress(b45decode(text[4:])) for text in GENUINE]


def _refusal(call: Any) -> ForeignError | None:
    try:
        call()
    except ForeignError as exc:
        refused = exc
    else:
        return None
    assert isinstance(refused.reason, Reason), refused
    assert isinstance(refused.stage, Stage), refused
    return refused


def check(text: str) -> None:
    """The properties above for one text."""
    decoded = _refusal(lambda: decode_dcc(text))
    refused = _refusal(lambda: read_dcc(text, TRUST, now=NOW))
    if decoded is not None:
        assert refused is not None, "read_dcc accepted what decode_dcc refused"
        assert (refused.stage, refused.reason) == (decoded.stage, decoded.reason)
        return
    if refused is not None:
        return
    cert = read_dcc(text, TRUST, now=NOW)
    assert read_dcc(text, TRUST, now=NOW) == cert
    json.dumps(cert.payload)
    assert all(cert.payload.get(t.value) for t in cert.types)


def _mutate(fdp: atheris.FuzzedDataProvider) -> str:
    raw = bytearray(GENUINE_RAW[fdp.ConsumeIntInRange(0, len(GENUINE_RAW) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        pos = fdp.ConsumeIntInRange(0, len(raw))
        action = fdp.ConsumeIntInRange(0, 2)
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        if action == 0:
            raw[pos : pos + len(chunk)] = chunk
        elif action == 1:
            raw[pos:pos] = chunk
        else:
            del raw[pos : pos + fdp.ConsumeIntInRange(0, 16)]
    return "HC1:" + b45encode(zlib.compress(bytes(raw)))


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 5)
    if kind == 0:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 9))
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if kind == 2:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
    if kind == 3:
        return [None, True, 1.5, float("nan"), float("inf"), -0.0][fdp.ConsumeIntInRange(0, 5)]
    if kind == 4:
        return cbor2.CBORTag(fdp.ConsumeIntInRange(0, 300), fdp.ConsumeInt(4))
    if kind == 5:
        return ["v", "t", "r", "ver", "nam", "dob", "ci", "1.3.0"][fdp.ConsumeIntInRange(0, 7)]
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = ["v", "t", "r", "nam", "ver", "dob", "gn", "fn", "fnt", "ci", 1, -1]
    return {
        keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]: _value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    }


def _signed_claims(fdp: atheris.FuzzedDataProvider) -> str:
    """A genuine signature over fuzzed claims: reaches the steps after VERIFY."""
    base = [vaccination(), pcr_test(), vaccination(given=None)][fdp.ConsumeIntInRange(0, 2)]
    payload: Any = dict(base)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        keys = [*payload, "x"] if isinstance(payload, dict) else ["x"]
        key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        if isinstance(payload, dict):
            payload[key] = _value(fdp)
    body: dict[Any, Any] = claims(payload, iat=NOW - 60, exp=NOW + 60)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        body[[1, 4, 6, -260][fdp.ConsumeIntInRange(0, 3)]] = _value(fdp)
    signer = SIGNERS[fdp.ConsumeIntInRange(0, 1)]
    tags = [(18,), (), (61, 18)][fdp.ConsumeIntInRange(0, 2)]
    try:
        return sign(signer, body, tags=tags)
    except (ValueError, TypeError, cbor2.CBOREncodeError):
        return ""


def _der(fdp: atheris.FuzzedDataProvider) -> None:
    der = bytearray(SIGNERS[fdp.ConsumeIntInRange(0, 1)].der)
    if fdp.ConsumeBool():
        der = bytearray(fdp.ConsumeBytes(fdp.remaining_bytes()))
    else:
        for _ in range(fdp.ConsumeIntInRange(1, 4)):
            pos = fdp.ConsumeIntInRange(0, len(der))
            der[pos : pos + 2] = fdp.ConsumeBytes(2)
    with contextlib.suppress(ValueError):
        signer_from_der(bytes(der))


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 6)
    if mode == 0:
        check(fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif mode == 1:
        check("HC1:" + b45encode(fdp.ConsumeBytes(fdp.remaining_bytes())))
    elif mode == 2:
        check("HC1:" + b45encode(zlib.compress(fdp.ConsumeBytes(fdp.remaining_bytes()))))
    elif mode == 3:
        check(_mutate(fdp))
    elif mode == 4:
        check(_signed_claims(fdp))
    elif mode == 5:
        check(GENUINE[fdp.ConsumeIntInRange(0, len(GENUINE) - 1)])
    else:
        _der(fdp)


def main() -> None:
    for text in GENUINE:  # the fixed trust store behaves as described before fuzzing starts
        assert read_dcc(text, TRUST, now=NOW)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
