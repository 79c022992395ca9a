"""The pure checks of sign-in (passcode.domain.identity): the discovery document, PKCE S256, a
fetched JWK Set with keys the service cannot use, and the verifier's key replacement."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from passcode.domain.identity import (
    MAX_DOCUMENT_BYTES,
    IdentityError,
    IdentityKeyError,
    IdTokenVerifier,
    UnknownKeyError,
    load_jwks,
    parse_discovery,
    pkce_matches,
    s256_challenge,
)
from tests.identity_tokens import AUDIENCE, ISSUER, good_token, make_providers

OP = "https://idp.city.example"


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "issuer": OP,
        "jwks_uri": f"{OP}/jwks",
        "authorization_endpoint": f"{OP}/auth",
        "token_endpoint": f"{OP}/token",
        "end_session_endpoint": f"{OP}/logout",
        "response_types_supported": ["code", "id_token"],
        "code_challenge_methods_supported": ["S256"],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_a_provider_document_gives_its_endpoints() -> None:
    """The endpoints of a document whose issuer is the configured one; loopback http is
    accepted (the tests' provider, dev mode's own)."""
    metadata = parse_discovery(json.dumps(_document()), issuer=OP)
    assert (metadata.jwks_uri, metadata.token_endpoint) == (f"{OP}/jwks", f"{OP}/token")
    assert metadata.end_session_endpoint == f"{OP}/logout"
    local = "http://127.0.0.1:3999"
    loopback = _document(
        issuer=local,
        jwks_uri=f"{local}/jwks",
        authorization_endpoint="http://localhost:3999/auth",
        token_endpoint="http://[::1]:3999/token",
        end_session_endpoint=None,
    )
    assert parse_discovery(json.dumps(loopback), issuer=local).end_session_endpoint is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"issuer": "https://other.example"}, "issuer"),
        ({"issuer": OP + "/"}, "issuer"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"code_challenge_methods_supported": None}, "S256"),
        ({"response_types_supported": ["id_token"]}, "code flow"),
        ({"jwks_uri": "http://idp.city.example/jwks"}, "https"),
        ({"token_endpoint": "/token"}, "absolute"),
        ({"authorization_endpoint": None}, "missing"),
        ({"jwks_uri": ["https://a"]}, "missing"),
        ({"token_endpoint": "https://user:pw@idp.city.example/token"}, "absolute"),
        ({"jwks_uri": "file:///etc/passwd"}, "absolute"),
        ({"jwks_uri": "ftp://idp.city.example/jwks"}, "https"),
    ],
)
def test_a_document_that_cannot_be_trusted_is_refused(changes: dict[str, Any], reason: str) -> None:
    """Another issuer (exactly: a trailing slash is another), no S256, no code flow, plain
    http off loopback, relative or credentialed URLs, missing endpoints: each names its reason."""
    with pytest.raises(IdentityKeyError, match=reason):
        parse_discovery(json.dumps(_document(**changes)), issuer=OP)


def test_hostile_documents_are_refused_as_documents() -> None:
    """Not JSON, a JSON list, 10,000 nested arrays, and a document above the size cap are each an
    IdentityKeyError, never another exception."""
    for raw in (b"\xff{", b"[]", b"[" * 10_000 + b"]" * 10_000, b" " * (MAX_DOCUMENT_BYTES + 1)):
        with pytest.raises(IdentityKeyError):
            parse_discovery(raw, issuer=OP)


def test_pkce_s256_matches_rfc_7636_appendix_b() -> None:
    """The RFC's example verifier gives its challenge; another verifier, one too short, one
    with characters outside the unreserved set, or with a trailing newline does not match."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert s256_challenge(verifier) == challenge
    assert pkce_matches(verifier, challenge)
    assert not pkce_matches(verifier[:-1] + "l", challenge)
    assert not pkce_matches("short", s256_challenge("short"))
    assert not pkce_matches("é" * 43, challenge)
    assert not pkce_matches(verifier + "\n", challenge)


def test_a_fetched_set_skips_keys_the_service_cannot_use() -> None:
    """With skip_unusable, a symmetric key and a 1024-bit RSA key beside a P-256 one leave the
    P-256 key; strict loading refuses the set; a set of unusable keys only is refused either
    way, and so is one of more than 100 keys."""
    providers = make_providers()
    weak = {
        "kty": "RSA",
        "kid": "weak",
        "n": "sXch" + "A" * 167,
        "e": "AQAB",
    }
    keys = [{"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}, weak, providers["p256"].jwk]
    text = json.dumps({"keys": keys})
    assert set(load_jwks(text, skip_unusable=True)) == {"p256"}
    with pytest.raises(IdentityKeyError):
        load_jwks(text)
    with pytest.raises(IdentityKeyError, match="no usable"):
        load_jwks(json.dumps({"keys": keys[:2]}), skip_unusable=True)
    with pytest.raises(IdentityKeyError, match="at most"):
        load_jwks(json.dumps({"keys": [providers["ed"].jwk] * 101}), skip_unusable=True)


def test_replacing_keys_names_unknown_kids_and_forgets_withdrawn_ones() -> None:
    """A token of a kid the verifier lacks is UnknownKeyError carrying the kid; once the key
    is added it verifies; once the key is withdrawn, the token remembered as verified is
    refused again (as an unknown kid)."""
    providers = make_providers()
    verifier = IdTokenVerifier(
        {"ed": providers["ed"].public}, issuer=ISSUER, audience=AUDIENCE, leeway=30
    )
    token = good_token(providers["p256"])
    now = time.time()
    with pytest.raises(UnknownKeyError) as refused:
        verifier.verify(token, now=now)
    assert refused.value.kid == "p256"
    verifier.replace_keys({"ed": providers["ed"].public, "p256": providers["p256"].public})
    assert verifier.verify(token, now=now).user_id == "hostile-user"
    verifier.replace_keys({"ed": providers["ed"].public})
    with pytest.raises(IdentityError):
        verifier.verify(token, now=now)
