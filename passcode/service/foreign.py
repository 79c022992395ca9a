"""Foreign certificates at the terminal endpoint (一码通用, DESIGN §3): read an EU DCC or a
SMART Health Card, authenticate it against the trust store, and judge it by the place's policy
at the scan time. No live status is involved: the decision is made here, in process, and the
verifier records it like an invalid code's.

Authentication (decoding, the signature, the signer's key usage, the schema) is remembered per
distinct code text while the trust store is unchanged, as :mod:`passcode.domain.passcache` does
for our passes: a certificate shown at every door of a visit is verified once. Only successes
are remembered; the time window (the certificate's and its DCC signer's) is checked on every
scan, and the policy is evaluated on every scan (it depends on the scan time and the place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from passcode.domain import dcc, shc
from passcode.domain.expiring import ExpiringCache
from passcode.domain.foreign import DccSigner, ForeignCertificate, ForeignError, TrustStore
from passcode.domain.masking import mask_name
from passcode.domain.model import Decision, Kind, Reason
from passcode.domain.policy import PlacePolicy, evaluate
from passcode.domain.verdict import Verdict, invalid

# How long an authenticated certificate is reused at most when nothing else bounds it (a
# certificate without an expiry): its signer or issuer may be removed at any time, which
# changes the trust store's version and so ends every reuse at once.
REUSE_AT_MOST = 3600

_ADMIT = Verdict(Decision.ADMIT, Reason.OK, None)
NOT_ACCEPTED = Verdict(Decision.DENY, Reason.NOT_ACCEPTED, None)


class TrustSource(Protocol):
    """The trust store as this replica holds it now (:class:`passcode.service.trust.TrustHolder`)."""

    @property
    def current(self) -> TrustStore: ...


class PolicySource(Protocol):
    """Places' policies as this replica holds them (:class:`passcode.service.places.PlaceDirectory`)."""

    def policy_for(self, place: str) -> PlacePolicy: ...

    @property
    def value_sets(self) -> Mapping[str, Sequence[str]]: ...


CertificateHasher = Callable[[str, str, str], bytes]  # (kind, issuer, certificate id) → hash


@dataclass(frozen=True, slots=True)
class ForeignOutcome:
    """What the terminal is told and what the scan log keeps (no name, no payload, no id)."""

    kind: Kind
    verdict: Verdict
    holder: str | None  # masked
    issuer: str  # "" when the certificate could not be read that far
    cert_hash: bytes  # b"" likewise


@dataclass(frozen=True, slots=True)
class _Authenticated:
    cert: ForeignCertificate
    holder: str
    cert_hash: bytes
    trust_version: int
    valid_from: int | None
    valid_until: int | None


class ForeignJudge:
    """Reads, authenticates and judges foreign certificates for :class:`Verifier`."""

    def __init__(
        self,
        *,
        trust: TrustSource,
        places: PolicySource,
        hasher: CertificateHasher,
        max_entries: int,
    ) -> None:
        self.trust = trust
        self.places = places
        self.hasher = hasher
        self._authenticated: ExpiringCache[str, _Authenticated] = ExpiringCache(max_entries)

    def judge(self, code: str, kind: Kind, *, place: str, now: int) -> ForeignOutcome:
        """The outcome of one scan of ``code`` (whose prefix said ``kind``) at ``place``."""
        try:
            found = self._authenticate(code, kind, now)
        except ForeignError as exc:
            return ForeignOutcome(kind, invalid(exc.reason), None, "", b"")
        cert = found.cert
        outcome = evaluate(
            self.places.policy_for(place),
            cert,
            value_sets=self.places.value_sets,
            now=datetime.fromtimestamp(now, UTC),
        )
        verdict = _ADMIT if outcome.accepted else NOT_ACCEPTED
        return ForeignOutcome(kind, verdict, found.holder, cert.issuer, found.cert_hash)

    def _authenticate(self, code: str, kind: Kind, now: int) -> _Authenticated:
        """A remembered authentication while the trust store and the time window allow it;
        otherwise the whole reading again (which raises the reason of any refusal)."""
        trust = self.trust.current
        hit = self._authenticated.get(code, now=now)
        if (
            hit is not None
            and hit.trust_version == trust.version
            and (hit.valid_from is None or hit.valid_from <= now)
        ):
            return hit
        if kind is Kind.EU_DCC:
            cert = dcc.read_dcc(code, trust.dcc, now=now)
        else:
            cert = shc.read_shc(code, trust.shc, now=now)
        signer = _dcc_signer(code, cert, trust) if kind is Kind.EU_DCC else None
        found = _Authenticated(
            cert=cert,
            holder=mask_name(cert.holder_name),
            cert_hash=self.hasher(kind.value, cert.issuer, cert.certificate_id),
            trust_version=trust.version,
            valid_from=_valid_from(cert, signer),
            valid_until=_valid_until(cert, signer),
        )
        until = min(found.valid_until or now + REUSE_AT_MOST, now + REUSE_AT_MOST)
        self._authenticated.put(code, found, expires_at=until, now=now)
        return found


def _dcc_signer(code: str, cert: ForeignCertificate, trust: TrustStore) -> DccSigner | None:
    """The signer that authenticated a DCC just read: its certificate's window bounds reuse.
    Taken from the certificate when the reader names it, else from the text's kid (decoding
    it again costs far less than the signature check the cache saves)."""
    kid = cert.signer if cert.signer is not None else dcc.decode_dcc(code).kid
    return trust.dcc.get(kid) if kid is not None else None


def _valid_from(cert: ForeignCertificate, signer: DccSigner | None) -> int | None:
    """The first whole second at which the certificate (and its DCC signer's certificate) is
    surely valid. ``issued_at`` is the iat/nbf truncated to a second, and a fraction it
    dropped may still be in the future during that second, so reuse starts one second on."""
    starts = [cert.issued_at + 1] if cert.issued_at is not None else []
    if signer is not None:
        starts.append(int(signer.certificate.not_valid_before_utc.timestamp()))
    return max(starts) if starts else None


def _valid_until(cert: ForeignCertificate, signer: DccSigner | None) -> int | None:
    """The last second the certificate (and its DCC signer's certificate) is valid."""
    ends = [cert.expires_at] if cert.expires_at is not None else []
    if signer is not None:
        ends.append(int(signer.certificate.not_valid_after_utc.timestamp()))
    return min(ends) if ends else None
