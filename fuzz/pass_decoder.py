"""atheris harness: the pass decoder (``passfmt.authenticate_pass`` / ``verify_pass``).

Properties, against a fixed key set (two trusted keys, a kid that maps to the wrong public key,
and a foreign key that is not in the set):

* the decoder raises nothing but ``PassError`` (with a ``Reason``), whatever the text;
* ``verify_pass`` fails with the same reason as ``authenticate_pass`` when that fails;
* an accepted text re-verifies identically (same claims, same kid), its Base45 is canonical, and
  ``verify_pass`` inside its window returns the same claims;
* claims signed with a trusted key always come back unchanged (sign/verify round trip).

Inputs are chosen by the first byte: arbitrary text, ``PC1:`` + arbitrary text, ``PC1:`` + the
Base45 of arbitrary bytes, a genuine pass with its COSE bytes mutated, a correctly signed envelope
around a fuzzed header and claims payload (so the claims parser sees authenticated garbage), or
freshly signed claims.

Run: ``python fuzz/pass_decoder.py [corpus dirs] -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["passcode", "cbor2"]):
    import cbor2

    from passcode.domain.model import ClaimKey, Color, Reason
    from passcode.domain.passfmt import (
        MAX_TEXT,
        PREFIX,
        PassClaims,
        PassError,
        authenticate_pass,
        b45decode,
        b45encode,
        kid_of,
        sign_pass,
        subject_text,
        verify_pass,
    )

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TRUSTED = [Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n in (1, 2)]
FOREIGN = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)
WRONG_KEY_KID = b"\x00wrongk\x00"  # a trusted kid whose public key signed nothing
KEYS = {kid_of(k.public_key()): k.public_key() for k in TRUSTED}
KEYS[WRONG_KEY_KID] = TRUSTED[0].public_key()
SIGNERS = [(k, kid_of(k.public_key())) for k in TRUSTED]
SIGNERS += [(FOREIGN, kid_of(FOREIGN.public_key())), (TRUSTED[1], WRONG_KEY_KID)]

SAMPLE_CLAIMS = PassClaims(
    issuer="passcode",
    subject=bytes(range(16)),
    issued_at=1_700_000_000,
    expires_at=1_700_000_060,
    token_id=b"\x01" * 12,
    color=Color.GREEN,
    version=3,
)
GENUINE = [sign_pass(SAMPLE_CLAIMS, key, kid) for key, kid in SIGNERS]
GENUINE_RAW = [b45decode(text[len(PREFIX) :]) for text in GENUINE]
INT64 = 2**63


def _refusal(text: str, *, now: int | None = None) -> PassError | None:
    """The PassError for ``text`` (from ``verify_pass`` when ``now`` is given), else None."""
    try:
        if now is None:
            authenticate_pass(text, KEYS)
        else:
            verify_pass(text, KEYS, now=now, leeway=0)
    except PassError as exc:
        return exc
    return None


def check(text: str) -> PassClaims | None:
    """The properties above for one text; the claims when it is accepted."""
    refused = _refusal(text)
    if refused is not None:
        assert isinstance(refused.reason, Reason), refused
        again = _refusal(text, now=0)
        assert again is not None, "verify_pass accepted what authenticate_pass refused"
        assert again.reason is refused.reason, (again, refused)
        return None
    claims, kid = authenticate_pass(text, KEYS)
    assert kid in KEYS
    assert authenticate_pass(text, KEYS) == (claims, kid)
    body = text[len(PREFIX) :]
    assert b45encode(b45decode(body)) == body, "accepted a non-canonical Base45 spelling"
    if claims.issued_at <= claims.expires_at:
        assert verify_pass(text, KEYS, now=claims.expires_at, leeway=0) == claims
    return claims


def _mutate(fdp: atheris.FuzzedDataProvider) -> str:
    raw = bytearray(GENUINE_RAW[fdp.ConsumeIntInRange(0, len(GENUINE_RAW) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        pos = fdp.ConsumeIntInRange(0, len(raw))
        action = fdp.ConsumeIntInRange(0, 2)
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        if action == 0:  # overwrite
            raw[pos : pos + len(chunk)] = chunk
        elif action == 1:  # insert
            raw[pos:pos] = chunk
        else:  # delete
            del raw[pos : pos + fdp.ConsumeIntInRange(0, 16)]
    return PREFIX + b45encode(bytes(raw))


def _round_trip(fdp: atheris.FuzzedDataProvider) -> None:
    key, kid = SIGNERS[fdp.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    claims = PassClaims(
        issuer=fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40)),
        subject=fdp.ConsumeBytes(16).ljust(16, b"\0"),
        issued_at=fdp.ConsumeIntInRange(-INT64, INT64),
        expires_at=fdp.ConsumeIntInRange(-INT64, INT64),
        token_id=fdp.ConsumeBytes(fdp.ConsumeIntInRange(8, 40)).ljust(8, b"\0"),
        color=list(Color)[fdp.ConsumeIntInRange(0, len(Color) - 1)],
        version=fdp.ConsumeIntInRange(0, INT64),
    )
    text = sign_pass(claims, key, kid)
    if kid not in KEYS or KEYS[kid] != key.public_key():
        refused = _refusal(text)
        assert refused is not None, "a pass signed by an untrusted key was accepted"
        assert refused.reason in {Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE}, refused
        return
    if len(text) > MAX_TEXT:
        refused = _refusal(text)
        assert refused is not None, "an over-long pass was accepted"
        assert refused.reason is Reason.MALFORMED, refused
        return
    assert check(text) == claims, "signed claims did not come back unchanged"


CLAIM_KEYS = [int(k) for k in ClaimKey] + [3, 5, 8, -65537]


def _cbor_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 2 else 6)
    if kind == 0:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 17))
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 30))
    if kind == 2:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24))
    if kind == 3:
        return [None, True, False, 1.5, float("nan"), -0.0][fdp.ConsumeIntInRange(0, 5)]
    if kind == 4:
        return subject_text(fdp.ConsumeBytes(16).ljust(16, b"\0"))
    if kind == 5:
        return cbor2.CBORTag(fdp.ConsumeIntInRange(0, 300), fdp.ConsumeInt(4))
    if kind == 6:
        return cbor2.CBORSimpleValue(fdp.ConsumeIntInRange(0, 19))
    if kind == 7:
        return [fdp.ConsumeIntInRange(-2, 5), fdp.ConsumeInt(9)]
    if kind == 8:
        return [_cbor_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = [fdp.ConsumeInt(2), fdp.ConsumeUnicodeNoSurrogates(3)]
    return {k: _cbor_value(fdp, depth + 1) for k in keys}


def _claim_value(fdp: atheris.FuzzedDataProvider, key: int) -> Any:
    """Mostly a value of the claim's own type (so some payloads are accepted), else anything."""
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return _cbor_value(fdp)
    if key == ClaimKey.SUB:
        return subject_text(fdp.ConsumeBytes(16).ljust(16, b"\0"))
    if key == ClaimKey.CTI:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20))
    if key == ClaimKey.STATUS:
        return [fdp.ConsumeIntInRange(-1, 4), fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 9))]
    if key == ClaimKey.ISS:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 9))


