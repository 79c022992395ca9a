"""Bounded CI runs of the atheris harnesses in ``fuzz/`` (``make fuzz`` runs them for longer).

Each harness runs in a subprocess (libFuzzer owns the process: it exits on the first crash and
writes the input to ``-artifact_prefix``), bounded by ``-runs`` and ``-max_total_time``. A crash
fails the test with the harness output and the crashing input; copy that input into
``fuzz/regressions/<harness>/`` (replayed by ``test_fuzz_regressions.py`` in every run) and fix it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"
RUNS = 200_000
SECONDS = 10

HARNESSES = [
    pytest.param("pass_decoder.py", [], id="pass-decoder"),
    pytest.param(
        "verify_request.py",
        [str(FUZZ / "corpus" / "verify_request"), f"-dict={FUZZ / 'json.dict'}"],
        id="verify-request",
    ),
    pytest.param("scan_entry.py", [], id="scan-entry"),
    pytest.param("dcc_decoder.py", [str(FUZZ / "corpus" / "dcc_decoder")], id="dcc-decoder"),
    pytest.param("shc_decoder.py", [str(FUZZ / "corpus" / "shc_decoder")], id="shc-decoder"),
    pytest.param("venue_decoder.py", [], id="venue-decoder"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("harness", "extra"), HARNESSES)
def test_harness_runs_without_a_crash(harness: str, extra: list[str], tmp_path: Path) -> None:
    """The harness runs up to RUNS inputs or SECONDS seconds (seeded from its corpus) and libFuzzer
    reports no crash: each decoder raised only its own error (PassError, ForeignError, the JWKS
    and CRL parsers ValueError, VenueCodeError) and what it accepted read back the same; the
    verify parser let only BadRequest/ValidationFailed escape. Proves the harness is alive too:
    it must have executed inputs (``Done N runs`` with N > 0)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(  # noqa: S603  # our own interpreter running our own harness
        [
            sys.executable,
            str(FUZZ / harness),
            str(corpus),
            *extra,
            f"-runs={RUNS}",
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        cwd=tmp_path,
        check=False,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    report = f"{harness}: artifacts {crashes} in {tmp_path}\n{result.stderr[-6000:]}"
    assert not crashes, report
    assert result.returncode == 0, report
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None, report
    assert int(done.group(1)) > 0, report
