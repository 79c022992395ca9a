"""Dev mode's identity provider over HTTP, under ``/dev-idp/``: the endpoints a real OpenID
provider offers (discovery, a login page, the token endpoint, its keys), each 404 outside dev
mode. The flow's rules are :class:`passcode.service.devidp.DevIdentityProvider`'s.

The login page is plain HTML with no script and no inline style, served under a CSP that
allows neither; its form may post only here, and be redirected only to the registered
redirect URI's origin (Chromium applies ``form-action`` to the redirect after a post too).
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from passcode.api.operations import json_content, problem
from passcode.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType
from passcode.keys import DEV_IDP, SETTINGS
from passcode.service.devidp import AuthorizationRequest, DevIdentityProvider, OAuthError

PREFIX = "/dev-idp"
MAX_FORM = 8192  # bytes of a login or token form: a few short fields
FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _provider(request: web.Request) -> DevIdentityProvider:
    provider = request.app.get(DEV_IDP)
    if provider is None:
        raise NotFound("no such resource")  # not dev mode: as if the paths did not exist
    return provider


def base_url(request: web.Request) -> str:
    """The dev provider's URLs as this request reached them (dev mode only: a real provider
    has one configured issuer URL)."""
    return f"{request.url.origin()}{PREFIX}"


def redirect_uris(request: web.Request) -> tuple[str, ...]:
    """PASSCODE_IDP_REDIRECT_URIS, or else the citizen page on the origin of this request."""
    configured = request.app[SETTINGS].idp_redirect_uris
    return configured if configured else (f"{request.url.origin()}/app/",)


async def _form(request: web.Request) -> dict[str, str]:
    """An url-encoded form of at most MAX_FORM bytes, each field once (a parameter given twice
    is refused, RFC 6749 §3.1), as OAuthError invalid_request when not so."""
    if request.content_type != FORM:
        raise UnsupportedMediaType(f"send {FORM}")
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise PayloadTooLarge(f"a form of at most {MAX_FORM} bytes", limit=MAX_FORM)
    raw = await request.content.read(MAX_FORM + 1)
    if len(raw) > MAX_FORM:
        raise PayloadTooLarge(f"a form of at most {MAX_FORM} bytes", limit=MAX_FORM)
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, max_num_fields=32, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError("invalid_request", "the form is not url-encoded UTF-8") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"{name} is given twice")
        form[name] = value
    return form


def _query(request: web.Request) -> dict[str, str]:
    form: dict[str, str] = {}
    for name, value in request.query.items():
        if name in form:
            raise BadRequest(f"{name} is given twice")
        form[name] = value
    return form


def _bad(exc: OAuthError) -> BadRequest:
    return BadRequest(f"{exc.error}: {exc.description}")  # the detail starts with the code


async def discovery(request: web.Request) -> web.Response:
    """The OpenID Connect discovery document of dev mode's provider."""
    provider = _provider(request)
    return web.json_response(provider.metadata(base_url(request)))


async def jwks(request: web.Request) -> web.Response:
    """The dev provider's JWK Set."""
    return web.json_response(_provider(request).jwks())


async def authorize_page(request: web.Request) -> web.Response:
    """The login form for a checked authorization request; 400 for one that is not valid."""
    provider = _provider(request)
    try:
        checked = provider.authorization_request(_query(request), redirect_uris(request))
    except OAuthError as exc:
        raise _bad(exc) from exc
    return _page(checked, error=None)


async def authorize_submit(request: web.Request) -> web.Response:
    """The login form posted: 303 to the redirect URI with the code, state and issuer
    (RFC 9207); the form again with the error for a bad user id or name."""
    provider = _provider(request)
    try:
        form = await _form(request)
        checked = provider.authorization_request(form, redirect_uris(request))
    except OAuthError as exc:
        raise _bad(exc) from exc
    try:
        code = provider.sign_in(checked, user_id=form.get("user_id", ""), name=form.get("name", ""))
    except OAuthError as exc:
        return _page(checked, error=exc.description, status=400)
    separator = "&" if urlsplit(checked.redirect_uri).query else "?"
    query = urlencode({"code": code, "state": checked.state, "iss": provider.issuer})
    return web.Response(
        status=303, headers={"Location": f"{checked.redirect_uri}{separator}{query}", **_NO_STORE}
    )


async def token(request: web.Request) -> web.Response:
    """The token endpoint: an authorization code and its PKCE verifier for an ID token;
    errors in the OAuth 2.0 shape (RFC 6749 §5.2), which every OAuth client reads."""
    provider = _provider(request)
    try:
        body = provider.exchange(await _form(request))
    except OAuthError as exc:
        return web.json_response(
            {"error": exc.error, "error_description": exc.description},
            status=401 if exc.error == "invalid_client" else 400,
            headers=_NO_STORE,
        )
    return web.json_response(body, headers=_NO_STORE)


_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none';"
    " frame-ancestors 'none'; form-action 'self' {target}"
)


def _page(checked: AuthorizationRequest, *, error: str | None, status: int = 200) -> web.Response:
    """The login page: a user id and a display name, the request's parameters as hidden
    fields; bilingual labels, a ``lang`` on each language's text."""
    hidden = "\n".join(
        f'      <input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in checked.form_fields().items()
    )
    alert = (
        f'    <p role="alert" id="error">{html.escape(error)}</p>\n' if error is not None else ""
    )
    described = ' aria-describedby="error"' if error is not None else ""
    body = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Dev sign-in · 开发用统一身份认证</title>
