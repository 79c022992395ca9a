"""Status rules (码色规则): a pure function from facts to a subject's colour.

Facts are the latest declaration, the authority's overrides and exposures at risk places.
The latest active override is the authority's ruling: facts older than it are settled by it;
facts newer than it combine with it, and the most severe colour wins. Without a valid
declaration there is no status, hence no pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from passcode.domain import fields
from passcode.domain.model import Color, StatusReason, Symptom


@dataclass(frozen=True, slots=True)
class Declaration:
    """What a citizen reported (申报)."""

    declared_at: datetime
    temperature_c: float
    symptoms: frozenset[Symptom]
    regions: frozenset[str]
    close_contact: bool

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, declared_at: datetime) -> Declaration:
        """What a ``POST /v1/declarations`` body (its schema already checked) declares; a
        region that breaks :func:`passcode.domain.fields.region` raises its ``FieldError``."""
        return cls(
            declared_at=declared_at,
            temperature_c=round(float(body["temperature_c"]), 1),
            symptoms=frozenset(Symptom(s) for s in body["symptoms"]),
            regions=frozenset(fields.region(r) for r in body["regions_visited"]),
            close_contact=body["close_contact"],
        )


def body_hash(body: object) -> bytes:
    """A declaration body's digest, stored with it: a retry under the same Idempotency-Key
    must send the same body (keys sorted, no spaces: the same JSON however it was spelled)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


@dataclass(frozen=True, slots=True)
class Ruling:
    """An authority override (转码) or an exposure at a risk place: a colour for a window."""

    color: Color
    reason: StatusReason
    valid_from: datetime
    valid_until: datetime | None
    created_at: datetime

    def active(self, now: datetime) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


@dataclass(frozen=True, slots=True)
class Policy:
    """The tunable parts of the rules."""

    declaration_ttl: timedelta = timedelta(days=7)
    fever_threshold: float = 37.3
    risk_regions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Derived:
    """A derived status: colour, why, and until when it holds without re-deriving."""

    color: Color
    reason: StatusReason
    valid_until: datetime


def judge_declaration(decl: Declaration, policy: Policy) -> tuple[Color, StatusReason]:
    """The colour a declaration alone gives; the most severe finding wins."""
    if decl.close_contact:
        return Color.RED, StatusReason.CLOSE_CONTACT
    if decl.temperature_c >= policy.fever_threshold:
        return Color.YELLOW, StatusReason.FEVER
    if decl.symptoms:
        return Color.YELLOW, StatusReason.SYMPTOMS
    if decl.regions & policy.risk_regions:
        return Color.YELLOW, StatusReason.RISK_REGION
    return Color.GREEN, StatusReason.DECLARED_HEALTHY


def derive_status(
    declaration: Declaration | None,
    overrides: Iterable[Ruling],
    exposures: Iterable[Ruling],
    *,
    now: datetime,
    policy: Policy,
) -> Derived | None:
    """The subject's status now, or None when there is no valid declaration."""
    if declaration is None:
        return None
    decl_until = declaration.declared_at + policy.declaration_ttl
    if not declaration.declared_at - timedelta(minutes=5) <= now < decl_until:
        return None

    overrides = tuple(overrides)  # read twice below: a one-shot iterable would lose horizons
    active_overrides = [o for o in overrides if o.active(now)]
    ruling = max(active_overrides, key=lambda o: o.created_at, default=None)
    settled_before = ruling.created_at if ruling is not None else None

    candidates: list[tuple[Color, StatusReason]] = []
    horizons: list[datetime] = [decl_until]
    if ruling is not None:
        candidates.append((ruling.color, ruling.reason))
        if ruling.valid_until is not None:
            horizons.append(ruling.valid_until)
    if settled_before is None or declaration.declared_at > settled_before:
        candidates.append(judge_declaration(declaration, policy))
    for exposure in exposures:
        if not exposure.active(now):
            if exposure.valid_from > now:
                horizons.append(exposure.valid_from)
            continue
        if settled_before is not None and exposure.created_at <= settled_before:
            continue
        candidates.append((exposure.color, exposure.reason))
        if exposure.valid_until is not None:
            horizons.append(exposure.valid_until)
    for override in overrides:
        if override.valid_from > now:
            horizons.append(override.valid_from)

    color, reason = max(candidates, key=lambda c: c[0].severity)
    return Derived(color=color, reason=reason, valid_until=min(horizons))
