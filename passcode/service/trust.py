"""The trust store (DESIGN §1, §3): the foreign signers operators import, cached whole in every
replica and published for offline terminals.

:class:`TrustHolder` keeps ``current``, an immutable :class:`TrustStore` swapped whole when the
trust catalog changes (verify reads it without a lock), and ``published``, the ``GET
/v1/trust`` document built with it. Its reload is registered with the
:class:`~passcode.service.catalogs.CatalogWatcher`: the replica that makes a change reloads at
once, every other one at the watcher's next poll (about a second).

Imports are parsed by the readers' own functions (:mod:`passcode.domain.dcc`,
:mod:`passcode.domain.shc`); whatever they refuse is a :class:`ValidationFailed` (400) naming
what is wrong, and nothing is stored. The audit entries name kids, issuer URLs and counts,
never a certificate's contents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from passcode.domain import dcc, shc
from passcode.domain.foreign import EMPTY_TRUST, DccSigner, ForeignError, ShcIssuer, TrustStore
from passcode.errors import ValidationFailed
from passcode.service.catalogs import CatalogWatcher
from passcode.store import trust
from passcode.store.catalogs import Catalog
from passcode.store.pg import Pool
from passcode.store.trust import IssuerRow, SignerRow, SignersWritten, StoredTrust

# Re-exported store types appear in the api's and the CLI's signatures.
__all__ = [
    "IMPORT_DCC",
    "IMPORT_SHC",
    "REMOVE_DCC",
    "REMOVE_SHC",
    "Published",
    "ShcImported",
    "SignersWritten",
    "Source",
    "StoredTrust",
    "TrustHolder",
    "b64",
    "dcc_from_certificates",
    "dcc_from_json",
    "dcc_from_text",
    "parse_kid",
]

log = logging.getLogger(__name__)

IMPORT_DCC = "trust.import_dcc"
IMPORT_SHC = "trust.import_shc"
REMOVE_DCC = "trust.remove_dcc"
REMOVE_SHC = "trust.remove_shc"

MAX_SIGNERS = 20_000  # certificates in one import (the EU gateway lists about a thousand)
MAX_CRLS = 100  # revocation lists of one issuer (one per kid)
MAX_DER = 16_384  # bytes of one certificate (a DSC is about 1 KB; the table refuses more)

_Refused = (ValueError, ForeignError)  # what the readers raise for bad input


class Source(StrEnum):
    """How a DCC signer was imported (stored with it)."""

    TRUST_LIST = "trust-list"  # the EU gateway's trust-list JSON
    CERTIFICATES = "certificates"  # {"certificates": [<base64 DER>, …]}
    DER_LIST = "der-list"  # a plain list of base64 DER certificates


def b64(raw: bytes) -> str:
    """Standard base64 with padding: how DCC kids and certificates are usually written."""
    return base64.b64encode(raw).decode()


def parse_kid(text: str) -> bytes:
    """A DCC kid written in base64 or base64url, padded or not: its 8 bytes, else a 400."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        kid = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed("kid is not base64", errors=["kid"]) from exc
    if len(kid) != 8:
        raise ValidationFailed(f"kid is {len(kid)} bytes, not 8", errors=["kid"])
    return kid


