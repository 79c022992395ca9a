"""The CertLogic test suite (dgc-business-rules) passes whole with the library place policies
evaluate their rules with."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.certlogic import run, same_json

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"


def test_every_certlogic_suite_assertion_agrees() -> None:
    """Every assertion of every file of certlogic/testSuite gives its expected value."""
    if not (CORPUS / "certlogic" / "testSuite").is_dir():
        pytest.skip(f"CertLogic test suite not found at {CORPUS}/certlogic/testSuite")
    report = run(CORPUS)
    assert report.fields, "no suite file was read"
    assert not report.skipped
    assert report.disagreements == []
    assert sum(t.cases for t in report.fields.values()) >= 200  # the upstream suite's size


def test_results_compare_as_json_values_with_their_types() -> None:
    """1 is not true and "1" is not 1, so a loose result cannot pass as the expected one."""
    assert same_json(1, 1.0)
    assert not same_json(True, 1)
    assert not same_json(0, False)
    assert not same_json("1", 1)
    assert not same_json([True], [1])
    assert same_json({"a": [1, None]}, {"a": [1.0, None]})
    assert not same_json({"a": 1}, {"a": 1, "b": 2})


def test_missing_suite_folder_is_reported_not_passed(tmp_path: Path) -> None:
    """A corpus without the suite yields no cases and says why."""
    report = run(tmp_path)
    assert report.fields == {}
    assert report.skipped
    assert "certlogic" in report.skipped[0]
