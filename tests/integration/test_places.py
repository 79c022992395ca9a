"""Places on real PostgreSQL outside the API: the CLI, the catalog a replica loads (a stored
policy that no longer parses falls back), and value sets read from eu-dcc-valuesets files."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from passcode.config import Settings
from passcode.domain.policy import DEFAULT_POLICY, VALUE_SETS
from passcode.keys import CATALOGS, PLACES, POOL
from passcode.store import catalogs, places
from passcode.store.catalogs import Catalog
from passcode.store.places import load_value_sets
from tests.helpers import cli, ok

Client = TestClient[Any, Any]
VALUE_SETS_DIR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "eu-dcc-valuesets"


async def test_cli_sets_a_place_its_policy_and_shows_it(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """place set / policy / show: the place and a new policy version, audited as the CLI user,
    followed by the running app through the catalog."""
    place, kind = f"港口-{uuid.uuid4().hex[:6]}", f"port-{uuid.uuid4().hex[:6]}"
    out = ok(await cli(settings, "place", "set", place, "--type", kind, "--name", "Harbour"))
    assert "created" in out
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"accepts": ["passcode", "card"], "rules": []}))
    assert "version 1" in ok(await cli(settings, "place", "policy", "--type", kind, str(policy)))
    assert "version 1" in ok(await cli(settings, "place", "policy", place, str(policy)))
    shown = json.loads(ok(await cli(settings, "place", "show", place)))
    assert shown["name"] == "Harbour"
    assert shown["policy"]["source"] == "place"
    assert shown["policy"]["accepts"] == ["card", "passcode"]
    async with client.app[POOL].acquire() as conn:
        actors = await conn.fetch(
            "SELECT actor FROM audit_log WHERE action = 'place_policy.set'"
            " AND target->>'target' IN ($1, $2)",
            place,
            kind,
        )
    assert len(actors) == 2
    assert all(a["actor"].startswith("cli:") for a in actors)
    await client.app[CATALOGS].poll_once()
    assert client.app[PLACES].resolve(place).source == "place"


async def test_cli_refuses_a_bad_policy_file_naming_the_fault(
    settings: Settings, tmp_path: Path
) -> None:
    """A policy with an unknown operation exits 2 with the path of the fault on stderr."""
    bad = tmp_path / "bad.json"
    rule = {"id": "R", "description": "d", "certificate_types": ["v"], "logic": {"eval": 1}}
    bad.write_text(json.dumps({"accepts": [], "rules": [rule]}))
    result = await cli(settings, "place", "policy", "--type", "any", str(bad))
    assert result.returncode == 2
    assert "rules[0].logic: unknown CertLogic operation 'eval'" in result.stderr
    usage = await cli(settings, "place", "policy", str(bad))
    assert usage.returncode == 2


async def test_stored_policy_that_no_longer_parses_falls_back_to_the_default(
    client: Client,
) -> None:
    """A stored type policy the checks now refuse is left out of the catalog, so its places
    are judged by the next policy down (here the default), not by nothing."""
    pool = client.app[POOL]
    place, kind = f"p-{uuid.uuid4().hex[:6]}", f"t-{uuid.uuid4().hex[:6]}"
    await places.put_place(pool, place, type_=kind, name="n", actor="test", timeout=5)
    refused = {"accepts": ["eu-dcc"], "rules": [], "removed_field": True}
    await places.add_policy(
        pool, scope="type", target=kind, policy=refused, actor="test", timeout=5
    )
    assert (await catalogs.versions(pool, timeout=5))[Catalog.PLACES.value] >= 2
    await client.app[CATALOGS].changed(Catalog.PLACES)
    assert client.app[PLACES].policy_for(place) is DEFAULT_POLICY
    assert client.app[PLACES].info(place) == ("n", kind)


def test_value_sets_read_from_the_eu_folder_cover_the_built_in_ones() -> None:
    """The EU's value set files give every code the built-in sets hold (and more)."""
    if not VALUE_SETS_DIR.is_dir():
        pytest.skip(f"eu-dcc-valuesets not found at {VALUE_SETS_DIR}")
    loaded = load_value_sets(VALUE_SETS_DIR)
    for set_id, codes in VALUE_SETS.items():
        assert set(codes) <= set(loaded[set_id]), set_id
    assert "vaccines-covid-19-names" in loaded


def test_value_set_folder_with_a_foreign_file_is_refused(tmp_path: Path) -> None:
    """An empty file is skipped; a JSON file that is not a value set names itself in the
    error."""
    (tmp_path / "a.json").write_text(json.dumps({"valueSetId": "x", "valueSetValues": {"1": {}}}))
    assert load_value_sets(tmp_path) == {"x": ["1"]}
    (tmp_path / "empty.json").write_text("")  # a set left out: skipped
    assert load_value_sets(tmp_path) == {"x": ["1"]}
    (tmp_path / "b.json").write_text("[]")
    with pytest.raises(ValueError, match=r"b\.json"):
        load_value_sets(tmp_path)
