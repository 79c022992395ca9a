"""The trust store over HTTP: operators import and remove foreign signers; ``GET /v1/trust``
publishes them for offline terminals (cacheable, like ``GET /v1/keys``)."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from passcode.api.auth import actor_of
from passcode.api.body import check, read_json
from passcode.api.public import cacheable
from passcode.api.responses import json_response
from passcode.api.schemas import ISSUER_URL, TRUST_SHC_REQUEST, compile_schema
from passcode.domain import fields
from passcode.errors import NotFound, ValidationFailed
from passcode.keys import SETTINGS, TRUST
from passcode.service.trust import b64, dcc_from_json, parse_kid

# The document's TRUST_DCC_REQUEST (anyOf two shapes) would answer a bad certificate with
# "cannot be validated by any definition"; the service's checks name the entry instead.
_validate_dcc = compile_schema({"type": ["array", "object"]})
_validate_shc = compile_schema(TRUST_SHC_REQUEST)
_ISSUER = re.compile(ISSUER_URL["pattern"])  # the import's rule, for ?iss= too
MAX_AGE = 60  # s a terminal may keep the document before asking again (If-None-Match)


def _issuer_name(value: str) -> str:
    return fields.line(value, max_length=fields.MAX_PLACE)


async def get_trust(request: web.Request) -> web.Response:
    """This replica's trust store as published (built at its last reload)."""
    published = request.app[TRUST].published
    return cacheable(request, published.body, max_age=MAX_AGE, etag=published.etag)


async def post_dcc(request: web.Request) -> web.Response:
    """Import DCC document signers (either format); ``replace=true``: trust only them."""
    actor = actor_of(request)
    replace = request.query.get("replace", "false")
    if replace not in {"true", "false"}:
        raise ValidationFailed("replace must be true or false", errors=["replace"])
    data = await read_json(
        request, limit=request.app[SETTINGS].max_trust_body, validate=_validate_dcc, stream=True
    )
    source, signers = await asyncio.to_thread(dcc_from_json, data)
    written = await request.app[TRUST].import_dcc(
        signers, source, actor=actor.name, replace=replace == "true"
    )
    kids = sorted({b64(s.kid) for s in signers})
    return json_response(
        {
            "version": written.version,
            "source": source.value,
            "certificates": len(kids),
            "added": written.added,
            "updated": written.updated,
            "removed": written.removed,
            "kids": kids,
        }
    )


async def post_shc(request: web.Request) -> web.Response:
    """Import (or replace) an SHC issuer: its JWKS and CRLs."""
    actor = actor_of(request)
    data = await read_json(
        request, limit=request.app[SETTINGS].max_trust_body, validate=_validate_shc, stream=True
    )
    name = data.get("name")
    imported = await request.app[TRUST].import_shc(
        data["iss"],
        data["jwks"],
        data.get("crls", []),
        actor=actor.name,
        name=None if name is None else check(_issuer_name, name, "name"),
    )
    return json_response(
        {
            "version": imported.version,
            "iss": data["iss"],
            "new": imported.new,
            "keys": imported.keys,
            "crls": imported.crls,
        }
    )


async def delete_dcc(request: web.Request) -> web.Response:
    """Stop trusting one signer (its kid in base64 or base64url): 204, or 404."""
    kid = parse_kid(request.match_info["kid"])
    if not await request.app[TRUST].remove_dcc(kid, actor=actor_of(request).name):
        raise NotFound(f"no DCC signer with kid {b64(kid)}")
    return web.Response(status=204)


async def delete_shc(request: web.Request) -> web.Response:
    """Stop trusting one issuer (``?iss=``): 204, or 404."""
    iss = request.query.get("iss")
    if not iss:
        raise ValidationFailed("iss is required", errors=["iss"])
    if len(iss) > ISSUER_URL["maxLength"] or not _ISSUER.match(iss):
        raise ValidationFailed("iss must be an https URL without a trailing slash", errors=["iss"])
    if not await request.app[TRUST].remove_shc(iss, actor=actor_of(request).name):
        raise NotFound("no SMART Health Card issuer with that iss")
    return web.Response(status=204)
