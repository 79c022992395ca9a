"""The pages the service serves itself: the citizen page (``/app/``), the modules and message
catalogues pages share (``/common/``, ``/i18n/``), the API reference (``/docs``: Swagger UI from
npm reading ``/openapi.json``) and the npm files the pages load (``/vendor/``).

Every answer, a 404 included, carries the same strict headers (:func:`page_headers`): a
Content-Security-Policy with no ``'unsafe-inline'`` anywhere (the pages hold no inline script or
style: their code is ES modules, Swagger UI is started by an external initializer), framing
refused, no MIME sniffing, no referrer. The citizen API takes bearer tokens in the
``Authorization`` header and never reads a cookie, so no other site can make a browser send a
state-changing request with the citizen's credential (CSRF-safe without tokens of its own).

A file is served only when its name is one plain segment (no ``/``, no leading dot) of a known
type found in its folder, or a name of :data:`VENDOR`: a request never names a path by itself.
Files are read once (off the event loop) and kept with their gzip form and ETag; a changed file
(its size or mtime) is read again, so editing a page needs no restart.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from passcode.api.operations import operation
from passcode.api.problems import problem_response
from passcode.config import Settings
from passcode.errors import NotFound
from passcode.keys import SETTINGS

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# `make install` runs `npm ci` at the repository root, beside the package's source tree.
DEFAULT_NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TEXT = "; charset=utf-8"
TYPES: Mapping[str, str] = MappingProxyType(
    {
        ".html": "text/html" + _TEXT,
        ".js": "text/javascript" + _TEXT,
        ".mjs": "text/javascript" + _TEXT,
        ".css": "text/css" + _TEXT,
        ".json": "application/json" + _TEXT,
        ".svg": "image/svg+xml",
        ".png": "image/png",
    }
)
MEDIA_TYPES = tuple(sorted({t.split(";")[0] for t in TYPES.values()}))

# The npm files the pages load, by the name they are served under: (package, file in it).
VENDOR: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "uqr.mjs": ("uqr", "dist/index.mjs"),  # the citizen page draws its QR with it
        "jsqr.js": ("jsqr", "dist/jsQR.js"),  # a QR decoder for the scanning pages
        "swagger-ui.css": ("swagger-ui-dist", "swagger-ui.css"),
        "swagger-ui-bundle.js": ("swagger-ui-dist", "swagger-ui-bundle.js"),
    }
)

_GZIP_ABOVE = 1024  # bytes: smaller files gain less than the header costs


@dataclass(frozen=True, slots=True)
class Asset:
    """A file as served: its bytes, their gzip form (``None``: not worth it), ETag and type."""

    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str


@functools.lru_cache(maxsize=128)
def _read(path: Path, content_type: str, size: int, mtime_ns: int) -> Asset:
    """``path`` read and compressed; cached by size and mtime, so a changed file is read again."""
    body = path.read_bytes()
    compressible = not content_type.startswith("image/png")
    gzipped = gzip.compress(body, 9, mtime=0) if compressible and size > _GZIP_ABOVE else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, gzipped, etag, content_type)


def _stat_and_read(path: Path, content_type: str) -> Asset | None:
    try:
        found = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode):
        return None
    return _read(path, content_type, found.st_size, found.st_mtime_ns)


async def _load(path: Path) -> Asset | None:
    """The asset at ``path``, or ``None`` when it is not a file of a served type."""
    content_type = TYPES.get(path.suffix)
    if content_type is None:
        return None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, _stat_and_read, path, content_type)


def _origin(url: str) -> str | None:
    """The origin (scheme://host[:port]) of an http(s) URL, else ``None``."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc or "@" in parts.netloc:
        return None
    if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", parts.netloc):
        return None
    return f"{parts.scheme}://{parts.netloc}"


@functools.cache
def content_security_policy(idp_issuer: str, *, trusted_types: bool) -> str:
    """The policy of every page. The identity provider's origin (its issuer, when that is a URL)
    is the one other place the pages may call (the token endpoint of the sign-in) and submit a
    form to; ``trusted_types`` also forbids handing strings to the DOM's HTML sinks."""
    idp = _origin(idp_issuer)
    extra = f" {idp}" if idp is not None else ""
    policy = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # data: for Swagger UI's CSS icons; blob: for images a page draws itself
        "img-src 'self' data: blob:",
        f"connect-src 'self'{extra}",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        f"form-action 'self'{extra}",
        "frame-ancestors 'none'",
        "worker-src 'self'",
        "manifest-src 'self'",
    ]
    if trusted_types:
        policy += ["require-trusted-types-for 'script'", "trusted-types 'none'"]
    return "; ".join(policy)


