"""The verify decision for a genuine pass, given the subject's live status (DESIGN §3).

Kept pure and tiny because two places use it: the verify handler answering the terminal, and
the scan-log drain deriving the stored decision from the status snapshot taken in the same
Redis round trip. One function, so the answer and the record can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from passcode.domain.model import Color, Decision, Reason


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: Reason
    color: Color | None


_ADMIT = Verdict(Decision.ADMIT, Reason.OK, Color.GREEN)
_NO_STATUS = Verdict(Decision.DENY, Reason.SUPERSEDED, None)
_DENY = {
    Color.YELLOW: Verdict(Decision.DENY, Reason.STATUS_YELLOW, Color.YELLOW),
    Color.RED: Verdict(Decision.DENY, Reason.STATUS_RED, Color.RED),
}
_OUTDATED = {color: Verdict(Decision.DENY, Reason.SUPERSEDED, color) for color in Color}


def invalid(reason: Reason) -> Verdict:
    """Anything that is not a valid pass."""
    return Verdict(Decision.INVALID, reason, None)


def judge_live(pass_version: int, live_color: Color | None, live_version: int) -> Verdict:
    """Admit only a subject green now whose pass is not older than the latest status change.

    The few possible verdicts are shared constants (they are immutable): no allocation per scan.
    """
    if live_color is None:
        return _NO_STATUS
    if live_color is not Color.GREEN:
        return _DENY[live_color]
    if pass_version < live_version:
        return _OUTDATED[live_color]
    return _ADMIT
