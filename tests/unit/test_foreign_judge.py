"""ForeignJudge remembers an authenticated certificate per code text, so repeated scans skip the
signature check, and still every rejection happens: a trust-store change, the certificate's or
its signer's expiry, a certificate not valid yet, a revocation, and the place's policy (evaluated
on every scan). In-memory fakes of the judge's two ports; real readers and real DCCs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from passcode.domain import dcc, shc
from passcode.domain.foreign import ForeignCertificate, ShcIssuer, TrustStore
from passcode.domain.model import Decision, Kind, Reason
from passcode.domain.policy import DEFAULT_POLICY, VALUE_SETS, PlacePolicy, parse_policy
from passcode.service.foreign import ForeignJudge, ForeignOutcome
from tests.dcc_maker import NOW, Signer, claims, make_signer, pcr_test, sign, vaccination

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SHC_EXAMPLES = CORPUS / "shc" / "examples"
SHC_ISS = "https://spec.smarthealth.cards/examples/issuer"
PLACE = "Hall"
PASSES_ONLY = parse_policy({"accepts": ["passcode"], "rules": []})


@dataclass
class FakeTrust:
    current: TrustStore


@dataclass
class FakePlaces:
    policy: PlacePolicy = DEFAULT_POLICY
    value_sets: Mapping[str, Sequence[str]] = field(default_factory=lambda: VALUE_SETS)

    def policy_for(self, place: str) -> PlacePolicy:
        return self.policy


def _hash(kind: str, issuer: str, certificate_id: str) -> bytes:
    return hashlib.sha256(f"{kind}|{issuer}|{certificate_id}".encode()).digest()[:16]


def _store(*signers: Signer, version: int) -> TrustStore:
    entries = [dcc.signer_from_der(s.der) for s in signers]
    return TrustStore(dcc={e.kid: e for e in entries}, version=version)


@dataclass
class Rig:
    judge: ForeignJudge
    trust: FakeTrust
    places: FakePlaces
    reads: list[str]

    def scan(self, code: str, now: int, kind: Kind = Kind.EU_DCC) -> ForeignOutcome:
        return self.judge.judge(code, kind, place=PLACE, now=now)


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, reads: list[str]) -> None:
    real: Callable[..., ForeignCertificate] = getattr(module, name)

    def counted(text: str, *args: Any, **kwargs: Any) -> ForeignCertificate:
        reads.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(module, name, counted)


@pytest.fixture
def signer() -> Signer:
    return make_signer(country="DE")


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch, signer: Signer) -> Rig:
    reads: list[str] = []
    # the judge calls the readers through their modules (``dcc.read_dcc``), so this counts them
    _counting(monkeypatch, dcc, "read_dcc", reads)
    _counting(monkeypatch, shc, "read_shc", reads)
    trust = FakeTrust(_store(signer, version=1))
    places = FakePlaces()
    judge = ForeignJudge(trust=trust, places=places, hasher=_hash, max_entries=100)
    return Rig(judge, trust, places, reads)


def _verdict(outcome: ForeignOutcome) -> tuple[Decision, Reason]:
    return outcome.verdict.decision, outcome.verdict.reason


ADMIT = (Decision.ADMIT, Reason.OK)


def test_a_second_scan_of_the_same_text_skips_the_reader_and_answers_the_same(
    rig: Rig, signer: Signer
) -> None:
    """(a) one read for two scans; same verdict, holder, issuer and certificate hash."""
    code = sign(signer, claims(vaccination()))
    first = rig.scan(code, NOW)
    second = rig.scan(code, NOW + 60)
    assert _verdict(first) == ADMIT
    assert second == first
    assert len(first.cert_hash) == 16
    assert rig.reads == [code]


def test_another_text_is_read_on_its_own_and_hashes_differently(rig: Rig, signer: Signer) -> None:
    """The cache is per code text: a different certificate is read, with another hash."""
    code = sign(signer, claims(vaccination()))
    other = sign(signer, claims(pcr_test()))
    first, second = rig.scan(code, NOW), rig.scan(other, NOW)
    assert rig.reads == [code, other]
    assert first.cert_hash != second.cert_hash


def test_a_trust_store_without_the_signer_makes_the_next_scan_unknown_key(
    rig: Rig, signer: Signer
) -> None:
    """(b) a new trust-store version ends reuse at once: the reader runs and refuses."""
    code = sign(signer, claims(vaccination()))
    assert _verdict(rig.scan(code, NOW)) == ADMIT
    rig.trust.current = _store(make_signer(), version=2)
    assert _verdict(rig.scan(code, NOW + 1)) == (Decision.INVALID, Reason.UNKNOWN_KEY)
    assert len(rig.reads) == 2


def test_a_cached_certificate_is_admitted_at_its_exp_and_expired_the_second_after(
    rig: Rig, signer: Signer
) -> None:
    """(c) the last valid second is served from the cache; the first second after exp is
    invalid/expired."""
    exp = NOW + 600
    code = sign(signer, claims(vaccination(), exp=exp))
    assert _verdict(rig.scan(code, NOW)) == ADMIT
    assert _verdict(rig.scan(code, exp)) == ADMIT
    assert len(rig.reads) == 1
    assert _verdict(rig.scan(code, exp + 1)) == (Decision.INVALID, Reason.EXPIRED)


def test_a_cached_certificate_is_expired_when_its_signer_certificate_expires_first(
    rig: Rig,
) -> None:
    """(d) the signer's notAfter bounds the reuse too: admitted at it, expired one second on."""
    not_after = NOW + 300
    short = make_signer(not_after=not_after)
    rig.trust.current = _store(short, version=1)
    code = sign(short, claims(vaccination(), exp=NOW + 86_400))
    assert _verdict(rig.scan(code, NOW)) == ADMIT
    assert _verdict(rig.scan(code, not_after)) == ADMIT
    assert len(rig.reads) == 1
    assert _verdict(rig.scan(code, not_after + 1)) == (Decision.INVALID, Reason.EXPIRED)


