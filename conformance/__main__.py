"""``python -m conformance [CORPUS]`` (``make conformance``): every suite this service can
speak to, run against a corpus folder in the layout of ``../shared/corpus`` (dgc-testdata,
shc, certlogic): a table per suite (agreed / cases per field) and each disagreement with its
reason. Another corpus in the same layout can be named instead. Exits 1 on any disagreement
that is not an upstream known issue, 2 when the folder holds none of the suites."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from conformance.report import Report

SUITES = ("conformance.dcc", "conformance.shc", "conformance.certlogic")
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"


def main(argv: list[str]) -> int:
    corpus = Path(argv[0]) if argv else DEFAULT_CORPUS
    if not corpus.is_dir():
        print(f"no corpus folder at {corpus}: name one (python -m conformance <folder>)")
        return 2
    reports: list[Report] = []
    for name in SUITES:
        suite = importlib.import_module(name)
        report = suite.run(corpus)
        reports.append(report)
        print("\n".join(report.lines()), end="\n\n", flush=True)
    if not any(tally.cases for report in reports for tally in report.fields.values()):
        print(f"{corpus} holds none of the suites ({', '.join(SUITES)})")
        return 2
    ours = [d for report in reports for d in report.disagreements if d.known_issue is None]
    print(f"disagreements not known upstream: {len(ours)}")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
