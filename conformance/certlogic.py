"""CertLogic conformance: every assertion of a dgc-business-rules ``certlogic/testSuite`` folder
evaluated by the library place policies use (``passcode.domain.policy.certlogic``: the
``panzi-json-logic`` CertLogic mode with CertLogic 1.3's date operations).

One field per suite file (its name without ``.json``), one case per assertion. A result must equal the
expected JSON value with its JSON type (``1`` is not ``true``); an exception is a
disagreement carrying its message. Assertions a suite marks ``"directive": "skip"`` (features an
implementation may leave out) are run too: passing them is more, not less.

Run: ``python -m conformance.certlogic <corpus folder>`` (the folder holding ``certlogic/``).
"""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from conformance.report import Report
from passcode.domain.policy import certlogic

SUITE = "certlogic"
_MISSING = object()


def _json(value: Any) -> Any:
    """A result as JSON would carry it (a date-time as its ISO text)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (Python says ``True == 1`` and ``1 == 1.0``;
    JSON numbers 1 and 1.0 are one value, a boolean is not a number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def run(corpus: Path) -> Report:
    """Every assertion of ``corpus/certlogic/testSuite/*.json``."""
    report = Report(SUITE)
    folder = corpus / "certlogic" / "testSuite"
    if not folder.is_dir():
        report.skipped.append(f"no {folder}")
        return report
    for path in sorted(folder.glob("*.json")):
        try:
            suite = json.loads(path.read_text(encoding="utf-8"))
            cases = suite["cases"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report.skipped.append(f"{path.name}: unreadable ({exc})")
            continue
        name = path.stem
        for case in cases:
            for index, assertion in enumerate(case.get("assertions", [])):
                expression = assertion.get("certLogicExpression", case.get("certLogicExpression"))
                label = f"certlogic/testSuite/{path.name}: {case.get('name', '?')} #{index}"
                expected = assertion.get("expected")
                try:
                    got: Any = _json(certlogic(expression, assertion.get("data")))
                    reason = assertion.get("message", "")
                except Exception as exc:  # whatever the library raises is a disagreement
                    got, reason = _MISSING, f"raised {type(exc).__name__}: {exc}"
                agreed = got is not _MISSING and same_json(expected, got)
                report.compare(label, name, True, agreed, f"got {got!r}: {reason}".strip(": "))
    return report


def main(argv: list[str]) -> int:
    corpus = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    report = run(corpus)
    print("\n".join(report.lines()))
    return 1 if report.disagreements or not report.fields else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