def dcc_from_certificates(items: Sequence[object]) -> list[DccSigner]:
    """``{"certificates": [...]}``: each a base64 DER certificate (a 400 names the first bad
    one by its index)."""
    signers = []
    for index, item in enumerate(items):
        where = f"certificates[{index}]"
        if not isinstance(item, str):
            raise ValidationFailed(f"{where} is not a string", errors=[where])
        try:
            der = base64.b64decode("".join(item.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValidationFailed(f"{where} is not base64", errors=[where]) from exc
        try:
            signers.append(dcc.signer_from_der(der))
        except _Refused as exc:
            raise ValidationFailed(f"{where}: {exc}", errors=[where]) from exc
    return signers


def dcc_from_text(text: str) -> tuple[Source, list[DccSigner]]:
    """An import file in either format: JSON (the EU gateway's trust list, our
    ``{"certificates": [...]}`` or an array of base64 strings), else a plain list of base64
    DER certificates, one a line."""
    if text.lstrip()[:1] in {"{", "["}:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValidationFailed(f"not valid JSON: {exc}", errors=["body"]) from exc
        return dcc_from_json(data, text)
    return Source.DER_LIST, _refused_as_400(dcc.parse_der_list, text, "certificate list")


def dcc_from_json(data: Any, text: str | None = None) -> tuple[Source, list[DccSigner]]:
    """A JSON import (``text``: ``data`` as written, if at hand): ``{"certificates": [...]}``
    (only that member) or an array of base64 strings, else the EU gateway's trust list."""
    if isinstance(data, dict) and "certificates" in data:
        if set(data) != {"certificates"} or not isinstance(data["certificates"], list):
            raise ValidationFailed(
                "a certificate list is {certificates: [<base64 DER>, …]} and nothing else",
                errors=["certificates"],
            )
        return Source.CERTIFICATES, dcc_from_certificates(data["certificates"])
    if text is None:
        text = orjson.dumps(data).decode()
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return Source.DER_LIST, _refused_as_400(dcc.parse_der_list, text, "certificate list")
    return Source.TRUST_LIST, _refused_as_400(dcc.parse_trust_list, text, "trust list")


def _refused_as_400(parse: Any, text: str, what: str) -> list[DccSigner]:
    try:
        signers: list[DccSigner] = parse(text)
    except _Refused as exc:
        raise ValidationFailed(f"{what}: {exc}", errors=["body"]) from exc
    return signers


def _unique(signers: Sequence[DccSigner]) -> list[DccSigner]:
    """One per kid (a list may repeat a certificate); two certificates sharing a kid are a
    400, since verify could not tell which one signed."""
    if not signers:
        raise ValidationFailed("no certificates to import", errors=["body"])
    if len(signers) > MAX_SIGNERS:
        raise ValidationFailed(f"more than {MAX_SIGNERS} certificates", errors=["body"])
    by_kid: dict[bytes, DccSigner] = {}
    for signer in signers:
        if len(signer.der) > MAX_DER:
            raise ValidationFailed(
                f"certificate {b64(signer.kid)} is {len(signer.der)} bytes, above {MAX_DER}",
                errors=["body"],
            )
        seen = by_kid.setdefault(signer.kid, signer)
        if seen.der != signer.der:
            raise ValidationFailed(
                f"two different certificates share kid {b64(signer.kid)}", errors=["body"]
            )
    return list(by_kid.values())


def _crl_documents(crl_texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each CRL (already checked by ``shc.shc_issuer``) by kid, as the spec writes it."""
    documents: dict[str, dict[str, Any]] = {}
    for text in crl_texts:
        kid, rids, ctr = shc.parse_crl(text)
        documents[kid] = {
            "kid": kid,
            "method": "rid",
            "ctr": ctr,
            "rids": [rid if at is None else f"{rid}.{at}" for rid, at in rids.items()],
        }
    return documents


@dataclass(frozen=True, slots=True)
class Published:
    """The ``GET /v1/trust`` document, serialized once per reload, and its ETag."""

    body: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class _Loaded:
    store: TrustStore
    published: Published


def _build(stored: StoredTrust) -> _Loaded:
    """The rows turned into verify's value and the public document (CPU work: a thread).

    A stored row the readers now refuse (a reader grown stricter) is left out with a warning
    rather than stopping the replica from loading the rest.
    """
    signers: dict[bytes, DccSigner] = {}
    for row in stored.signers:
        try:
            signers[row.kid] = dcc.signer_from_der(row.der, country=row.country)
        except _Refused as exc:
            log.warning("trust store: DCC signer %s skipped: %s", b64(row.kid), exc)
    issuers: dict[str, ShcIssuer] = {}
    for issuer in stored.issuers:
        crls = [json.dumps(c) for c in issuer.crls.values()]
        try:
            issuers[issuer.iss] = shc.shc_issuer(
                issuer.iss, json.dumps(issuer.jwks), crls, name=issuer.name
            )
        except _Refused as exc:
            log.warning("trust store: SHC issuer %s skipped: %s", issuer.iss, exc)
    document = {
        "version": stored.version,
        "dcc": [
            {"kid": b64(row.kid), "country": row.country, "certificate": b64(row.der)}
            for row in stored.signers
            if row.kid in signers
        ],
        "shc": [
            {"iss": row.iss, "name": row.name, "keys": row.jwks, "crl": row.crls}
            for row in stored.issuers
            if row.iss in issuers
        ],
    }
    body = orjson.dumps(document)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    store = TrustStore(dcc=signers, shc=issuers, version=stored.version)
    return _Loaded(store, Published(body, etag))


@dataclass(frozen=True, slots=True)
class ShcImported:
    version: int
    new: bool  # the issuer was not trusted before
    keys: int
    crls: int


class TrustHolder:
    """This replica's trust store: ``current`` (for verify) and ``published`` (for ``GET
    /v1/trust``), and the operators' use cases, each a change every replica follows."""

    def __init__(
        self, pool: Pool, *, timeout: float, watcher: CatalogWatcher | None = None
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.watcher = watcher
        self.current: TrustStore = EMPTY_TRUST
        self.published: Published = _build(StoredTrust(0, [], [])).published
        if watcher is not None:
            watcher.register(Catalog.TRUST, self.reload)

    async def reload(self) -> None:
        """Load the trust store whole and swap it in (the watcher calls this)."""
        stored = await trust.load(self.pool, timeout=self.timeout)
        loaded = await asyncio.to_thread(_build, stored)
        self.current, self.published = loaded.store, loaded.published

    async def _changed(self) -> None:
        if self.watcher is not None:
            await self.watcher.changed(Catalog.TRUST)

    async def import_dcc(
        self, signers: Sequence[DccSigner], source: Source, *, actor: str, replace: bool = False
    ) -> SignersWritten:
        """Trust ``signers`` (parsed by :func:`dcc_from_text` or :func:`dcc_from_certificates`);
        with ``replace``, only them. Audited with their kids and the counts."""
        unique = _unique(signers)
        rows = [SignerRow(s.kid, s.der, s.country, source.value) for s in unique]
        written = await trust.put_signers(
            self.pool,
            rows,
            replace=replace,
            actor=actor,
            action=IMPORT_DCC,
            target={
                "source": source.value,
                "replace": replace,
                "certificates": len(rows),
                "kids": [b64(r.kid) for r in rows],
            },
            timeout=self.timeout,
        )
        await self._changed()
        return written

    async def import_shc(
        self,
        iss: str,
        jwks: Any,
        crls: Sequence[Any],
        *,
        actor: str,
        name: str | None = None,
    ) -> ShcImported:
        """Trust an issuer with its JWKS (parsed JSON) and CRLs (parsed JSON, at most one per
        kid), replacing what was trusted for ``iss``. Audited with the URL and the counts."""
        if len(crls) > MAX_CRLS:
            raise ValidationFailed(f"more than {MAX_CRLS} CRLs", errors=["crls"])
        crl_texts = [json.dumps(c) for c in crls]
        try:
            # Strict: every key EC P-256 for signing, public only, kid its thumbprint.
            issuer = shc.shc_issuer(iss, json.dumps(jwks), crl_texts, name=name)
        except _Refused as exc:
            raise ValidationFailed(str(exc), errors=["iss", "jwks", "crls"]) from exc
        documents = _crl_documents(crl_texts)
        version, new = await trust.put_issuer(
            self.pool,
            IssuerRow(iss, name, {"keys": jwks["keys"]}, documents),
            actor=actor,
            action=IMPORT_SHC,
            target={"iss": iss, "keys": sorted(issuer.keys), "crls": sorted(documents)},
            timeout=self.timeout,
        )
        await self._changed()
        return ShcImported(version, new, len(issuer.keys), len(documents))

    async def remove_dcc(self, kid: bytes, *, actor: str) -> bool:
        """Stop trusting one DCC signer; False if it was not trusted (nothing written)."""
        version = await trust.remove_signer(
            self.pool,
            kid,
            actor=actor,
            action=REMOVE_DCC,
            target={"kid": b64(kid)},
            timeout=self.timeout,
        )
        if version is not None:
            await self._changed()
        return version is not None

    async def remove_shc(self, iss: str, *, actor: str) -> bool:
        """Stop trusting one SHC issuer; False if it was not trusted (nothing written)."""
        version = await trust.remove_issuer(
            self.pool,
            iss,
            actor=actor,
            action=REMOVE_SHC,
            target={"iss": iss},
            timeout=self.timeout,
        )
        if version is not None:
            await self._changed()
        return version is not None

    async def stored(self) -> StoredTrust:
        """The rows as stored, with who imported each and when (for listing)."""
        return await trust.load(self.pool, timeout=self.timeout)
