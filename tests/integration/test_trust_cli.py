"""``passcode trust`` run as a subprocess on the test's database: imports in each format, list,
remove, each audited as the CLI's user, and a running app sees the change at its next poll."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from passcode.config import Settings
from passcode.domain.dcc import kid_of
from passcode.keys import POOL, TRUST
from tests.helpers import cli, ok
from tests.trust_material import b64, crl, dsc, issuer_jwk, issuer_url, kid64, trust_list_entry


async def _audited(client: TestClient[Any, Any], action: str) -> list[asyncpg.Record]:
    async with client.app[POOL].acquire() as conn:
        return list(await conn.fetch("SELECT * FROM audit_log WHERE action = $1", action))


async def _eventually(holds: Callable[[], bool]) -> None:
    """``holds()`` within 5 s: the running app's watcher polls the versions every second."""
    for _ in range(100):
        if holds():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the running app did not follow the change within 5 s")


async def _trusted(client: TestClient[Any, Any], kid: bytes, *, present: bool) -> None:
    await _eventually(lambda: (kid in client.app[TRUST].current.dcc) == present)


async def test_import_dcc_reads_every_format_and_the_app_follows(
    client: TestClient[Any, Any], settings: Settings, tmp_path: Path
) -> None:
    """A plain list (one base64 DER a line), a JSON array of them, an EU trust list and
    {certificates: [...]}: each imports, the running app trusts them within seconds, and the
    audit log names the CLI's user."""
    made = {name: dsc() for name in ("lines", "array", "list", "object")}
    files = {
        "lines": "\n".join(["", b64(made["lines"]), ""]),
        "array": json.dumps([b64(made["array"])]),
        "list": json.dumps([trust_list_entry(made["list"], "IT")]),
        "object": json.dumps({"certificates": [b64(made["object"])]}),
    }
    sources = {"lines": "der-list", "array": "der-list", "list": "trust-list"}
    for name, text in files.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        out = ok(await cli(settings, "trust", "import-dcc", str(path)))
        assert out.startswith(sources.get(name, "certificates") + ": 1 added"), out
    for der in made.values():
        await _trusted(client, kid_of(der), present=True)
    assert client.app[TRUST].current.dcc[kid_of(made["list"])].country == "IT"
    actors = {r["actor"] for r in await _audited(client, "trust.import_dcc")}
    assert any(a.startswith("cli:") for a in actors)

    listed = ok(await cli(settings, "trust", "list"))
    for der in made.values():
        assert kid64(der) in listed

    removed = ok(await cli(settings, "trust", "remove", "--kid", kid64(made["lines"])))
    assert removed.strip() == "removed"
    await _trusted(client, kid_of(made["lines"]), present=False)
    again = await cli(settings, "trust", "remove", "--kid", kid64(made["lines"]))
    assert again.returncode == 1


async def test_import_shc_takes_the_jwks_and_crl_files(
    client: TestClient[Any, Any], settings: Settings, tmp_path: Path
) -> None:
    """--iss, --jwks and --crl: the issuer with its revoked rids; removed with --iss."""
    iss, key = issuer_url(), issuer_jwk(crlVersion=1)
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key]}), encoding="utf-8")
    (tmp_path / "crl.json").write_text(json.dumps(crl(key["kid"], "r1")), encoding="utf-8")
    out = ok(
        await cli(
            settings,
            "trust",
            "import-shc",
            "--iss",
            iss,
            "--jwks",
            str(tmp_path / "jwks.json"),
            "--crl",
            str(tmp_path / "crl.json"),
        )
    )
    assert out.startswith(f"{iss} added: 1 keys, 1 CRLs"), out
    await _eventually(lambda: iss in client.app[TRUST].current.shc)
    assert client.app[TRUST].current.shc[iss].revoked == {key["kid"]: {"r1": None}}
    assert iss in ok(await cli(settings, "trust", "list"))
    assert ok(await cli(settings, "trust", "remove", "--iss", iss)).strip() == "removed"


async def test_a_bad_file_is_refused_with_its_reason_and_nothing_stored(
    client: TestClient[Any, Any], settings: Settings, tmp_path: Path
) -> None:
    """A certificate with an unknown critical extension and a JWKS entry of the wrong curve:
    exit 2, the reason on stderr, nothing trusted."""
    bad = dsc(unknown_critical=True)
    (tmp_path / "bad.txt").write_text(b64(bad), encoding="utf-8")
    refused = await cli(settings, "trust", "import-dcc", str(tmp_path / "bad.txt"))
    assert refused.returncode == 2
    assert "critical" in refused.stderr
    iss = issuer_url()
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [issuer_jwk(crv="P-521")]}), encoding="utf-8"
    )
    wrong = await cli(
        settings, "trust", "import-shc", "--iss", iss, "--jwks", str(tmp_path / "jwks.json")
    )
    assert wrong.returncode == 2
    assert "crv" in wrong.stderr
    await asyncio.sleep(1.5)  # past a poll: a change would have arrived by now
    assert kid_of(bad) not in client.app[TRUST].current.dcc
    assert iss not in client.app[TRUST].current.shc