</head>
<body>
  <main>
    <h1>Development sign-in <span lang="zh-CN">开发用统一身份认证</span></h1>
    <p>Dev mode only: any user id signs in, no password. <span lang="zh-CN">仅用于开发模式。</span></p>
{alert}    <form method="post" action="{PREFIX}/authorize">
{hidden}
      <p><label for="user_id">User id <span lang="zh-CN">用户标识</span></label><br>
      <input id="user_id" name="user_id" required maxlength="128" autocomplete="username"{described}></p>
      <p><label for="name">Display name <span lang="zh-CN">姓名</span></label><br>
      <input id="name" name="name" required maxlength="64" autocomplete="name"{described}></p>
      <p><button type="submit">Sign in <span lang="zh-CN">登录</span></button></p>
    </form>
  </main>
</body>
</html>
"""
    target = urlsplit(checked.redirect_uri)
    headers = {
        "Content-Security-Policy": _CSP.format(target=f"{target.scheme}://{target.netloc}"),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        **_NO_STORE,
    }
    return web.Response(text=body, content_type="text/html", status=status, headers=headers)


# The OpenAPI side: the operations of the route table's /dev-idp/ entries and their schemas.
_NOT_DEV = {"404": problem("Not dev mode: the dev identity provider does not exist")}
_HTML = {"text/html": {"schema": {"type": "string"}}}
_HTML_HEADERS = {
    "Content-Security-Policy": {
        "description": "No script, no inline style; the form posts here and to the redirect"
        " URI's origin only",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
}
_AUTHORIZE_PARAMS = [
    {"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
    for name in (
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    )
]
_FORM_BODY = {
    "required": True,
    "content": {FORM: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}},
}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "tags": ["dev-idp"],
        "responses": {**responses, **_NOT_DEV},
        **extra,
    }


OPERATIONS: dict[str, dict[str, Any]] = {
    "discovery": _op(
        "Dev mode's identity provider: its OpenID Connect discovery document",
        {"200": {"description": "Provider metadata", "content": json_content("DevIdpMetadata")}},
    ),
    "jwks": _op(
        "Dev mode's identity provider: its keys (the dev identity key, EdDSA)",
        {"200": {"description": "A JWK Set", "content": json_content("DevIdpKeySet")}},
    ),
    "authorize_page": _op(
        "Dev mode's identity provider: the login page of an authorization request (code flow,"
        " PKCE S256 required, redirect_uri one of PASSCODE_IDP_REDIRECT_URIS or else this"
        " origin's /app/)",
        {
            "200": {"description": "The login form", "content": _HTML, "headers": _HTML_HEADERS},
            "400": problem(
                "Not a valid authorization request (the detail starts with the OAuth error)"
            ),
        },
        parameters=_AUTHORIZE_PARAMS,
    ),
    "authorize_submit": _op(
        "Dev mode's identity provider: the login form posted; redirects with a code that is"
        " single-use and lives 60 s",
        {
            "303": {
                "description": "To the redirect URI with `code`, `state` and `iss`",
                "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
            },
            "400": {
                "description": "A bad request (problem) or user id or name (the form again)",
                "content": {**_HTML, **problem("")["content"]},
            },
            "413": problem("Form above 8 KiB"),
            "415": problem("Not an url-encoded form"),
        },
        requestBody=_FORM_BODY,
    ),
    "token": _op(
        "Dev mode's identity provider: an authorization code and its PKCE verifier for an ID"
        " token (iss, aud, sub, name, iat, exp, nonce)",
        {
            "200": {
                "description": "Tokens",
                "content": json_content("DevIdpTokens"),
                "headers": {"Cache-Control": {"required": True, "schema": {"const": "no-store"}}},
            },
            "400": {
                "description": "An OAuth error: invalid_grant (code unknown, used or expired;"
                " verifier or redirect_uri not the authorization's), invalid_request, ...",
                "content": json_content("OAuthError"),
            },
            "413": problem("Form above 8 KiB"),
            "415": problem("Not an url-encoded form"),
        },
        requestBody=_FORM_BODY,
    ),
}

_URL = {"type": "string", "format": "uri"}
SCHEMAS: dict[str, Any] = {
    "DevIdpMetadata": {
        "type": "object",
        "required": [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "code_challenge_methods_supported",
        ],
        "properties": {
            "issuer": {"type": "string"},
            "authorization_endpoint": _URL,
            "token_endpoint": _URL,
            "jwks_uri": _URL,
            "code_challenge_methods_supported": {"type": "array", "items": {"const": "S256"}},
        },
    },
    "DevIdpKeySet": {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["kty", "crv", "x", "kid", "alg"],
                    "properties": {
                        "kty": {"const": "OKP"},
                        "crv": {"const": "Ed25519"},
                        "x": {"type": "string"},
                        "kid": {"type": "string"},
                        "alg": {"const": "EdDSA"},
                        "use": {"const": "sig"},
                    },
                },
            }
        },
    },
    "DevIdpTokens": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "id_token"],
        "properties": {
            "access_token": {"type": "string", "description": "Grants nothing; required by OAuth"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
            "id_token": {"type": "string"},
        },
    },
    "OAuthError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "WebConfig": {
        "type": "object",
        "required": [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "client_id",
            "redirect_uri",
        ],
        "additionalProperties": False,
        "properties": {
            "issuer": {"type": "string", "description": "The ID tokens' iss"},
            "authorization_endpoint": _URL,
            "token_endpoint": _URL,
            "client_id": {"type": "string", "description": "Also the ID tokens' aud"},
            "redirect_uri": _URL,
        },
    },
}
