"""ID tokens of any kind and algorithm: a citizen, or IdentityError, never another exception.

Against each kind of identity-provider key the service supports (the Ed25519 dev key; EC
P-256/384/521 and RSA keys from a JWK Set), every JWS algorithm family (EdDSA, ES*, RS*, PS*,
HS* keyed with the public key, ``none``) and garbage of every shape.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from passcode.domain.identity import (
    IdentityError,
    IdentityKeyError,
    IdpKey,
    IdTokenVerifier,
    idp_key,
    load_jwks,
    verify_id_token,
)
from tests.identity_tokens import (
    AUDIENCE,
    ISSUER,
    Provider,
    good_token,
    hostile_claims,
    hostile_tokens,
    jwks_text,
    make_providers,
)

PROVIDERS = make_providers()


def _keys() -> dict[str, IdpKey]:
    """The providers as the service loads them: from a JWK Set, plus the dev key as a bare key."""
    keys = load_jwks(jwks_text({k: p for k, p in PROVIDERS.items() if k != "ed"}))
    keys["ed"] = idp_key(PROVIDERS["ed"].public)
    return keys


KEYS = _keys()


def _verify(token: str, *, now: float | None = None) -> object:
    at = time.time() if now is None else now
    return verify_id_token(token, KEYS, issuer=ISSUER, audience=AUDIENCE, leeway=30, now=at)


@pytest.mark.parametrize("provider", PROVIDERS.values(), ids=list(PROVIDERS))
def test_each_kind_of_provider_key_verifies_its_own_tokens(provider: Provider) -> None:
    """Control: a token signed by the provider with its algorithm names the citizen."""
    citizen = _verify(good_token(provider))
    assert getattr(citizen, "user_id", None) == "hostile-user"


@pytest.mark.parametrize("provider", PROVIDERS.values(), ids=list(PROVIDERS))
def test_hostile_tokens_are_identity_errors_for_every_kind_of_key(provider: Provider) -> None:
    """Every token of :func:`hostile_tokens` naming this provider's kid is an IdentityError
    (on main as filed, an ES256 or RS256 header naming the Ed25519 key raised TypeError)."""
    escaped = {}
    for name, token in hostile_tokens(provider, PROVIDERS).items():
        try:
            _verify(token)
        except IdentityError:
            continue
        except Exception as exc:  # the point: which ones escape, and as what
            escaped[name] = repr(exc)[:120]
        else:
            escaped[name] = "accepted"
    assert not escaped, escaped


@pytest.mark.parametrize("provider", PROVIDERS.values(), ids=list(PROVIDERS))
def test_hostile_claims_signed_by_the_provider_are_identity_errors(provider: Provider) -> None:
    """Claims a provider's own signature cannot make acceptable (infinite or NaN times, wrong
    types, empty or huge subjects) are IdentityErrors too, through the caching verifier."""
    verifier = IdTokenVerifier(KEYS, issuer=ISSUER, audience=AUDIENCE, leeway=30)
    escaped = {}
    for name, token in hostile_claims(provider).items():
        try:
            verifier.verify(token, now=time.time())
        except IdentityError:
            continue
        except Exception as exc:  # the point: which ones escape, and as what
            escaped[name] = repr(exc)[:120]
        else:
            escaped[name] = "accepted"
    assert not escaped, escaped


def test_a_tokens_times_are_judged_by_the_callers_clock_within_the_leeway() -> None:
    """exp, iat and nbf are checked against the ``now`` given (the service's injected clock),
    not the wall clock: a token good now is refused at a now past its exp (plus leeway) or
    before its iat or nbf (less leeway), and accepted just inside either boundary."""
    provider = PROVIDERS["ed"]
    now = int(time.time())
    token = good_token(provider, iat=now, nbf=now, exp=now + 600)
    assert getattr(_verify(token, now=now + 629), "user_id", None) == "hostile-user"
    assert getattr(_verify(token, now=now - 30), "user_id", None) == "hostile-user"
    for refused_at in (now + 630, now + 86_400, now - 31, now - 86_400):
        with pytest.raises(IdentityError):
            _verify(token, now=refused_at)
    past = good_token(provider, iat=now - 7200, exp=now - 3600)
    assert getattr(_verify(past, now=now - 5000), "user_id", None) == "hostile-user"


def test_the_caching_verifier_refuses_a_remembered_token_once_its_clock_passes_exp() -> None:
    verifier = IdTokenVerifier(KEYS, issuer=ISSUER, audience=AUDIENCE, leeway=30)
    now = int(time.time())
    token = good_token(PROVIDERS["ed"], iat=now, exp=now + 60)
    assert verifier.verify(token, now=now).user_id == "hostile-user"
    with pytest.raises(IdentityError):
        verifier.verify(token, now=now + 91)


def test_an_ed25519_key_accepts_only_eddsa_an_ec_key_only_its_curve_rsa_rs_and_ps() -> None:
    """The algorithms come from the key's kind (and the JWK's ``alg``, when it names one)."""
    assert KEYS["ed"].algorithms == {"EdDSA"}
    assert KEYS["p256"].algorithms == {"ES256"}
    assert KEYS["p384"].algorithms == {"ES384"}
    assert KEYS["p521"].algorithms == {"ES512"}
    assert KEYS["rsa"].algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert KEYS["rsa-ps"].algorithms == {"PS256"}


@pytest.mark.parametrize(
    ("document", "fault"),
    [
        ("not json", "not a JWK Set"),
        ('{"keys": 1}', "not a JWK Set"),
        ("[]", "not a JWK Set"),
        ('{"keys": [1]}', "not an object"),
        ('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}', "'s'"),
        ('{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e"}]}', "'e'"),
        ('{"keys": [{"kty": "nope", "kid": "n"}]}', "'n'"),
    ],
)
def test_an_unusable_jwk_set_is_refused_at_load_naming_the_key(document: str, fault: str) -> None:
    """Symmetric keys (an identity provider publishes public keys), broken JWKs and documents
    that are not JWK Sets are IdentityKeyErrors at start-up, not 401s for every citizen later."""
    with pytest.raises(IdentityKeyError, match=fault):
        load_jwks(document)


def test_a_jwk_whose_alg_does_not_fit_its_key_or_a_weak_rsa_key_is_refused() -> None:
    """``alg: RS256`` on an EC key, and RSA below 2048 bits, are refused; ``use: enc`` keys are
    left out rather than trusted for signatures."""
    ec_jwk = dict(PROVIDERS["p256"].jwk, alg="RS256")
    with pytest.raises(IdentityKeyError):
        load_jwks(json.dumps({"keys": [ec_jwk]}))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505  # the point
    with pytest.raises(IdentityKeyError, match="1024 bits"):
        idp_key(weak.public_key())
    with pytest.raises(IdentityKeyError, match="unsupported"):
        idp_key(ec.generate_private_key(ec.SECP256K1()).public_key())
    enc = dict(PROVIDERS["rsa"].jwk, use="enc")
    assert load_jwks(json.dumps({"keys": [enc]})) == {}
