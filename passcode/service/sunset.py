"""The sunset (the day the code is retired): destroy every citizen-linked record, keep the audit
log and counts that name no person, and hand back a report signed with the service's key.

It refuses unless the operator's confirmation repeats the deployment's name (a refusal is
audited, nothing else changes), and it picks the signing key before destroying anything, so a
deployment without a key cannot end up destroyed and unreported. Undrained scans are the
caller's to drain first (the CLI does) so that the counts kept include them; any left in the
stream are deleted with the rest of Redis.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from passcode.domain.clock import Clock, utc_now
from passcode.domain.sunsetreport import (
    MAX_JWKS_BYTES,
    ReportError,
    build_report,
    load_jwks,
    sign_report,
)
from passcode.errors import Forbidden
from passcode.store import sunset as store
from passcode.store.cache import Cache
from passcode.store.keyring import Keyring, NoSigningKey
from passcode.store.pg import Pool


class SunsetRefused(Forbidden):
    """The confirmation does not name this deployment: nothing was destroyed."""


@dataclass(frozen=True, slots=True)
class SunsetDone:
    report: dict[str, Any]
    signed: bytes  # the report file's bytes


def deployment_name(configured: str, database_url: str | None) -> str:
    """PASSCODE_DEPLOYMENT_NAME (``configured``), or else the name of the database."""
    if configured:
        return configured
    path = urlsplit(database_url or "").path.lstrip("/")
    return unquote(path) or "postgres"


async def confirm(
    pool: Pool,
    *,
    keyring: Keyring,
    deployment: str,
    confirmation: str | None,
    actor: str,
    clock: Clock,
    timeout: float,
) -> None:
    """Refuse (:class:`SunsetRefused`) unless ``confirmation`` is the deployment's name and a
    key can sign the report; a wrong or missing name is audited as denied."""
    if confirmation != deployment:
        await store.refuse(pool, actor=actor, given=confirmation, timeout=timeout)
        given = "none was given" if confirmation is None else f"{confirmation!r} was given"
        raise SunsetRefused(
            f"the sunset destroys every citizen record of deployment {deployment!r}: confirm"
            f" with --confirm-deployment {deployment} ({given}); nothing was changed"
        )
    try:
        keyring.signer(int(clock.now()))
    except NoSigningKey as exc:
        raise SunsetRefused(
            "no signing key to sign the sunset's report (passcode keys init): nothing was changed"
        ) from exc


async def sunset(
    pool: Pool,
    cache: Cache,
    *,
    keyring: Keyring,
    deployment: str,
    confirmation: str | None,
    issuer: str,
    actor: str,
    clock: Clock,
    timeout: float,
) -> SunsetDone:
    """:func:`confirm`, destroy (:func:`passcode.store.sunset.destroy_all`), and sign the
    report with the key signing passes now."""
    await confirm(
        pool,
        keyring=keyring,
        deployment=deployment,
        confirmation=confirmation,
        actor=actor,
        clock=clock,
        timeout=timeout,
    )
    started = utc_now(clock)
    signer = keyring.signer(int(started.timestamp()))
    destroyed = await store.destroy_all(
        pool, cache, at=started, actor=actor, deployment=deployment, timeout=timeout
    )
    report = build_report(
        deployment=deployment,
        issuer=issuer,
        started_at=started,
        finished_at=utc_now(clock),
        destroyed=destroyed.rows,
        redis_keys=destroyed.redis_keys,
        audit_rows=destroyed.audit_rows,
        scan_counts=destroyed.scan_counts,
    )
    return SunsetDone(report, sign_report(report, signer.private, signer.kid))


async def key_set(source: str, *, timeout: float) -> dict[bytes, Ed25519PublicKey]:
    """The Ed25519 keys of a JWK Set as ``/v1/keys`` serves it: fetched from an http(s) URL,
    or read from a file where it was saved; at most :data:`MAX_JWKS_BYTES` either way."""
    if source.startswith(("http://", "https://")):
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as session,
                session.get(source) as response,
            ):
                if response.status != 200:
                    raise ReportError(f"{source} answered {response.status}")
                raw = await response.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReportError(f"{source} could not be read: {type(exc).__name__}") from exc
    else:
        raw = await asyncio.to_thread(read_capped, Path(source), MAX_JWKS_BYTES)
    return load_jwks(raw)


def read_capped(path: Path, cap: int) -> bytes:
    """At most ``cap`` + 1 bytes of a file (one more, so the decoder sees it is too large)."""
    try:
        with path.open("rb") as handle:
            return handle.read(cap + 1)
    except OSError as exc:
        raise ReportError(f"{path}: {exc.strerror}") from exc


def keyring_keys(keyring: Keyring) -> dict[bytes, Ed25519PublicKey]:
    """Every key in the service's own key folder (retired ones too: files are kept)."""
    return {key.kid: key.public for key in keyring.keys}
