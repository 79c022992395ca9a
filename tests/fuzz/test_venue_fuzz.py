"""Bounded run of the venue code decoder's atheris harness (``fuzz/venue_decoder.py``), as
``test_fuzz_harnesses.py`` runs the others: a crash fails the test with the crashing input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = 200_000
SECONDS = 10


@pytest.mark.slow
def test_venue_harness_runs_without_a_crash(tmp_path: Path) -> None:
    """Up to RUNS inputs or SECONDS seconds: the decoder raised only VenueCodeError, accepted
    codes re-read the same and only the trusted key's were accepted; and inputs really ran."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(  # noqa: S603  # our own interpreter running our own harness
        [
            sys.executable,
            str(FUZZ / "venue_decoder.py"),
            str(corpus),
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
    report = f"artifacts {crashes} in {tmp_path}\n{result.stderr[-6000:]}"
    assert not crashes, report
    assert result.returncode == 0, report
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None, report
    assert int(done.group(1)) > 0, report