def _signed_payload(fdp: atheris.FuzzedDataProvider) -> str:
    """A correctly signed envelope around a fuzzed header and payload: reaches the claims parser,
    which only ever sees authenticated bytes, so mutations of genuine passes never get there."""
    key, kid = SIGNERS[fdp.ConsumeIntInRange(0, 1)]
    header: Any = {1: -8, 4: kid}
    if fdp.ConsumeIntInRange(0, 3) == 0:
        header[CLAIM_KEYS[fdp.ConsumeIntInRange(0, len(CLAIM_KEYS) - 1)]] = _cbor_value(fdp)
    protected = cbor2.dumps(header, canonical=True)
    if fdp.ConsumeBool():
        claims = {k: _claim_value(fdp, k) for k in CLAIM_KEYS if fdp.ConsumeIntInRange(0, 6)}
        try:
            payload = cbor2.dumps(claims, canonical=fdp.ConsumeBool())
        except (ValueError, TypeError, cbor2.CBOREncodeError):
            return ""
    else:
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", payload], canonical=True))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, signature]), canonical=True)
    return PREFIX + b45encode(message)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 5)
    if mode == 0:
        check(fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif mode == 1:
        check(PREFIX + fdp.ConsumeUnicode(fdp.remaining_bytes()))
    elif mode == 2:
        check(PREFIX + b45encode(fdp.ConsumeBytes(fdp.remaining_bytes())))
    elif mode == 3:
        check(_mutate(fdp))
    elif mode == 4:
        check(_signed_payload(fdp))
    else:
        _round_trip(fdp)


def main() -> None:
    for text in GENUINE:  # the fixed key set behaves as described before fuzzing starts
        check(text)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
