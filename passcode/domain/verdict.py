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


_DENY_REASON = {Color.YELLOW: Reason.STATUS_YELLOW, Color.RED: Reason.STATUS_RED}


def invalid(reason: Reason) -> Verdict:
    """Anything that is not a valid pass."""
    return Verdict(Decision.INVALID, reason, None)


def judge_live(pass_version: int, live_color: Color | None, live_version: int) -> Verdict:
    """Admit only a subject green now whose pass is not older than the latest status change."""
    if live_color is None:
        return Verdict(Decision.DENY, Reason.SUPERSEDED, None)
    if live_color is not Color.GREEN:
        return Verdict(Decision.DENY, _DENY_REASON[live_color], live_color)
    if pass_version < live_version:
        return Verdict(Decision.DENY, Reason.SUPERSEDED, live_color)
    return Verdict(Decision.ADMIT, Reason.OK, live_color)
