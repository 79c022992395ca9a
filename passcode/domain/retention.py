"""Retention (PIPL Art. 19: the shortest retention the purpose needs): how long each kind of
record is kept once it has served its purpose, and the cut-off times that say, at a given
``now``, what is past it. Pure: ``now`` and the periods come in, times go out;
:mod:`passcode.store.retention` turns each cut-off into its SQL.

What a status is derived from (:func:`passcode.domain.rules.derive_status`, reading what
:func:`passcode.store.statuses.bulk_facts` selects) sets the limits of every rule here, so that
no purge can change any subject's status, now or later:

* **declarations** — only a subject's latest declaration is read, and only while
  ``declared_at + declaration_ttl`` is ahead. A declaration stops deciding when a newer one is
  made (superseded) or when its lifetime ends (lapsed), whichever comes first; it goes
  ``declaration_days`` after that. The latest one is never removed while it could decide, and
  an older one is never removed while a newer one, which would then be read instead, is kept.
* **overrides and exposures** — only those whose ``valid_until`` is open or ahead are read. One
  goes ``ruling_days`` after it ended. An open-ended one (``valid_until`` NULL) ends for the
  rules when an authority's open-ended override made after it is in force: the newest active
  override is the ruling, and facts made before the ruling are settled by it, for good, as
  such an override never ends and is never removed while it is the newest. It goes
  ``ruling_days`` after that override took effect. A ruling that has not begun yet (its
  ``valid_from`` ahead) is kept: its start is a horizon of the status.
* **exposures from a positive test** — kept while an upload of that test could still be
  accepted (:data:`passcode.domain.testresults.MAX_AGE`): a re-upload gives a positive result
  without its exposure a new one, which a settled-and-removed exposure would then be.
* **test results** — no status reads them (a positive's exposure carries its effect).
* **subjects and their statuses** — a subject with nothing left (no declaration, override,
  exposure, test result, card or scan) has no status to derive; after ``subject_grace`` from
  its creation (a subject is created a moment before its first record) it is erased.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from passcode.domain.testresults import MAX_AGE

TEST_EXPOSURE_PREFIX = "test:"  # exposures.source of a positive test's exposure (testresults)


@dataclass(frozen=True, slots=True)
class RetentionPeriods:
    """How long each kind of record is kept after it has served its purpose. Every default is
    the shortest the record's purpose needs, with its reason (PIPL Art. 19)."""

    declaration_days: int = 28
    """Days a declaration is kept after it stopped deciding a status (superseded by a newer
    one, or past its lifetime). 28: the incubation window contact tracers ask about, the same
    period as the scan log (DESIGN §1), so a tracer reading someone's scans can also read what
    they declared at the time; and the citizen's copy (GET /v1/me/data) shows the same window."""

    ruling_days: int = 28
    """Days an override or exposure is kept after it ended (or was settled for good by an
    open-ended override). 28: an authority reviewing a ruling, or a citizen disputing one, does
    it within the tracing window the scans are kept for; after that no status depends on it."""

    test_result_days: int = 28
    """Days a laboratory result is kept after its test. 28: it decides no status (a positive's
    exposure does, and is kept by its own rule), and serves only the citizen's copy and the
    authority's questions within the tracing window."""

    card_days: int = 28
    """Days a printed card's record (serial, code, state) is kept after the card expired. 28:
    an expired card admits no one; its record answers a holder's "why was I refused" within
    the period the scans of those refusals are kept."""

    idempotency_hours: int = 24
    """Hours a declaration's Idempotency-Key and body hash are kept. 24: clients retry within
    minutes (the app at once, an offline phone on reconnection); a day covers a phone offline
    overnight, after which a retry is a new declaration, which is harmless."""

    dead_letter_days: int = 28
    """Days a scan the drain could not store is kept for an operator to replay. The scan
    retention period: a dead letter is a scan, and no scan outlives it."""

    audit_days: int = 3 * 365 + 1
    """Days the audit log is kept, purged by whole calendar months (UTC) past that. Three
    years: the audit log holds no health data, only who did what (pseudonymous subject ids
    whose subjects are themselves erased); it is how a citizen's complaint or a regulator's
    inspection of an authority's actions is answered, which PIPL (Art. 54, 64) and the usual
    three-year limitation period for civil claims make a matter of years, not weeks."""

    subject_grace_hours: int = 24
    """Hours a subject with nothing left is kept after its creation. A subject row is written
    a moment before its first record (a declaration, a ruling, a test result), by concurrent
    transactions; a day keeps the purge far from any of them."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"retention period {name} must be at least 1, not {getattr(self, name)}"
                )


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """At one ``now``: the times before which each kind of record is past its purpose."""

    now: datetime
    superseded: datetime  # a declaration superseded by one made at or before this goes
    lapsed: datetime  # a declaration made at or before this has lapsed long enough: it goes
    ruling: datetime  # rulings ended, or settled by an override in force since, at or before
    test_exposure: datetime  # a positive test's exposure may go only if tested at or before
    test_result: datetime  # results tested at or before this go
    card: datetime  # cards expired at or before this go
    idempotency: datetime  # keys and body hashes of declarations made at or before this go
    dead_letter: datetime  # dead letters first seen at or before this go
    audit: datetime  # audit entries before this (the start of a UTC month) go
    subject: datetime  # subjects with nothing left, created at or before this, go


def month_start(at: datetime) -> datetime:
    """The start (UTC) of the calendar month holding ``at``: the audit log goes by months."""
    utc = at.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def cutoffs(now: datetime, periods: RetentionPeriods, *, declaration_ttl: timedelta) -> Cutoffs:
    """Every kind's cut-off at ``now`` (aware). ``declaration_ttl`` is the rules' lifetime of a
    declaration (:class:`passcode.domain.rules.Policy`): a declaration lapses after it."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    days = timedelta(days=1)
    superseded = now - periods.declaration_days * days
    return Cutoffs(
        now=now,
        superseded=superseded,
        lapsed=superseded - declaration_ttl,
        ruling=now - periods.ruling_days * days,
        test_exposure=now - MAX_AGE,
        test_result=now - periods.test_result_days * days,
        card=now - periods.card_days * days,
        idempotency=now - timedelta(hours=periods.idempotency_hours),
        dead_letter=now - periods.dead_letter_days * days,
        audit=month_start(now - periods.audit_days * days),
        subject=now - timedelta(hours=periods.subject_grace_hours),
    )


def declaration_expired(
    declared_at: datetime, next_declared_at: datetime | None, cut: Cutoffs
) -> bool:
    """Whether a declaration is past its purpose: it lapsed (``declared_at + ttl``) or was
    superseded (the next newer one of its subject, ``next_declared_at``) at least the period
    ago. The store's SQL says the same in one statement."""
    if declared_at <= cut.lapsed:
        return True
    return next_declared_at is not None and next_declared_at <= cut.superseded


def ruling_expired(
    valid_from: datetime,
    valid_until: datetime | None,
    *,
    settled_since: datetime | None,
    test_exposure: bool,
    cut: Cutoffs,
) -> bool:
    """Whether an override or exposure is past its purpose. ``settled_since``: when the
    earliest open-ended override that settles it for good took effect (an override made after
    it — for an exposure, at or after it — with no end, in force), or None.
    ``test_exposure``: a positive test's exposure, kept while its test could be uploaded again."""
    if test_exposure and valid_from > cut.test_exposure:
        return False
    if valid_until is not None and valid_until <= cut.ruling:
        return True
    return settled_since is not None and settled_since <= cut.ruling and valid_from <= cut.ruling
