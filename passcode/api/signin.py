"""``GET /v1/web-config``: what the pages need to sign a citizen in (passcode/web/common/auth.js).

Public and small: the provider's issuer, its authorization and token endpoints (from its
discovery document, or dev mode's own provider), the client id and the redirect URI.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from passcode.api import devidp
from passcode.api.operations import json_content, problem
from passcode.errors import ServiceUnavailable
from passcode.keys import DEV_IDP, SETTINGS, SIGN_IN
from passcode.service.oidc import ProviderUnavailable


async def web_config(request: web.Request) -> web.Response:
    """The sign-in settings of the pages; 503 while the provider's document is not loaded."""
    settings = request.app[SETTINGS]
    provider = request.app[SIGN_IN].provider
    if provider is not None:
        try:
            metadata = await provider.ensure_metadata()
        except ProviderUnavailable as exc:
            raise ServiceUnavailable(
                "the identity provider's discovery document could not be fetched", retry_after=5
            ) from exc
        authorize, token = metadata.authorization_endpoint, metadata.token_endpoint
    elif DEV_IDP in request.app:
        base = devidp.base_url(request)
        authorize, token = f"{base}/authorize", f"{base}/token"
    else:
        raise ServiceUnavailable(
            "sign-in is not configured: set PASSCODE_IDP_DISCOVERY_URL", retry_after=60
        )
    body = {
        "issuer": settings.idp_issuer,
        "authorization_endpoint": authorize,
        "token_endpoint": token,
        "client_id": settings.idp_audience,
        "redirect_uri": devidp.redirect_uris(request)[0],
    }
    return web.json_response(body, headers={"Cache-Control": "no-cache"})


OPERATION: dict[str, Any] = {
    "summary": "How the pages sign a citizen in: the identity provider's issuer and endpoints,"
    " the client id (the ID tokens' aud) and the redirect URI (the authorization code flow"
    " with PKCE S256)",
    "tags": ["public"],
    "responses": {
        "200": {"description": "The sign-in settings", "content": json_content("WebConfig")},
        "503": problem(
            "The identity provider's discovery document could not be fetched yet, or sign-in"
            " is not configured; see Retry-After"
        ),
    },
}
