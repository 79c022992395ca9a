"""Dev mode's identity provider: the authorization code flow with PKCE, as a real one runs it.

It stands in for the city's provider (统一身份认证) on a developer's machine and in the tests:
an authorization request is checked (client id, a redirect URI from the configured list, PKCE
S256, state and nonce), the login form's user id and name become a single-use code that lives
``code_ttl`` seconds, and the code, with the PKCE verifier, becomes an ID token signed by the
dev identity key (the key ``passcode dev-token`` signs with: both name the same subject).

The codes live in this process (dev mode serves one worker): a code made by one process is
unknown to another.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from passcode.domain import fields
from passcode.domain.clock import Clock
from passcode.domain.expiring import ExpiringCache
from passcode.domain.identity import mint_dev_token, pkce_matches, valid_pkce_challenge

MAX_PARAM = 512  # characters of one parameter (state, nonce, a redirect URI)
MAX_NAME = 64  # characters of the display name typed into the login form
SCOPES = frozenset({"openid", "profile"})


class OAuthError(Exception):
    """An OAuth 2.0 error (RFC 6749 §4.1.2.1, §5.2): ``error`` is its code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """What the login form carries through to the code: the checked request parameters."""

    client_id: str
    redirect_uri: str
    state: str
    nonce: str
    code_challenge: str
    scope: str

    def form_fields(self) -> dict[str, str]:
        """The hidden fields of the login form that repeat this request."""
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
            "scope": self.scope,
        }


@dataclass(frozen=True, slots=True)
class _Grant:
    request: AuthorizationRequest
    user_id: str
    name: str


def _text(params: Mapping[str, str], name: str, *, required: bool = True) -> str:
    value = params.get(name, "")
    if required and not value:
        raise OAuthError("invalid_request", f"{name} is required")
    if len(value) > MAX_PARAM or not value.isprintable():
        raise OAuthError("invalid_request", f"{name} is not a short printable text")
    return value


class DevIdentityProvider:
    """The dev provider's state (its codes) and its rules; the HTTP shape is in api.devidp."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        kid: str,
        issuer: str,
        client_id: str,
        clock: Clock,
        code_ttl: int = 60,
        token_ttl: int = 3600,
        max_codes: int = 10_000,
    ) -> None:
        self.key = key
        self.kid = kid
        self.issuer = issuer
        self.client_id = client_id
        self.clock = clock
        self.code_ttl = code_ttl
        self.token_ttl = token_ttl
        self._codes: ExpiringCache[str, _Grant] = ExpiringCache(max_codes)

    def authorization_request(
        self, params: Mapping[str, str], redirect_uris: Sequence[str]
    ) -> AuthorizationRequest:
        """The request checked, else OAuthError. A wrong client id or redirect URI must never
        be redirected to (the page would hand a code to whoever named it), so the caller shows
        these errors itself rather than sending them to the redirect URI."""
        client_id = _text(params, "client_id")
        if client_id != self.client_id:
            raise OAuthError("unauthorized_client", "unknown client_id")
        redirect_uri = _text(params, "redirect_uri")
        if redirect_uri not in redirect_uris:
            raise OAuthError("invalid_request", "redirect_uri is not one registered for the client")
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "only response_type=code is offered")
        scope = _text(params, "scope")
        if "openid" not in scope.split() or not set(scope.split()) <= SCOPES:
            raise OAuthError("invalid_scope", "scope must be openid, optionally with profile")
        if params.get("code_challenge_method") != "S256":
            raise OAuthError("invalid_request", "PKCE is required, code_challenge_method S256")
        challenge = _text(params, "code_challenge")
        if not valid_pkce_challenge(challenge):
            raise OAuthError("invalid_request", "code_challenge is not an S256 challenge")
        return AuthorizationRequest(
            client_id=client_id,
            redirect_uri=redirect_uri,
            state=_text(params, "state"),
            nonce=_text(params, "nonce"),
            code_challenge=challenge,
            scope=scope,
        )

    def sign_in(self, request: AuthorizationRequest, *, user_id: str, name: str) -> str:
        """A fresh single-use code for the user the login form named, else OAuthError."""
        try:
            fields.user_id(user_id)
        except fields.FieldError as exc:
            raise OAuthError("invalid_request", f"user id {exc}") from exc
        name = name.strip()
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise OAuthError("invalid_request", f"the name must be 1 to {MAX_NAME} characters")
        code = secrets.token_urlsafe(32)
        now = self.clock.now()
        self._codes.put(
            code, _Grant(request, user_id, name), expires_at=now + self.code_ttl, now=now
        )
        return code

    def exchange(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token response for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.6),
        else OAuthError. The code is spent by this call whatever its outcome: a guessed
        verifier gets one try, and a replayed code nothing."""
        if form.get("grant_type") != "authorization_code":
            raise OAuthError("unsupported_grant_type", "only authorization_code is offered")
        code = _text(form, "code")
        now = self.clock.now()
        grant = self._codes.get(code, now=now)
        self._codes.discard(code)
        if grant is None:
            raise OAuthError("invalid_grant", "the code is unknown, used or expired")
        request = grant.request
        if form.get("client_id") != request.client_id:
            raise OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization's")
        if not pkce_matches(form.get("code_verifier", ""), request.code_challenge):
            raise OAuthError("invalid_grant", "the PKCE code_verifier does not match")
        id_token = mint_dev_token(
            self.key,
            kid=self.kid,
            issuer=self.issuer,
            audience=request.client_id,
            user_id=grant.user_id,
            name=grant.name,
            now=int(now),
            ttl=self.token_ttl,
            nonce=request.nonce,
        )
        return {
            # An OAuth token response must carry an access token; this one grants nothing
            # (the service reads the ID token alone).
            "access_token": secrets.token_urlsafe(32),
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": request.scope,
            "id_token": id_token,
        }

    def jwks(self) -> dict[str, Any]:
        """The provider's JWK Set: the dev identity key's public half."""
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": x,
                    "kid": self.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }

    def metadata(self, base: str) -> dict[str, Any]:
        """The discovery document, its endpoints under ``base`` (the origin it is served on
        and ``/dev-idp``)."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": sorted(SCOPES),
            "claims_supported": ["iss", "aud", "sub", "name", "iat", "exp", "nonce"],
        }
