"""The latency/throughput plot and the knee, from Locust's stats history CSV.

Runs at the end of a headless run (the locustfile registers it) and on its own, to redraw a
past run::

    python -m loadtest.report loadtest/results/run      # reads run_stats_history.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A plateau's first seconds are skipped: Locust's "current" figures are over a 10 s window.
SETTLE_SECONDS = 10
# Past the knee, each added user brings less than this share of the throughput one user brought
# on the first step (below saturation every user adds about the same)...
KNEE_MARGINAL = 0.25
# ...or the p99 is more than this many times the first step's, and at least KNEE_LATENCY_MS more.
KNEE_LATENCY = 3.0
KNEE_LATENCY_MS = 10.0


@dataclass(frozen=True, slots=True)
class Point:
    t: float
    users: int
    rps: float
    fails: float
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class Plateau:
    users: int
    rps: float
    p99: float | None
    seconds: int


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "N/A": no request in the window


def read_history(path: Path) -> list[Point]:
    """The Aggregated rows of a ``*_stats_history.csv``, time counted from the first row."""
    points: list[Point] = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated":
                continue
            points.append(
                Point(
                    t=float(row["Timestamp"]),
                    users=int(row["User Count"]),
                    rps=_number(row["Requests/s"]) or 0.0,
                    fails=_number(row["Failures/s"]) or 0.0,
                    p50=_number(row["50%"]),
                    p95=_number(row["95%"]),
                    p99=_number(row["99%"]),
                )
            )
    if points:
        start = points[0].t
        points = [dataclasses.replace(p, t=p.t - start) for p in points]
    return points


def plateaus(points: list[Point]) -> list[Plateau]:
    """Stretches at one user count, each summarised once settled (median req/s and p99)."""
    found: list[Plateau] = []
    run: list[Point] = []
    for point in [*points, None]:
        if run and (point is None or point.users != run[0].users):
            settled = [p for p in run if p.t - run[0].t >= SETTLE_SECONDS] or run[-1:]
            if run[0].users > 0 and len(run) > SETTLE_SECONDS:
                p99s = [p.p99 for p in settled if p.p99 is not None]
                found.append(
                    Plateau(
                        users=run[0].users,
                        rps=statistics.median(p.rps for p in settled),
                        p99=statistics.median(p99s) if p99s else None,
                        seconds=int(run[-1].t - run[0].t) + 1,
                    )
                )
            run = []
        if point is not None:
            run.append(point)
    return found


def knee(steps: list[Plateau]) -> Plateau | None:
    """The last step before throughput stops growing with users, or latency takes off.

    None when there are fewer than three steps, or throughput kept growing to the last one.
    """
    rising = sorted((s for s in steps if s.rps > 0), key=lambda s: s.users)
    if len(rising) < 3:
        return None
    first = rising[0]
    per_user = first.rps / first.users
    for before, after in itertools.pairwise(rising):
        marginal = (after.rps - before.rps) / (after.users - before.users)
        if marginal < KNEE_MARGINAL * per_user:
            return before
        if (
            first.p99
            and after.p99
            and after.p99 > KNEE_LATENCY * first.p99
            and after.p99 - first.p99 >= KNEE_LATENCY_MS
        ):
            return before
    return None


def peak(steps: list[Plateau]) -> Plateau | None:
    """The step with the highest settled throughput."""
    return max(steps, key=lambda s: s.rps, default=None)


def plot(points: list[Point], out: Path, *, title: str, steps: list[Plateau]) -> Path:
    """Throughput and latency over time (and against users, for a staircase) as a PNG."""
    import matplotlib  # noqa: PLC0415  # optional: the loadtest extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  # after choosing the backend

    rows = 3 if len(steps) >= 3 else 2
    fig, axes = plt.subplots(rows, 1, figsize=(11, 3.4 * rows), constrained_layout=True)
    t = [p.t for p in points]

    ax = axes[0]
    ax.plot(t, [p.rps for p in points], label="requests/s", color="tab:blue")
    ax.plot(t, [p.fails for p in points], label="failures/s", color="tab:red")
    ax.set_ylabel("per second")
    ax.set_title(title)
    users_ax = ax.twinx()
    users_ax.plot(t, [p.users for p in points], label="users", color="tab:gray", ls="--")
    users_ax.set_ylabel("users")
    lines = ax.get_legend_handles_labels()
    more = users_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")

    ax = axes[1]
    for name, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        ax.plot(t, [getattr(p, name) for p in points], label=name, color=color)
    ax.set_ylabel("latency (ms, last 10 s)")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper left")

    if rows == 3:
        ax = axes[2]
        users = [s.users for s in steps]
        ax.plot(users, [s.rps for s in steps], "o-", color="tab:blue", label="requests/s")
        ax.set_xlabel("users")
        ax.set_ylabel("requests/s (settled)")
        lat_ax = ax.twinx()
        lat_ax.plot(users, [s.p99 for s in steps], "s--", color="tab:red", label="p99 ms")
        lat_ax.set_ylabel("p99 ms")
        found = knee(steps)
        if found is not None:
            ax.axvline(found.users, color="black", ls=":")
            ax.annotate(
                f"knee ~{found.users} users, {found.rps:.0f} req/s",
                (found.users, found.rps),
                textcoords="offset points",
                xytext=(6, -14),
            )
        ax.set_title("throughput and p99 by users (staircase)")

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def finish(prefix: str, *, plot_path: Path, summary_path: Path | None) -> dict[str, Any]:
    """After Locust closed its CSV files: draw the plot and add the knee to the summary."""
    history = Path(f"{prefix}_stats_history.csv")
    result: dict[str, Any] = {}
    if not history.exists():
        print(f"loadtest: no {history}: run with --csv and --csv-full-history", file=sys.stderr)
        return result
    points = read_history(history)
    steps = plateaus(points)
    found = knee(steps)
    if len(steps) >= 3:
        best = peak(steps)
        assert best is not None
        result["steps"] = [dataclasses.asdict(s) for s in steps]
        result["peak"] = dataclasses.asdict(best)
        result["knee"] = dataclasses.asdict(found) if found is not None else None
        print(f"loadtest: peak {best.rps:.0f} req/s settled at {best.users} users")
        if found is not None:
            print(f"loadtest: knee at about {found.users} users ({found.rps:.0f} req/s settled)")
        else:
            print("loadtest: no knee: throughput kept growing up to the last step")
    if points:
        total = sum(p.rps for p in points) / len(points)
        title = f"{Path(prefix).name}: {len(points)} s, mean {total:.0f} req/s"
        try:
            result["plot"] = str(plot(points, plot_path, title=title, steps=steps))
            print(f"loadtest: plot written to {plot_path}")
        except ImportError:
            print("loadtest: no plot (install passcode[loadtest] for matplotlib)", file=sys.stderr)
    if summary_path is not None and summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        summary.update(result)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("prefix", help="the --csv prefix of the run (e.g. loadtest/results/run)")
    parser.add_argument("--plot", type=Path, help="PNG path (default: <prefix>_plot.png)")
    args = parser.parse_args(argv)
    summary = Path(f"{args.prefix}_summary.json")
    finish(
        args.prefix,
        plot_path=args.plot or Path(f"{args.prefix}_plot.png"),
        summary_path=summary if summary.exists() else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
