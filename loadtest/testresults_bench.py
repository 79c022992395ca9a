"""Time one bulk test-results upload (``POST /v1/admin/test-results``) end to end.

A throwaway database (``CREATE DATABASE``, dropped at the end) and Redis prefix (deleted):
seeds ``rows * positive`` citizens with a healthy declaration (``passcode seed``'s COPY path),
then uploads a CSV of ``--rows`` records through the real app on a local port: positives for
those citizens (each re-derived, green to red, Postgres then Redis) and negatives for users
never seen (subjects created). Then the same file again (all duplicates). Prints both timings
and checks the counts and that every positive citizen is red.

    .venv/bin/python -m loadtest.testresults_bench [--rows 10000] [--positive 0.5]

``PASSCODE_DATABASE_URL`` / ``PASSCODE_REDIS_URL`` name the servers (default: this machine's own
on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer

from loadtest.throwaway import throwaway_stores
from passcode.app import create_app
from passcode.config import Settings
from passcode.seed import seed

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_KEY = "bench-admin-" + secrets.token_hex(8)


def _csv(positives: list[str], negatives: int, run: str) -> bytes:
    tested = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    lines = ["user_id,result,tested_at"]
    lines += [f"{user_id},positive,{tested}" for user_id in positives]
    lines += [f"lab-{run}-{n},negative,{tested}" for n in range(negatives)]
    return ("\n".join(lines) + "\n").encode()


async def _upload(
    session: aiohttp.ClientSession, url: str, body: bytes
) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.post(
        url,
        data=body,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/csv"},
        timeout=aiohttp.ClientTimeout(total=600),
    ) as response:
        answer = await response.json()
        if response.status != 200:
            raise SystemExit(f"upload failed: {response.status} {answer}")
    return time.perf_counter() - started, answer


async def run(settings: Settings, rows: int, share: float) -> None:
    async with throwaway_stores(settings, "labbench") as stores:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = dataclasses.replace(
                stores,
                data_dir=Path(data_dir),
                admin_key=ADMIN_KEY,
                dev_mode=True,
                drain_enabled=False,
            )
            await _measure(settings, rows, share)


async def _measure(settings: Settings, rows: int, share: float) -> None:
    out = settings.data_dir / "seed.json"
    positives = round(rows * share)
    await seed(settings, citizens=positives, terminals=0, colors=(1.0, 0.0, 0.0), out=out)
    document = json.loads(out.read_text())
    citizens: list[str] = document["citizens"]["green"]
    body = _csv(citizens, rows - positives, document["run_id"])
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        url = str(server.make_url("/v1/admin/test-results"))
        async with aiohttp.ClientSession() as session:
            first, answer = await _upload(session, url, body)
            again, repeat = await _upload(session, url, body)
        pool = await asyncpg.connect(settings.database_url, timeout=10)
        try:
            red = await pool.fetchval("SELECT count(*) FROM statuses WHERE color = 'red'")
        finally:
            await pool.close()
    finally:
        await server.close()
    print(
        f"{rows:,} rows ({positives:,} positive for declared citizens, {rows - positives:,}"
        f" negative for new users), {len(body) / 1e6:.2f} MB: first upload {first:.2f}s"
        f" = {rows / first:,.0f} rows/s (applied {answer['applied']:,}, positives"
        f" {answer['positives']:,}); re-upload {again:.2f}s (duplicates {repeat['duplicates']:,})"
    )
    expected = (answer["applied"], answer["positives"], repeat["applied"], red)
    if expected != (rows, positives, 0, positives):
        raise SystemExit(f"CHECK FAILED: applied, positives, re-applied, red = {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=10_000, help="records in the file")
    parser.add_argument("--positive", type=float, default=0.5, help="share of positive records")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("PASSCODE_DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("PASSCODE_REDIS_URL", DEFAULT_REDIS_URL)
    asyncio.run(run(Settings.from_env(env), args.rows, args.positive))


if __name__ == "__main__":
    main()
