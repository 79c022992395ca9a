"""PASSCODE_VALUE_SETS_DIR: an operator's EU DCC value sets reach the place policies' rules,
over the built-in few; a folder that cannot be read stops the start with the setting named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from aiohttp import web

from passcode.app import create_app
from passcode.config import Settings, SettingsError
from passcode.domain.policy import VALUE_SETS
from passcode.keys import PLACES
from tests.helpers import ClientFactory

VALUE_SETS_DIR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "eu-dcc-valuesets"


async def test_the_operators_value_sets_are_read_by_the_policies(
    aiohttp_client: ClientFactory, settings: Settings
) -> None:
    if not VALUE_SETS_DIR.is_dir():
        pytest.skip(f"the EU DCC value sets are not at {VALUE_SETS_DIR}")
    assert Settings.from_env({"PASSCODE_VALUE_SETS_DIR": str(VALUE_SETS_DIR)}).value_sets_dir
    app = create_app(dataclasses.replace(settings, value_sets_dir=VALUE_SETS_DIR))
    client = await aiohttp_client(app)
    loaded = client.app[PLACES].value_sets
    assert "EU/1/20/1528" in loaded["vaccines-covid-19-names"]
    assert set(VALUE_SETS) <= set(loaded)


async def test_a_value_set_folder_that_cannot_be_read_stops_the_start(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "broken.json").write_text("[1, 2")
    runner = web.AppRunner(create_app(dataclasses.replace(settings, value_sets_dir=tmp_path)))
    try:
        with pytest.raises(SettingsError, match=r"PASSCODE_VALUE_SETS_DIR: broken\.json"):
            await runner.setup()
    finally:
        await runner.cleanup()
