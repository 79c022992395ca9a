"""Service-level objectives on the command line, the run's summary, and the exit code.

``--slo-p99-ms`` and ``--slo-fail-ratio`` are checked when a headless run ends (on the master in
distributed mode, which holds everyone's stats). When either is given, the process exits with
0 when every given objective is met and :data:`SLO_MISSED` when one is not (or nothing was
measured), instead of Locust's default of 1 for any failed request. Locust's own non-zero codes
for crashes in the scenarios still win. ``--slo-name REGEX`` limits the check to matching
requests (``"METHOD name"``), e.g. ``--slo-name verify`` for the terminals alone.

The summary (``<csv prefix>_summary.json``) holds totals, per-request figures and the verdict;
when the process exits, after Locust closed its CSV files, :func:`loadtest.report.finish` adds
the plot (``<csv prefix>_plot.png`` or ``--plot``) and, for a staircase, the knee.
"""

from __future__ import annotations

import atexit
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import events
from locust import log as locust_log
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import RequestStats, StatsEntry

from loadtest import report

log = logging.getLogger("loadtest")

SLO_MISSED = 3


def add_arguments(parser: Any) -> None:
    """Register the SLO and report flags (``events.init_command_line_parser``)."""
    group = parser.add_argument_group("passcode SLOs and report")
    group.add_argument(
        "--slo-p99-ms",
        type=float,
        default=None,
        env_var="LOCUST_SLO_P99_MS",
        help="fail the run (exit 3) when the p99 response time exceeds this (ms)",
    )
    group.add_argument(
        "--slo-fail-ratio",
        type=float,
        default=None,
        env_var="LOCUST_SLO_FAIL_RATIO",
        help="fail the run (exit 3) when failed/total requests exceeds this (e.g. 0.01)",
    )
    group.add_argument(
        "--slo-name",
        default="",
        env_var="LOCUST_SLO_NAME",
        help="check the SLOs on requests whose 'METHOD name' matches this regex only",
    )
    group.add_argument(
        "--plot",
        default="",
        env_var="LOCUST_PLOT",
        help="latency/throughput PNG (default: <csv prefix>_plot.png; needs --csv-full-history)",
    )


@dataclass(slots=True)
class Verdict:
    requests: int = 0
    failures: int = 0
    p99_ms: float | None = None
    missed: list[str] = field(default_factory=list)
    checked: bool = False

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _selected(stats: RequestStats, pattern: str) -> list[StatsEntry]:
    if not pattern:
        return [stats.total]
    regex = re.compile(pattern)
    return [e for e in stats.entries.values() if regex.search(f"{e.method} {e.name}")]


def evaluate(stats: RequestStats, options: Any) -> Verdict:
    """Check the objectives the command line gave against the run's final stats."""
    limit_p99 = getattr(options, "slo_p99_ms", None)
    limit_fail = getattr(options, "slo_fail_ratio", None)
    pattern = getattr(options, "slo_name", "") or ""
    entries = _selected(stats, pattern)
    verdict = Verdict(
        requests=sum(e.num_requests for e in entries),
        failures=sum(e.num_failures for e in entries),
        checked=limit_p99 is not None or limit_fail is not None,
    )
    p99s = [e.get_response_time_percentile(0.99) for e in entries if e.num_requests]
    verdict.p99_ms = max(p99s) if p99s else None
    scope = f" for /{pattern}/" if pattern else ""
    if verdict.checked and verdict.requests == 0:
        verdict.missed.append(f"no requests{scope}: nothing to hold the SLOs against")
        return verdict
    if limit_p99 is not None:
        for entry in entries:
            p99 = entry.get_response_time_percentile(0.99) if entry.num_requests else 0
            if p99 > limit_p99:
                verdict.missed.append(
                    f"p99 {p99:.0f} ms > {limit_p99:g} ms ({entry.method or ''} {entry.name})"
                )
    if limit_fail is not None and verdict.fail_ratio > limit_fail:
        verdict.missed.append(f"failure ratio {verdict.fail_ratio:.4f} > {limit_fail:g}{scope}")
    return verdict


def _entry(entry: StatsEntry) -> dict[str, Any]:
    return {
        "method": entry.method,
        "name": entry.name,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": round(entry.total_rps, 1),
        "p50_ms": entry.get_response_time_percentile(0.5) if entry.num_requests else None,
        "p95_ms": entry.get_response_time_percentile(0.95) if entry.num_requests else None,
        "p99_ms": entry.get_response_time_percentile(0.99) if entry.num_requests else None,
        "max_ms": entry.max_response_time if entry.num_requests else None,
    }


def summary(environment: Environment, verdict: Verdict) -> dict[str, Any]:
    stats = environment.stats
    options = environment.parsed_options
    return {
        "host": environment.host,
        "total": _entry(stats.total),
        "fail_ratio": round(stats.total.fail_ratio, 6),
        "requests": [_entry(e) for e in sorted(stats.entries.values(), key=lambda e: e.name)],
        "slo": {
            "p99_ms": getattr(options, "slo_p99_ms", None),
            "fail_ratio": getattr(options, "slo_fail_ratio", None),
            "name": getattr(options, "slo_name", "") or None,
            "checked": verdict.checked,
            "met": verdict.checked and not verdict.missed,
            "missed": verdict.missed,
        },
    }


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return  # workers hold a share of the stats; the master judges the whole
    options = environment.parsed_options
    verdict = evaluate(environment.stats, options)
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) if total.num_requests else 0
    log.info(
        "run: %d requests, %.1f req/s, p99 %.0f ms, failure ratio %.4f",
        total.num_requests,
        total.total_rps,
        p99,
        total.fail_ratio,
    )
    if verdict.checked:
        for missed in verdict.missed:
            log.error("SLO missed: %s", missed)
        if verdict.missed:
            environment.process_exit_code = SLO_MISSED
        elif (
            environment.runner is not None
            and not environment.runner.exceptions
            and not locust_log.unhandled_greenlet_exception
        ):
            log.info("SLOs met")
            environment.process_exit_code = 0

    prefix = getattr(options, "csv_prefix", None)
    summary_path = Path(f"{prefix}_summary.json") if prefix else None
    if summary_path is not None:
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(
            json.dumps(summary(environment, verdict), indent=2) + "\n", encoding="utf-8"
        )
    if prefix and getattr(options, "stats_history_enabled", False):
        plot_path = Path(options.plot) if options.plot else Path(f"{prefix}_plot.png")
        # Locust closes (and flushes) its CSV files after the quitting event: draw at exit.
        atexit.register(report.finish, prefix, plot_path=plot_path, summary_path=summary_path)
