"""Unauthenticated endpoints: published keys, liveness, readiness, the OpenAPI document; the
ETag and caching every published document gets (:func:`cacheable`)."""

from __future__ import annotations

import base64
import hashlib
import json

from aiohttp import web

from passcode.api.responses import json_response, rfc3339
from passcode.keys import CACHE, DRAIN, KEYRING, OPENAPI, POOL, SETTINGS, SUPERVISOR
from passcode.service.health import probe_stores


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def get_keys(request: web.Request) -> web.Response:
    """A JWK Set of every key a verifier may meet now, cacheable with an ETag."""
    holder = request.app[KEYRING]
    now = int(request.app[SETTINGS].clock.now())
    published = holder.keyring.published(now, retire_after=holder.retire_after)
    body = {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(p.key.public_raw),
                "kid": _b64url(p.key.kid),
                "alg": "EdDSA",
                "use": "sig",
                "not_before": rfc3339(p.not_before),
                "not_after": rfc3339(p.not_after) if p.not_after is not None else None,
            }
            for p in published
        ]
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return cacheable(request, raw, max_age=min(60, request.app[SETTINGS].key_publish_lead // 4))


def cacheable(
    request: web.Request, raw: bytes, *, max_age: int, etag: str | None = None
) -> web.Response:
    """A published JSON document (``raw``) with an ETag (its hash, unless given) and public
    caching for ``max_age`` seconds; 304 with no body when If-None-Match holds the ETag."""
    if etag is None:
        etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=raw, content_type="application/json", headers=headers)


async def healthz(request: web.Request) -> web.Response:
    """The process is up and serving; says nothing of its dependencies."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready (200) when both PostgreSQL and Redis answer within their deadlines.

    ``tasks`` shows each background task under the supervisor; one that keeps failing makes
    the status ``degraded`` but the answer stays 200: taking the replica out of the balancer
    would not mend its task, and when every replica fails alike it would stop verify as well.
    ``dead_letters`` counts the scan entries this process's drain kept as dead letters.
    """
    checks = await probe_stores(
        request.app[POOL], request.app[CACHE], timeout=request.app[SETTINGS].pg_timeout
    )
    failed = sum(1 for v in checks.values() if v != "ok")
    supervisor = request.app[SUPERVISOR]
    status = "ok" if failed == 0 else "degraded" if failed == 1 else "unavailable"
    if status == "ok" and supervisor.failing():
        status = "degraded"
    body = {
        "status": status,
        "checks": checks,
        "tasks": supervisor.health(),
        "dead_letters": request.app[DRAIN].dead_lettered,
    }
    return json_response(body, status=200 if failed == 0 else 503)


async def get_openapi(request: web.Request) -> web.Response:
    """The document ``create_app`` built from the route table (this handler is an entry of it)."""
    return json_response(request.app[OPENAPI])
