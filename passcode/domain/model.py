"""The vocabulary every layer shares: colours, decisions and reason codes.

One source for each fact: handlers, the OpenAPI document and the tests all read these enums.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Color(StrEnum):
    """A subject's status colour (码色)."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def severity(self) -> int:
        """Higher is more severe; the most severe colour wins."""
        return _SEVERITY[self]

    @property
    def wire(self) -> int:
        """The compact integer written into a pass (see docs/pass-format.md)."""
        return _WIRE[self]

    @classmethod
    def from_wire(cls, value: int) -> Color:
        """The colour for a pass's integer, or ValueError."""
        for color, wire in _WIRE.items():
            if wire == value:
                return color
        raise ValueError(f"unknown colour code {value!r}")


_SEVERITY = {Color.GREEN: 0, Color.YELLOW: 1, Color.RED: 2}
_WIRE = {Color.GREEN: 1, Color.YELLOW: 2, Color.RED: 3}


class Decision(StrEnum):
    """What a terminal is told to do (DESIGN §3)."""

    ADMIT = "admit"
    DENY = "deny"
    INVALID = "invalid"
    UNVERIFIED = "unverified"


class Reason(StrEnum):
    """Verification reason codes (DESIGN §3); fixed, scanner vendors depend on them."""

    OK = "ok"
    STATUS_YELLOW = "status_yellow"
    STATUS_RED = "status_red"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    MALFORMED = "malformed"
    SUPERSEDED = "superseded"
    UNSUPPORTED = "unsupported"
    STATUS_UNAVAILABLE = "status_unavailable"
    NOT_ACCEPTED = "not_accepted"  # valid, but this place's policy refuses its kind or content
    REVOKED = "revoked"  # a card reported lost, a certificate on its issuer's revocation list


class Kind(StrEnum):
    """What kind of code a scan held (DESIGN §3, 一码通用): every verify answer names it."""

    PASSCODE = "passcode"  # our own short-lived pass (PC1:)
    CARD = "card"  # a printed card: our pass format with a card marker (PC1:)
    EU_DCC = "eu-dcc"  # an EU Digital COVID Certificate (HC1:)
    SHC = "shc"  # a SMART Health Card (shc:/)


class StatusReason(StrEnum):
    """Why a subject has its colour: from a declaration rule or an authority's ruling."""

    DECLARED_HEALTHY = "declared_healthy"
    FEVER = "fever"
    SYMPTOMS = "symptoms"
    RISK_REGION = "risk_region"
    CLOSE_CONTACT = "close_contact"
    POSITIVE_TEST = "positive_test"
    QUARANTINE = "quarantine"
    QUARANTINE_RELEASE = "quarantine_release"
    RISK_PLACE = "risk_place"
    MANUAL_REVIEW = "manual_review"


class Symptom(StrEnum):
    """Symptoms a citizen can declare."""

    FEVER = "fever"
    COUGH = "cough"
    SORE_THROAT = "sore_throat"
    SHORTNESS_OF_BREATH = "shortness_of_breath"
    LOSS_OF_TASTE_OR_SMELL = "loss_of_taste_or_smell"
    FATIGUE = "fatigue"
    DIARRHEA = "diarrhea"


class ClaimKey(IntEnum):
    """CWT claim keys used in a pass (RFC 8392 registered, plus private-use claims)."""

    ISS = 1
    SUB = 2
    EXP = 4
    IAT = 6
    CTI = 7
    STATUS = -70001  # private use (< -65536): [colour code, status version]
    CARD = -70010  # private use: a printed card's serial (bytes); absent in a phone's pass


class Role(StrEnum):
    """What an admin credential may do (issue 5)."""

    OPERATOR = "operator"  # terminals
    HEALTH_OFFICER = "health_officer"  # overrides, risk places, test results, tracing
    AUDITOR = "auditor"  # the audit log
    COMMUNITY_WORKER = "community_worker"  # printed cards, declarations for their holders