def test_a_certificate_not_valid_yet_is_never_served_from_the_cache(
    rig: Rig, signer: Signer
) -> None:
    """(e) before its iat a certificate is not_yet_valid at every scan, also after it was
    admitted (and remembered) at a later scan time."""
    iat = NOW + 100
    code = sign(signer, claims(vaccination(), iat=iat))
    not_yet = (Decision.INVALID, Reason.NOT_YET_VALID)
    assert _verdict(rig.scan(code, iat - 1)) == not_yet
    assert _verdict(rig.scan(code, iat - 1)) == not_yet
    assert _verdict(rig.scan(code, iat + 10)) == ADMIT
    assert _verdict(rig.scan(code, iat - 1)) == not_yet
    assert len(rig.reads) == 4


def test_a_fractional_iat_is_not_served_from_the_cache_in_its_own_whole_second(
    rig: Rig, signer: Signer
) -> None:
    """(e) an iat of T+0.5 is in the future at T: the cache must not round it down."""
    iat = NOW + 100.5
    code = sign(signer, claims(vaccination(), iat=iat))
    assert _verdict(rig.scan(code, NOW + 200)) == ADMIT
    assert _verdict(rig.scan(code, NOW + 100)) == (Decision.INVALID, Reason.NOT_YET_VALID)


def test_a_signer_not_valid_yet_is_never_served_from_the_cache(rig: Rig) -> None:
    """(e) the signer's notBefore likewise bounds reuse from below."""
    not_before = NOW - 10
    late = make_signer(not_before=not_before)
    rig.trust.current = _store(late, version=1)
    code = sign(late, claims(vaccination(), iat=NOW - 3600))
    assert _verdict(rig.scan(code, NOW)) == ADMIT
    assert _verdict(rig.scan(code, not_before - 1)) == (Decision.INVALID, Reason.NOT_YET_VALID)


def test_an_invalid_certificate_is_not_remembered(rig: Rig) -> None:
    """(f) unknown_key, then the signer is trusted (even under the same version number): the
    next scan reads again and admits."""
    stranger = make_signer()
    code = sign(stranger, claims(vaccination()))
    assert _verdict(rig.scan(code, NOW)) == (Decision.INVALID, Reason.UNKNOWN_KEY)
    rig.trust.current = _store(stranger, version=rig.trust.current.version)
    assert _verdict(rig.scan(code, NOW + 1)) == ADMIT
    assert len(rig.reads) == 2


def test_a_bad_signature_is_refused_at_every_scan(rig: Rig, signer: Signer) -> None:
    """(f) a refusal is never turned into a remembered success: each scan reads and refuses."""
    code = sign(signer, claims(vaccination()), corrupt=True)
    for offset in range(3):
        assert _verdict(rig.scan(code, NOW + offset)) == (Decision.INVALID, Reason.BAD_SIGNATURE)
    assert len(rig.reads) == 3


