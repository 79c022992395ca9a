"""atheris harness: the venue code decoder (``venuecode.authenticate_venue`` / ``verify_venue``).

Properties, against a fixed key set (one trusted key, a kid that maps to the wrong public key,
and a foreign key that is not in the set):

* the decoder raises nothing but ``VenueCodeError`` (with a ``Reason``), whatever the text;
* ``verify_venue`` fails with the same reason as ``authenticate_venue`` when that fails;
* an accepted text re-reads identically, its Base45 is canonical, its claims are within the
  limits signing enforces (so ``sign_venue`` re-signs them);
* claims signed with the trusted key come back unchanged; signed by any other, never accepted.

Inputs are chosen by the first byte: arbitrary text, ``PP1:`` + arbitrary text, ``PP1:`` + the
Base45 of arbitrary bytes, a genuine code with its COSE bytes mutated, a correctly signed envelope
around fuzzed claims (so the claims parser sees authenticated garbage), or freshly signed claims.

Run: ``python fuzz/venue_decoder.py [corpus dirs] -max_total_time=60`` (libFuzzer flags).
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["passcode", "cbor2"]):
    import cbor2

    from passcode.domain.model import ClaimKey, Reason
    from passcode.domain.passfmt import b45decode, b45encode, kid_of, sign_envelope
    from passcode.domain.venuecode import (
        DAY,
        MAX_DAYS,
        PREFIX,
        VenueClaim,
        VenueClaims,
        VenueCodeError,
        authenticate_venue,
        sign_venue,
        verify_venue,
    )

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TRUSTED = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
FOREIGN = Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)
WRONG_KEY_KID = b"\x00wrongk\x00"  # a trusted kid whose public key signed nothing
KEYS = {kid_of(TRUSTED.public_key()): TRUSTED.public_key(), WRONG_KEY_KID: FOREIGN.public_key()}
SIGNERS = [
    (TRUSTED, kid_of(TRUSTED.public_key())),
    (FOREIGN, kid_of(FOREIGN.public_key())),
    (TRUSTED, WRONG_KEY_KID),
]
SAMPLE = VenueClaims("passcode", "Corner Shop 街角小店", 2, 1_800_000_000, 1_800_000_000 + DAY)
GENUINE_RAW = [b45decode(sign_venue(SAMPLE, key, kid)[len(PREFIX) :]) for key, kid in SIGNERS]
CLAIM_KEYS = [ClaimKey.ISS, ClaimKey.IAT, ClaimKey.EXP, VenueClaim.PLACE, VenueClaim.ISSUE, 7, -1]


def _refusal(text: str, *, now: int | None = None) -> VenueCodeError | None:
    try:
        if now is None:
            authenticate_venue(text, KEYS)
        else:
            verify_venue(text, KEYS, now=now, leeway=0)
    except VenueCodeError as exc:
        return exc
    return None


def check(text: str) -> VenueClaims | None:
    """The properties above for one text; the claims when it is accepted."""
    refused = _refusal(text)
    if refused is not None:
        assert isinstance(refused.reason, Reason), refused
        again = _refusal(text, now=0)
        assert again is not None, "verify_venue accepted what authenticate_venue refused"
        assert again.reason is refused.reason, (again, refused)
        return None
    claims, kid = authenticate_venue(text, KEYS)
    assert kid == SIGNERS[0][1], "accepted a code not signed by the trusted key"
    assert authenticate_venue(text, KEYS) == (claims, kid)
    body = text[len(PREFIX) :]
    assert b45encode(b45decode(body)) == body, "accepted a non-canonical Base45 spelling"
    assert 0 <= claims.expires_at - claims.issued_at <= MAX_DAYS * DAY
    assert authenticate_venue(sign_venue(claims, TRUSTED, kid), KEYS)[0] == claims
    assert verify_venue(text, KEYS, now=claims.issued_at, leeway=0) == claims
    return claims


def _mutate(fdp: atheris.FuzzedDataProvider) -> str:
    raw = bytearray(GENUINE_RAW[fdp.ConsumeIntInRange(0, len(GENUINE_RAW) - 1)])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        pos = fdp.ConsumeIntInRange(0, len(raw))
        chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        action = fdp.ConsumeIntInRange(0, 2)
        if action == 0:
            raw[pos : pos + len(chunk)] = chunk
        elif action == 1:
            raw[pos:pos] = chunk
        else:
            del raw[pos : pos + fdp.ConsumeIntInRange(0, 16)]
    return PREFIX + b45encode(bytes(raw))


def _value(fdp: atheris.FuzzedDataProvider, key: int) -> Any:
    """Mostly a value of the claim's own type (so some payloads are accepted), else anything."""
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12))
    if kind == 1:
        return [None, True, False, 1.5, -0.0, []][fdp.ConsumeIntInRange(0, 5)]
    if kind == 2:
        return cbor2.CBORTag(fdp.ConsumeIntInRange(0, 300), fdp.ConsumeInt(4))
    if key in (ClaimKey.ISS, VenueClaim.PLACE):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300))
    if key == VenueClaim.ISSUE:
        return fdp.ConsumeIntInRange(-2, 2**54)
    return fdp.ConsumeIntInRange(-(2**64), 2**64)


def _signed_claims(fdp: atheris.FuzzedDataProvider) -> str:
    """A correctly signed envelope around fuzzed claims, or around arbitrary payload bytes."""
    key, kid = SIGNERS[0]
    if fdp.ConsumeBool():
        body = {k: _value(fdp, k) for k in CLAIM_KEYS if fdp.ConsumeIntInRange(0, 5)}
        try:
            payload = cbor2.dumps(body, canonical=fdp.ConsumeBool())
        except (ValueError, TypeError, cbor2.CBOREncodeError):
            return ""
    else:
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    return PREFIX + b45encode(sign_envelope(payload, key, kid))


def _round_trip(fdp: atheris.FuzzedDataProvider) -> None:
    key, kid = SIGNERS[fdp.ConsumeIntInRange(0, len(SIGNERS) - 1)]
    issued = fdp.ConsumeIntInRange(-(2**40), 2**40)
    claims = VenueClaims(
        issuer=fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 30)) or "x",
        place=fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(1, 200)) or "p",
        issue=fdp.ConsumeIntInRange(1, 2**53),
        issued_at=issued,
        expires_at=issued + fdp.ConsumeIntInRange(0, MAX_DAYS * DAY),
    )
    try:
        text = sign_venue(claims, key, kid)
    except ValueError:
        return  # a claim signing refuses (a place longer than its byte cap, a code too long)
    if (key, kid) != SIGNERS[0]:
        refused = _refusal(text)
        assert refused is not None, "a code signed by an untrusted key was accepted"
        assert refused.reason in {Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE}, refused
        return
    assert check(text) == claims, "signed claims did not come back unchanged"


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
        check(_signed_claims(fdp))
    else:
        _round_trip(fdp)


def main() -> None:
    assert check(PREFIX + b45encode(GENUINE_RAW[0])) == SAMPLE
    for raw in GENUINE_RAW[1:]:
        assert check(PREFIX + b45encode(raw)) is None
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
