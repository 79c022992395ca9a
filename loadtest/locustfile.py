"""passcode under load: scanner terminals, citizens and the authority (see README.md here).

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080            # all three, web UI
    locust -f loadtest/locustfile.py TerminalUser --headless -u 200 -r 50 -t 1m \\
        --csv loadtest/results/run --csv-full-history --html loadtest/results/run.html \\
        --slo-p99-ms 50 --slo-fail-ratio 0.01

``LOCUST_SHAPE=rush`` (morning rush) or ``step`` (staircase to the knee) drives the user count
instead of ``--users``; ``none`` (the default) leaves it to the command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# Locust imports this file by path; make `loadtest` importable from any working directory.
_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from locust import events  # noqa: E402  # after the path fix above

from loadtest import slo  # noqa: E402
from loadtest.scenarios import AuthorityUser, CitizenUser, TerminalUser  # noqa: E402

__all__ = ["AuthorityUser", "CitizenUser", "TerminalUser"]

_SHAPE = os.environ.get("LOCUST_SHAPE", "none").strip().lower() or "none"
if _SHAPE == "rush":
    from loadtest.shapes import RushShape

    __all__ += ["RushShape"]
elif _SHAPE == "step":
    from loadtest.shapes import StepShape

    __all__ += ["StepShape"]
elif _SHAPE != "none":
    raise SystemExit(f"LOCUST_SHAPE={_SHAPE!r}: choose rush, step or none")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument(
        "--seed-file",
        default="",
        env_var="LOADTEST_SEED_FILE",
        help="what `passcode seed` wrote (default loadtest/data/seed.json); in distributed mode"
        " the master's value is sent to every worker",
    )
    slo.add_arguments(parser)