def test_the_policy_is_evaluated_on_every_scan_of_a_cached_certificate(
    rig: Rig, signer: Signer
) -> None:
    """(g) a place policy that stops accepting eu-dcc denies the next scan, from the cache."""
    code = sign(signer, claims(vaccination()))
    assert _verdict(rig.scan(code, NOW)) == ADMIT
    rig.places.policy = PASSES_ONLY
    denied = rig.scan(code, NOW + 1)
    assert _verdict(denied) == (Decision.DENY, Reason.NOT_ACCEPTED)
    assert denied.holder is not None
    assert len(rig.reads) == 1
    rig.places.policy = DEFAULT_POLICY
    assert _verdict(rig.scan(code, NOW + 2)) == ADMIT


def test_the_policy_sees_the_scan_time_not_the_time_it_was_cached(rig: Rig, signer: Signer) -> None:
    """(g) the default policy's 14-day rule: a last dose on 1 November is denied on the 14th
    and admitted by the same cached certificate at midnight starting the 15th."""
    payload = vaccination()
    payload["v"][0]["dt"] = "2023-11-01"
    code = sign(signer, claims(payload))
    midnight = 1_700_006_400  # 2023-11-15T00:00:00Z; NOW is 2023-11-14T22:13:20Z
    assert _verdict(rig.scan(code, NOW + 3000)) == (Decision.DENY, Reason.NOT_ACCEPTED)
    assert _verdict(rig.scan(code, midnight - 1)) == (Decision.DENY, Reason.NOT_ACCEPTED)
    assert _verdict(rig.scan(code, midnight)) == ADMIT
    assert len(rig.reads) == 1


def _shc_text(number: str) -> str:
    return (SHC_EXAMPLES / f"example-{number}-f-qr-code-numeric-value-0.txt").read_text().strip()


def _issuers() -> tuple[ShcIssuer, ShcIssuer]:
    if not SHC_EXAMPLES.is_dir():
        pytest.skip(f"the SMART Health Cards examples are not at {SHC_EXAMPLES}")
    well_known = SHC_EXAMPLES / "issuer" / ".well-known"
    jwks = (well_known / "jwks.json").read_text()
    crls = [p.read_text() for p in sorted((well_known / "crl").glob("*.json"))]
    return shc.shc_issuer(SHC_ISS, jwks), shc.shc_issuer(SHC_ISS, jwks, crls)


SHC_NOW = 1_700_000_000  # inside the examples' validity (example 03 has expired since)


def test_a_cached_smart_health_card_is_revoked_once_the_trust_store_carries_its_crl(
    rig: Rig,
) -> None:
    """(h) example 03 read and judged under its issuer without the CRL, then twice from the
    cache; a new trust-store version with the CRL that lists its rid: invalid/revoked."""
    bare, with_crl = _issuers()
    rig.trust.current = TrustStore(shc={SHC_ISS: bare}, version=1)
    code = _shc_text("03")
    first = rig.scan(code, SHC_NOW, Kind.SHC)
    assert first.verdict.decision in {Decision.ADMIT, Decision.DENY}
    assert first.kind is Kind.SHC
    assert first.issuer == SHC_ISS
    assert rig.scan(code, SHC_NOW + 1, Kind.SHC) == first
    assert len(rig.reads) == 1
    rig.trust.current = TrustStore(shc={SHC_ISS: with_crl}, version=2)
    revoked = rig.scan(code, SHC_NOW + 2, Kind.SHC)
    assert _verdict(revoked) == (Decision.INVALID, Reason.REVOKED)
    assert (revoked.holder, revoked.cert_hash) == (None, b"")
    assert len(rig.reads) == 2


def test_a_card_not_on_the_crl_stays_readable_with_it(rig: Rig) -> None:
    """(h) the CRL revokes only its rids: example 00 is judged alike under both issuers."""
    bare, with_crl = _issuers()
    code = _shc_text("00")
    rig.trust.current = TrustStore(shc={SHC_ISS: bare}, version=1)
    first = rig.scan(code, SHC_NOW, Kind.SHC)
    rig.trust.current = TrustStore(shc={SHC_ISS: with_crl}, version=2)
    second = rig.scan(code, SHC_NOW + 1, Kind.SHC)
    assert first.verdict.decision in {Decision.ADMIT, Decision.DENY}
    assert second == first
    assert len(rig.reads) == 2
