"""Load-test seeding (`passcode seed`) on the real stores, and the Locust scenarios run for real
against a `passcode serve` process: headless, with an SLO, writing CSV, HTML and a plot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.config import Settings
from passcode.domain.privacy import Sealer, secret_hash
from passcode.domain.rules import derive_status
from passcode.domain.status import LiveStatus
from passcode.seed import SeedError, seed
from passcode.store import pg
from passcode.store.cache import Cache
from passcode.store.statuses import facts
from passcode.testing import auth, free_port
from passcode.wiring import server_secret
from tests.helpers import ADMIN_KEY, REPO, TokenFactory, cli_env, ok, open_stores, run_cli

CITIZENS = 300
SHARES = (0.85, 0.10, 0.05)  # 255 green, 30 yellow, 15 red


async def seeded_rows(pool: pg.Pool, settings: Settings, user_ids: list[str]) -> list[Any]:
    """Subject, stored status and masked name of each user id, in no particular order."""
    sealer = Sealer(server_secret(settings))
    hashes = [sealer.user_hash(settings.idp_issuer, uid) for uid in user_ids]
    return list(
        await pool.fetch(
            "SELECT j.id, j.name_masked, s.color, s.reason, s.valid_until, s.version,"
            " s.cached_version FROM subjects j JOIN statuses s ON s.subject_id = j.id"
            " WHERE j.user_hash = ANY($1::bytea[])",
            hashes,
        )
    )


def user_ids(doc: dict[str, Any]) -> list[str]:
    return [uid for ids in doc["citizens"].values() for uid in ids]


async def assert_consistent(pool: pg.Pool, cache: Cache, settings: Settings, rows: Any) -> None:
    """Each status equals what the rules derive from its stored facts, is in sync, and Redis
    holds the same colour, version, expiry and masked name."""
    now = datetime.now(UTC)
    policy = settings.policy()
    async with pool.acquire() as conn:
        for row in rows:
            declaration, overrides, exposures = await facts(conn, row["id"], now)
            derived = derive_status(declaration, overrides, exposures, now=now, policy=policy)
            assert derived is not None
            assert (derived.color.value, derived.reason.value) == (row["color"], row["reason"])
            assert derived.valid_until == row["valid_until"]
            assert row["cached_version"] == row["version"] == 1
            hot = await cache.get_status(row["id"])
            assert hot == LiveStatus(
                derived.color, 1, int(row["valid_until"].timestamp()), row["name_masked"]
            )


async def test_seed_writes_citizens_statuses_and_terminals(
    settings: Settings, tmp_path: Path
) -> None:
    """Seeding 300 citizens creates exactly them with the requested colour mix; every status in
    Postgres equals derive_status over the stored declaration and matches its Redis hot copy
    (marked cached); terminals are stored by key hash; the file lists what scenarios need."""
    out = tmp_path / "seed.json"
    report = await seed(settings, citizens=CITIZENS, terminals=5, colors=SHARES, out=out)
    assert report.citizens == {"green": 255, "yellow": 30, "red": 15}
    assert report.terminals == 5
    assert report.authority == 1
    assert (out.stat().st_mode & 0o777) == 0o600  # it holds terminal keys

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["run_id"] == report.run_id
    assert {c: len(v) for c, v in doc["citizens"].items()} == report.citizens
    assert len(set(user_ids(doc))) == CITIZENS
    assert all(uid.startswith(f"load-{report.run_id}-") for uid in user_ids(doc))
    assert set(doc["authority"]) <= set(doc["citizens"]["green"])
    assert doc["settings"]["idp_issuer"] == settings.idp_issuer
    assert doc["settings"]["idp_audience"] == settings.idp_audience
    assert await asyncio.to_thread(Path(doc["settings"]["dev_key_path"]).exists)
    assert doc["declarations"]["red"]["close_contact"] is True

    async with open_stores(settings) as (pool, cache):
        for color, ids in doc["citizens"].items():
            rows = await seeded_rows(pool, settings, ids)
            assert len(rows) == len(ids)
            assert {r["color"] for r in rows} == {color}
        rows = await seeded_rows(pool, settings, user_ids(doc))
        await assert_consistent(pool, cache, settings, rows)
        declared = await pool.fetchval(
            "SELECT count(*) FROM declarations WHERE subject_id = ANY($1::bytea[])",
            [r["id"] for r in rows],
        )
        assert declared == CITIZENS
        keys = [secret_hash(t["key"]) for t in doc["terminals"]]
        found = await pool.fetchval(
            "SELECT count(*) FROM terminals WHERE key_hash = ANY($1::bytea[])"
            " AND revoked_at IS NULL",
            keys,
        )
        assert found == 5


async def test_seeded_green_pass_is_admitted_and_red_denied(
    client: TestClient[Any, Any], settings: Settings, make_token: TokenFactory, tmp_path: Path
) -> None:
    """Through the app: a seeded green citizen's pass is admitted at a seeded terminal, a seeded
    yellow one denied as yellow and a red one as red (the Redis copy the seed wrote is what
    verify reads)."""
    out = tmp_path / "seed.json"
    await seed(settings, citizens=CITIZENS, terminals=2, colors=SHARES, out=out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    terminal = doc["terminals"][0]["key"]
    green = next(u for u in doc["citizens"]["green"] if u not in doc["authority"])
    cases = [
        (green, "admit", "ok"),
        (doc["citizens"]["yellow"][0], "deny", "status_yellow"),
        (doc["citizens"]["red"][0], "deny", "status_red"),
    ]
    for user_id, decision, reason in cases:
        got = await client.get("/v1/pass", headers=auth(make_token(user_id=user_id)))
        assert got.status == 200, await got.text()
        code = (await got.json())["code"]
        verified = await client.post("/v1/verify", json={"code": code}, headers=auth(terminal))
        assert verified.status == 200, await verified.text()
        body = await verified.json()
        assert (body["decision"], body["reason"]) == (decision, reason), user_id


async def test_seeding_again_adds_and_never_corrupts(settings: Settings, tmp_path: Path) -> None:
    """A second run with a new run id adds its citizens and leaves the first run's rows and Redis
    copies exactly as they were; reusing a run id is refused before anything is written."""
    first_out, second_out = tmp_path / "a.json", tmp_path / "b.json"
    first = await seed(settings, citizens=CITIZENS, terminals=1, colors=SHARES, out=first_out)
    first_doc = json.loads(first_out.read_text(encoding="utf-8"))
    async with open_stores(settings) as (pool, cache):
        before = sorted(map(tuple, await seeded_rows(pool, settings, user_ids(first_doc))))
        hot_before = [await cache.get_status(row[0]) for row in before]
        subjects_before = await pool.fetchval("SELECT count(*) FROM subjects")

        second = await seed(settings, citizens=CITIZENS, terminals=1, colors=SHARES, out=second_out)
        assert second.run_id != first.run_id
        second_doc = json.loads(second_out.read_text(encoding="utf-8"))
        assert not set(user_ids(first_doc)) & set(user_ids(second_doc))
        assert await pool.fetchval("SELECT count(*) FROM subjects") == subjects_before + CITIZENS
        after = sorted(map(tuple, await seeded_rows(pool, settings, user_ids(first_doc))))
        assert after == before
        assert [await cache.get_status(row[0]) for row in after] == hot_before
        await assert_consistent(
            pool, cache, settings, await seeded_rows(pool, settings, user_ids(second_doc))
        )

        with pytest.raises(SeedError, match="seeded before"):
            await seed(
                settings,
                citizens=CITIZENS,
                terminals=1,
                out=tmp_path / "c.json",
                run_id=first.run_id,
            )
        assert await pool.fetchval("SELECT count(*) FROM subjects") == subjects_before + CITIZENS
    assert not (tmp_path / "c.json").exists()


async def test_seed_refuses_bad_shares(settings: Settings, tmp_path: Path) -> None:
    """Colour shares that do not add up to one are refused before any store is touched."""
    with pytest.raises(SeedError, match="add up to 1"):
        await seed(settings, citizens=10, terminals=0, colors=(0.5, 0.1, 0.1), out=tmp_path / "x")


# --- Locust, for real ---------------------------------------------------------------------------


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp,  # noqa: S310  # local URL
        ):
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise AssertionError("passcode serve did not become ready: " + log.read_text(encoding="utf-8"))


def locust(url: str, seed_file: Path, prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PASSCODE_", "LOCUST_", "LOADTEST_"))
    }
    env["PASSCODE_ADMIN_KEY"] = ADMIN_KEY
    command = [
        sys.executable, "-m", "locust",
        "-f", "loadtest/locustfile.py",
        "--headless",
        "--host", url,
        "--seed-file", str(seed_file),
        "--csv", str(prefix), "--csv-full-history",
        "--html", f"{prefix}.html",
        "--only-summary",
        *args,
    ]  # fmt: skip
    return subprocess.run(  # noqa: S603  # fixed argv
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.slow
@pytest.mark.skipif(find_spec("locust") is None, reason="locust not installed (`make test` does)")
def test_locust_headless_run_meets_its_slo_and_writes_reports(
    settings: Settings, tmp_path: Path
) -> None:
    """`passcode seed` then Locust, headless for 10 s with all three populations against a real
    `passcode serve`: no answer contradicts what the seeded data implies (failure ratio within
    the 1% SLO, so exit 0), and the CSV, HTML, plot and summary are written. A run whose p99 SLO
    cannot be met exits 3."""
    seed_file = tmp_path / "seed.json"
    ok(run_cli(settings, "seed", "--citizens", str(CITIZENS), "--terminals", "10",
               "--yellow", "0.1", "--red", "0.05", "--out", str(seed_file)))  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(  # our own CLI, fixed argv
            [sys.executable, "-m", "passcode", "serve"],
            cwd=REPO,
            env=cli_env(settings, PASSCODE_PORT=str(port), PASSCODE_ACCESS_LOG="0"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(url, server, log)
        prefix = tmp_path / "results" / "run"
        run = locust(url, seed_file, prefix, "-u", "20", "-r", "20", "-t", "10s",
                     "--slo-fail-ratio", "0.01")  # fmt: skip
        assert run.returncode == 0, (run.stdout[-4000:], run.stderr[-4000:])
        for suffix in ("_stats.csv", "_stats_history.csv", ".html", "_plot.png", "_summary.json"):
            path = Path(f"{prefix}{suffix}")
            assert path.exists(), suffix
            assert path.stat().st_size > 0, suffix
        assert Path(f"{prefix}_plot.png").read_bytes().startswith(b"\x89PNG")
        summary = json.loads(Path(f"{prefix}_summary.json").read_text(encoding="utf-8"))
        assert summary["slo"]["met"] is True
        by_name = {r["name"]: r for r in summary["requests"]}
        green = by_name["/v1/verify [green -> admit]"]
        assert green["requests"] > 0
        assert green["failures"] == 0
        assert by_name["/v1/pass"]["requests"] + by_name["/v1/pass.png"]["requests"] > 0

        strict = tmp_path / "results" / "strict"
        missed = locust(url, seed_file, strict, "TerminalUser", "-u", "5", "-r", "5", "-t", "4s",
                        "--slo-p99-ms", "0.001")  # fmt: skip
        assert missed.returncode == 3, (missed.stdout[-4000:], missed.stderr[-4000:])
        assert "SLO missed" in missed.stderr
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
