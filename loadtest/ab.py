"""``make ab BASE=<git rev>``: what a change buys on the verify path, measured side by side.

This machine's speed drifts by 10% and more between runs a minute apart, more than most single
changes are worth, so two ``make bench`` runs cannot tell a 3% gain from noise. Here the working
tree and a checkout of ``BASE`` are served at the same time, both pinned to the server CPU, each
loaded by its own wrk (both on the load generator's CPU) over the same window: whatever the
machine does, it does to both. Each round prints the server CPU time per verify of each, from
the processes' own accounting; the medians and their ratio come last. Two services share the
core, so the absolute figures are higher than ``make bench``'s; the ratio is the result.

    make ab BASE=HEAD~3 [AB_ROUNDS=4 AB_DURATION=8]
    python -m loadtest.ab --base-dir /tmp/base --rounds 4   # from the repository root, under
                                                            # `passcode embedded --`
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from loadtest.bench import (
    BenchError,
    Config,
    Server,
    WrkRun,
    ensure_tools,
    log,
    run_wrk,
    seed,
    service_env,
    start_service,
    tree_cpu_seconds,
)
from passcode.config import Settings
from passcode.testing import free_port

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Side:
    """One of the two services: its checkout, its server, what wrk sends it."""

    name: str
    tree: Path
    server: Server | None = None
    url: str = ""
    bodies: Path = Path()
    headers: tuple[str, ...] = ()
    cpu_us: list[float] = dataclasses.field(default_factory=list)


async def start(side: Side, config: Config, workdir: Path) -> None:
    """Serve ``side.tree``'s passcode (run from that directory, so its code is the one
    imported), seed its citizens and terminal through its API."""
    admin = secrets.token_urlsafe(24)
    port = free_port()
    env = service_env(workdir / "data", port, admin)
    env["PYTHONPATH"] = str(side.tree)
    settings = Settings.from_env(env)
    here = Path.cwd()
    os.chdir(side.tree)  # `python -m passcode` imports from the working directory first
    try:
        side.server = start_service(config, env, port, workdir / side.name, workers=1)
    finally:
        os.chdir(here)
    await side.server.wait_ready("/readyz")
    seeded = await seed(f"http://127.0.0.1:{port}", settings, admin, config)
    side.bodies = workdir / f"bodies-{side.name}.txt"
    side.bodies.write_text("".join(json.dumps({"code": c}) + "\n" for c in seeded.codes))
    side.url = f"http://127.0.0.1:{port}/v1/verify"
    side.headers = (f"Authorization: Bearer {seeded.terminal_key}",)


def one_round(sides: list[Side], config: Config) -> list[tuple[float, WrkRun]]:
    """Both wrk runs at once; each side's server CPU µs per verify over the window."""
    before = [tree_cpu_seconds(side.server.pid) for side in sides if side.server]
    runs: dict[str, WrkRun] = {}

    def load(side: Side) -> None:
        run, _ = run_wrk(
            config, side.url, "post_bodies.lua", side.bodies, duration=config.duration,
            headers=side.headers,
        )  # fmt: skip
        runs[side.name] = run

    threads = [threading.Thread(target=load, args=(side,)) for side in sides]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = []
    for side, cpu_before in zip(sides, before, strict=True):
        assert side.server is not None
        run = runs[side.name]
        if run.non_2xx_3xx or run.socket_errors:
            raise BenchError(f"{side.name}: {run.non_2xx_3xx} non-2xx, {run.socket_errors} errors")
        cpu = tree_cpu_seconds(side.server.pid) - cpu_before
        results.append((cpu / run.requests * 1e6, run))
    return results


async def run(base: Path, rounds: int, config: Config) -> int:
    sides = [Side("work", HERE.parent), Side("base", base)]
    with tempfile.TemporaryDirectory(prefix="passcode-ab-") as tmp:
        workdir = Path(tmp)
        for side in sides:
            (workdir / side.name).mkdir()
        try:
            for side in sides:
                await start(side, config, workdir)
            log(f"warm-up round, then {rounds} rounds of {config.duration}s")
            for number in range(rounds + 1):
                results = one_round(sides, config)
                line = "  ".join(
                    f"{side.name} {us:6.1f} µs/verify {r.rps:7,.0f}/s"
                    for side, (us, r) in zip(sides, results, strict=True)
                )
                print(("warm-up " if number == 0 else f"round {number} ") + line, flush=True)
                if number:
                    for side, (us, _) in zip(sides, results, strict=True):
                        side.cpu_us.append(us)
        finally:
            for side in sides:
                if side.server is not None:
                    side.server.stop()
    work, base_side = (statistics.median(side.cpu_us) for side in sides)
    print(f"median server CPU per verify: work {work:.1f} µs, base {base_side:.1f} µs")
    print(f"work / base = {work / base_side:.3f} ({(work / base_side - 1) * 100:+.1f}%)")
    return 0


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--base-dir", type=Path, required=True, help="a checkout of the baseline")
    args.add_argument("--rounds", type=int, default=int(os.environ.get("AB_ROUNDS", "4")))
    options = args.parse_args()
    try:
        ensure_tools()
        config = dataclasses.replace(
            Config.from_env(), duration=int(os.environ.get("AB_DURATION", "8")), citizens=500
        )
        return asyncio.run(run(options.base_dir.resolve(), options.rounds, config))
    except BenchError as exc:
        print(f"ab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
