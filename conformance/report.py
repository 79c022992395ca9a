"""What a conformance run reports: per field, the cases agreed out of the cases that had an
expected result, and each disagreement with its reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Disagreement:
    case: str  # the case's file, relative to the corpus folder
    field: str  # e.g. VERIFY, EXPIRATIONCHECK
    expected: object
    got: object
    reason: str  # why we decided as we did (the refusing stage's detail), and any known issue
    known_issue: str | None = None  # the upstream known-issue entry naming this case, if any


@dataclass(slots=True)
class FieldTally:
    agreed: int = 0
    cases: int = 0


@dataclass(slots=True)
class Report:
    """One suite's results: ``fields`` keeps insertion order for the printed table."""

    suite: str
    fields: dict[str, FieldTally] = field(default_factory=dict)
    disagreements: list[Disagreement] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what could not run, and why

    def compare(
        self,
        case: str,
        name: str,
        expected: object,
        got: object,
        reason: str,
        known_issue: str | None = None,
    ) -> None:
        tally = self.fields.setdefault(name, FieldTally())
        tally.cases += 1
        if expected == got:
            tally.agreed += 1
        else:
            self.disagreements.append(Disagreement(case, name, expected, got, reason, known_issue))

    def lines(self) -> Iterable[str]:
        yield f"## {self.suite}"
        yield f"{'field':<24} {'agreed':>7} {'cases':>7} {'share':>7}"
        for name, tally in self.fields.items():
            share = 100.0 * tally.agreed / tally.cases if tally.cases else 100.0
            yield f"{name:<24} {tally.agreed:>7} {tally.cases:>7} {share:>6.1f}%"
        for note in self.skipped:
            yield f"skipped: {note}"
        if self.disagreements:
            yield ""
            yield "disagreements:"
        for d in self.disagreements:
            known = f" [upstream known issue: {d.known_issue}]" if d.known_issue else ""
            yield (
                f"  {d.case} {d.field}: expected {d.expected!r}, got {d.got!r} — {d.reason}{known}"
            )
