"""EU DCC conformance: every case of a dgc-testdata-shaped folder judged by our reader.

Each JSON case is judged at its ``TESTCTX.VALIDATIONCLOCK`` with its ``TESTCTX.CERTIFICATE`` as
the only trusted signer, and each expected result the service can speak to is compared with what
the reader decided at that step (``passcode.domain.dcc`` exposes the steps one by one, so a
case expecting a schema failure is judged on its schema even when its signer has expired).
Cases named in the suite's ``tests/known_issues.csv`` are marked with the upstream issue.

Run: ``python -m conformance.dcc <corpus folder>`` (the folder holding ``dgc-testdata/``).
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from conformance.report import Report
from passcode.domain.dcc import (
    DccMessage,
    check_key_usage,
    check_schema,
    check_signature,
    check_validity,
    decode_dcc,
    signer_from_der,
)
from passcode.domain.foreign import DccSigner, ForeignError, Stage

SUITE = "dgc-testdata"
# The expected results we judge, in the order the reader takes its steps, with the stage whose
# refusal makes the expectation false.
FIELDS = {
    "UNPREFIX": Stage.UNPREFIX,
    "B45DECODE": Stage.TEXT,
    "COMPRESSION": Stage.COMPRESSION,
    "DECODE": Stage.DECODE,
    "VERIFY": Stage.VERIFY,
    "EXPIRATIONCHECK": Stage.EXPIRATION,
    "KEYUSAGE": Stage.KEYUSAGE,
    "SCHEMAVALIDATION": Stage.SCHEMA,
}
_DECODE_ORDER = [Stage.UNPREFIX, Stage.TEXT, Stage.COMPRESSION, Stage.DECODE]
# Misspellings found in upstream files, read as the key they meant.
_ALIASES = {"EXPTECTEDEXPIRED": "EXPECTEDEXPIRATIONCHECK"}


def expected_results(case: dict[str, Any]) -> dict[str, bool]:
    """The case's boolean expectations by field name (``VERIFY`` …), read leniently: nested
    ``EXPECTEDRESULTS`` objects are flattened and known misspellings mapped."""
    out: dict[str, bool] = {}

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
                continue
            name = _ALIASES.get(key, key)
            if isinstance(value, bool) and name.startswith("EXPECTED"):
                out.setdefault(name.removeprefix("EXPECTED"), value)

    walk(case.get("EXPECTEDRESULTS"))
    return out


def _clock(text: str) -> float:
    """ISO 8601 validation clocks as upstream writes them (``Z``, 7-digit fractions)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


# Upstream's test names (tests/known_issues.csv) for the fields they cover.
_UPSTREAM_TESTS = {
    "VERIFY": "test_verification_check",
    "EXPIRATIONCHECK": "test_expiration_check",
    "KEYUSAGE": "test_expected_key_usage",
    "SCHEMAVALIDATION": "test_cose_schema",
}

Issues = dict[tuple[str, str, str], str]


def known_issues(root: Path) -> Issues:
    """Upstream's known wrong cases: (test name, country, test set or "") → the issue URL."""
    path = root / "tests" / "known_issues.csv"
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fp:
        return {
            (row["test_name"], row["country"], row["test_set"]): row["reason"]
            for row in csv.DictReader(fp)
        }


def _known(issues: Issues, field: str, rel: Path) -> str | None:
    """The known issue covering this case's field: a row names one case (its file's stem) or,
    with an empty test set, every case of the country."""
    test = _UPSTREAM_TESTS.get(field)
    country = rel.parts[0] if rel.parts else ""
    if test is None:
        return None
    return issues.get((test, country, rel.stem)) or issues.get((test, country, ""))


def official_schema(corpus: Path) -> Callable[[Any], bool] | None:
    """The official eu-dcc-schema from the corpus (if it and ``jsonschema`` are there), to say
    in the report whether it sides with us on a schema disagreement."""
    path = corpus / "eu-dcc-schema" / "DCC.combined-schema.json"
    try:
        import jsonschema  # noqa: PLC0415  # a test dependency; the report works without it
    except ImportError:
        return None
    if not path.exists():
        return None
    validator = jsonschema.Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))
    return validator.is_valid


def _step(
    decided: dict[Stage, str | None], stage: Stage, action: Callable[[], object]
) -> object | None:
    """Run one step; record None (passed) or the refusal's detail for its stage."""
    try:
        result = action()
    except ForeignError as exc:
        decided[exc.stage] = f"{exc.reason.value}: {exc.detail}"
        return None
    decided[stage] = None
    return result


def judge(case: dict[str, Any]) -> tuple[dict[Stage, str | None], DccMessage | None]:
    """What the reader decided at each step it could take (None: passed, else why it refused),
    and the decoded message if it decoded."""
    ctx = case.get("TESTCTX") or {}
    decided: dict[Stage, str | None] = {}
    signer: DccSigner | None = None
    try:
        signer = signer_from_der(base64.b64decode(ctx.get("CERTIFICATE") or "", validate=True))
    except (ValueError, binascii.Error) as exc:
        signer_error = f"test certificate refused: {exc}"
    else:
        signer_error = ""
    try:
        now = _clock(str(ctx.get("VALIDATIONCLOCK")))
    except ValueError:
        now = None

    try:
        message = decode_dcc(str(case.get("PREFIX", "")))
    except ForeignError as exc:
        for stage in _DECODE_ORDER[: _DECODE_ORDER.index(exc.stage)]:
            decided[stage] = None
        decided[exc.stage] = f"{exc.reason.value}: {exc.detail}"
        return decided, None
    for stage in _DECODE_ORDER:
        decided[stage] = None
    trusted = {signer.kid: signer} if signer else {}
    _step(decided, Stage.VERIFY, lambda: check_signature(message, trusted))
    if signer is None:
        decided.setdefault(Stage.VERIFY, signer_error)
    if now is not None:
        clock = now
        _step(decided, Stage.EXPIRATION, lambda: check_validity(message, signer, now=clock))
    if signer is not None:
        chosen = signer
        _step(decided, Stage.KEYUSAGE, lambda: check_key_usage(message, chosen))
    _step(decided, Stage.SCHEMA, lambda: check_schema(message))
    return decided, message


def cases(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.json")):
        if "tests" not in path.relative_to(root).parts:
            yield path


def run(corpus: Path) -> Report:
    """Judge every case under ``<corpus>/dgc-testdata`` and tally each expected result."""
    root = corpus / SUITE
    report = Report(suite=f"EU DCC ({SUITE})")
    if not root.is_dir():
        report.skipped.append(f"{root} is absent")
        return report
    issues = known_issues(root)
    official = official_schema(corpus)
    for path in cases(root):
        rel = path.relative_to(root)
        try:
            case = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            report.skipped.append(f"{rel}: not JSON ({exc})")
            continue
        if not isinstance(case, dict) or "PREFIX" not in case:
            report.skipped.append(f"{rel}: not a test case")
            continue
        expected = expected_results(case)
        decided, message = judge(case)
        for name, stage in FIELDS.items():
            if name not in expected:
                continue
            if stage not in decided:
                got = False
                why = "an earlier step refused, so this one was not reached"
            else:
                got = decided[stage] is None
                why = decided[stage] or "passed"
            if name == "SCHEMAVALIDATION" and got != expected[name] and official and message:
                verdict = "valid" if official(dict(message.hcert)) else "invalid"
                why += f"; the official eu-dcc-schema judges it {verdict} too"
            report.compare(str(rel), name, expected[name], got, why, _known(issues, name, rel))
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m conformance.dcc <corpus folder>", file=sys.stderr)
        return 2
    for line in run(Path(argv[0])).lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