def page_headers(settings: Settings, *, trusted_types: bool = False) -> dict[str, str]:
    """The security headers every page answer carries."""
    return {
        "Content-Security-Policy": content_security_policy(
            settings.idp_issuer, trusted_types=trusted_types
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
    }


def _accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


def _not_found(headers: dict[str, str], detail: str) -> web.Response:
    response = problem_response(NotFound(detail))
    response.headers.update(headers)
    return response


async def _serve(
    request: web.Request,
    path: Path | None,
    *,
    trusted_types: bool = False,
    missing: str = "no such page or file",
) -> web.Response:
    """``path`` with the page headers, 304 when If-None-Match holds its ETag, gzipped when the
    client takes it; a problem 404 (with the same headers) when there is no such file."""
    headers = page_headers(request.app[SETTINGS], trusted_types=trusted_types)
    asset = None if path is None else await _load(path)
    if asset is None:
        return _not_found(headers, missing)
    headers["ETag"] = asset.etag
    # Revalidated on every load: a new release is seen at once, an unchanged file costs a 304.
    headers["Cache-Control"] = "no-cache"
    headers["Vary"] = "Accept-Encoding"
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    body = asset.body
    if asset.gzipped is not None and _accepts_gzip(request):
        headers["Content-Encoding"] = "gzip"
        body = asset.gzipped
    return web.Response(body=body, headers=headers)


def _in(folder: str, name: str) -> Path | None:
    """``passcode/web/<folder>/<name>`` when ``name`` is one plain segment, else ``None``."""
    return WEB_DIR / folder / name if _NAME.match(name) else None


async def app_index(request: web.Request) -> web.Response:
    """The citizen page (sign in, declare, show the code)."""
    return await _serve(request, WEB_DIR / "app" / "index.html", trusted_types=True)


async def app_file(request: web.Request) -> web.Response:
    """A file of the citizen page: its modules, style sheet, icons."""
    return await _serve(request, _in("app", request.match_info["name"]), trusted_types=True)


async def scan_index(request: web.Request) -> web.Response:
    """The scanner page, for a phone or tablet at a door."""
    return await _serve(request, WEB_DIR / "scan" / "index.html")


async def scan_file(request: web.Request) -> web.Response:
    """A file of the scanner page."""
    return await _serve(request, _in("scan", request.match_info["name"]))


async def common_file(request: web.Request) -> web.Response:
    """A module the pages share (sign-in, messages, the clock, API calls)."""
    return await _serve(request, _in("common", request.match_info["name"]))


async def catalogue(request: web.Request) -> web.Response:
    """A message catalogue (``zh-CN.json``, ``en.json``)."""
    name = request.match_info["name"]
    path = _in("i18n", name) if name.endswith(".json") else None
    return await _serve(request, path, missing="no such message catalogue")


async def docs_index(request: web.Request) -> web.Response:
    """The API reference: Swagger UI reading /openapi.json."""
    return await _serve(request, WEB_DIR / "docs" / "index.html")


async def docs_file(request: web.Request) -> web.Response:
    """A file of the API reference page (its initializer)."""
    return await _serve(request, _in("docs", request.match_info["name"]))


def node_modules(settings: Settings) -> Path:
    """Where ``npm ci`` installed the packages of :data:`VENDOR`."""
    return settings.node_modules_dir or DEFAULT_NODE_MODULES


async def vendor_file(request: web.Request) -> web.Response:
    """A file of an npm package the pages load, by its name in :data:`VENDOR`."""
    entry = VENDOR.get(request.match_info["name"])
    if entry is None:
        return await _serve(request, None)
    package, file = entry
    path = node_modules(request.app[SETTINGS]) / package / file
    missing = f"npm package {package} is not installed (make install runs npm ci)"
    return await _serve(request, path, missing=missing)


def _required(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": schema}


PAGE_HEADERS_DOC: dict[str, Any] = {
    "Content-Security-Policy": _required(
        {"type": "string", "pattern": "frame-ancestors 'none'", "not": {"pattern": "unsafe-"}},
        "A strict policy: default-src 'self', no 'unsafe-inline' or 'unsafe-eval', no framing",
    ),
    "X-Content-Type-Options": _required({"const": "nosniff"}, "Always `nosniff`"),
    "X-Frame-Options": _required({"const": "DENY"}, "Always `DENY`"),
    "Referrer-Policy": _required({"const": "no-referrer"}, "Always `no-referrer`"),
    "ETag": _required({"type": "string"}, "The file's content hash"),
    "Cache-Control": _required({"const": "no-cache"}, "Always `no-cache` (revalidate)"),
}


def page_operation(summary: str, *media: str, named: bool = False) -> dict[str, Any]:
    """The OpenAPI operation of a page route: 200 in ``media`` (every served type when none is
    named), 304 on a matching If-None-Match, a problem 404; each with the page headers.
    ``named``: the route's path ends in a file's ``{name}``."""
    types = media or MEDIA_TYPES
    ok = {
        "200": {
            "description": "The file (gzip when Accept-Encoding allows)",
            "headers": PAGE_HEADERS_DOC,
            "content": {
                t: {"schema": {"type": "object" if t == "application/json" else "string"}}
                for t in types
            },
        },
        "304": {"description": "Not modified (If-None-Match)", "headers": PAGE_HEADERS_DOC},
    }
    extra = None
    if named:
        name = {"type": "string", "minLength": 1, "maxLength": 100}
        extra = {"parameters": [{"name": "name", "in": "path", "required": True, "schema": name}]}
    return operation(summary, ok=ok, errors=(404,), tag="pages", extra=extra)
