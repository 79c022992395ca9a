"""The sunset's signed report: what was destroyed, what was kept, when, for which deployment.

The file is one JSON object ``{"report": {...}, "signature": {"alg": "EdDSA", "kid": <b64url>,
"sig": <b64url>}}``. The signature is Ed25519, by the service's pass-signing key, over the
report's canonical bytes: UTF-8 JSON with sorted keys and no insignificant whitespace (for the
report's content, integers and strings with ASCII keys, that is RFC 8785's JCS too), so anyone
holding the key's JWK from ``/v1/keys`` (saved on the day) can check it with any Ed25519 library.
Reading a report back caps its size and nesting before parsing, like every decoder of bytes
from outside.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "passcode-sunset-report/1"
MAX_REPORT_BYTES = 4 * 1024 * 1024  # years of daily counts per place type fit many times over
MAX_JWKS_BYTES = 256 * 1024
MAX_DEPTH = 8


class ReportError(ValueError):
    """A report or key set that cannot be read, or a signature that does not verify."""


@dataclass(frozen=True, slots=True)
class ScanCount:
    """Scans on one UTC day at places of one type: names no person, place or terminal."""

    day: str  # YYYY-MM-DD
    place_type: str
    scans: int


@dataclass(frozen=True, slots=True)
class Verified:
    report: dict[str, Any]
    kid: bytes


def build_report(
    *,
    deployment: str,
    issuer: str,
    started_at: datetime,
    finished_at: datetime,
    destroyed: Mapping[str, int],
    redis_keys: Mapping[str, int],
    audit_rows: int,
    scan_counts: list[ScanCount],
) -> dict[str, Any]:
    """The report's content; times are passed in (this module reads no clock)."""
    return {
        "format": FORMAT,
        "deployment": deployment,
        "issuer": issuer,
        "started_at": started_at.isoformat().replace("+00:00", "Z"),
        "finished_at": finished_at.isoformat().replace("+00:00", "Z"),
        "destroyed": {
            "postgres_rows": dict(sorted(destroyed.items())),
            "redis_keys": dict(sorted(redis_keys.items())),
        },
        "kept": {
            "audit_log_rows": audit_rows,
            "scan_counts": [
                {"day": c.day, "place_type": c.place_type, "scans": c.scans} for c in scan_counts
            ],
        },
    }


def canonical(report: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers."""
    return json.dumps(
        report, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 128:
        raise ReportError(f"{what} is not base64url text")
    standard = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReportError(f"{what} is not base64url") from exc


def sign_report(report: Mapping[str, Any], key: Ed25519PrivateKey, kid: bytes) -> bytes:
    """The report file's bytes: the report and its signature, indented for people to read."""
    signature = key.sign(canonical(report))
    document = {
        "report": report,
        "signature": {"alg": "EdDSA", "kid": _b64url(kid), "sig": _b64url(signature)},
    }
    return (json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def _depth(value: object, limit: int) -> int:
    if limit < 0:
        raise ReportError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _parse(raw: bytes, cap: int, what: str) -> Any:
    if len(raw) > cap:
        raise ReportError(f"{what} is larger than {cap} bytes")
    try:
        # A deeply nested text makes json recurse until RecursionError: refused as not JSON.
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ReportError(f"{what} is not UTF-8 JSON") from exc
    _depth(value, MAX_DEPTH)
    return value


def _no_constant(name: str) -> None:
    raise ReportError(f"{name} is not JSON")


def load_jwks(raw: bytes) -> dict[bytes, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set as ``/v1/keys`` serves it, by kid; other keys skipped."""
    document = _parse(raw, MAX_JWKS_BYTES, "the key set")
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ReportError('the key set has no "keys" list')
    found: dict[bytes, Ed25519PublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = _unb64url(jwk.get("x"), "a key's x")
        if len(x) != 32:
            raise ReportError("a key's x is not 32 bytes")
        found[_unb64url(jwk.get("kid"), "a key's kid")] = Ed25519PublicKey.from_public_bytes(x)
    return found


def verify_report(raw: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> Verified:
    """The report, when its signature verifies under the key its kid names in ``keys``."""
    document = _parse(raw, MAX_REPORT_BYTES, "the report")
    if not isinstance(document, dict) or set(document) != {"report", "signature"}:
        raise ReportError('a report file holds exactly "report" and "signature"')
    report, signature = document["report"], document["signature"]
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ReportError(f"not a {FORMAT} report")
    if not isinstance(signature, dict) or signature.get("alg") != "EdDSA":
        raise ReportError("the signature is not EdDSA")
    kid = _unb64url(signature.get("kid"), "the signature's kid")
    sig = _unb64url(signature.get("sig"), "the signature")
    if len(sig) != 64:
        raise ReportError("the signature is not 64 bytes: not Ed25519")
    key = keys.get(kid)
    if key is None:
        raise ReportError(f"no key {kid.hex()} among the keys given: cannot verify")
    try:
        key.verify(sig, canonical(report))
    except InvalidSignature as exc:
        raise ReportError("the signature does not match the report: it was changed") from exc
    return Verified(report, kid)


def summary(report: Mapping[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    destroyed = report["destroyed"]
    kept = report["kept"]
    lines = [
        f"sunset of deployment {report['deployment']!r} ({report['issuer']})",
        f"  from {report['started_at']} to {report['finished_at']}",
        "  destroyed in PostgreSQL:",
        *(f"    {name}: {n}" for name, n in destroyed["postgres_rows"].items()),
        "  destroyed in Redis:",
        *(f"    {name} keys: {n}" for name, n in destroyed["redis_keys"].items()),
        f"  kept: {kept['audit_log_rows']} audit log entries, scan counts per day and place type:",
        *(f"    {c['day']} {c['place_type']}: {c['scans']}" for c in kept["scan_counts"]),
    ]
    if not kept["scan_counts"]:
        lines.append("    (no scans)")
    return lines
